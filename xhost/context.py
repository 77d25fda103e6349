"""The context every hook receives as ``ctx``.

One :class:`Context` is made per operation (a spawn, a destroy, an image
upload...). It gives plugins what they need to do their work without global
state: the configuration, a XAPI client, the loaded plugins (to call another
role, e.g. the storage backend asking the image handler for a disk), the undo
journal of the operation, and a progress callback.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oslo_config import cfg

    from xhost.plugins import PluginHost
    from xhost.xapi.client import XapiClient

ProgressCallback = Callable[[str, float], None]


def _no_progress(step: str, fraction: float) -> None:
    return None


#: Undo functions a journal may record and a later process may run (see
#: :func:`durable`), by ``module:qualname``.
DURABLE: dict[str, Callable[..., Any]] = {}
#: How a context and a XAPI client are written in journalled arguments.
_CTX, _XAPI = {"$": "ctx"}, {"$": "xapi"}


def durable(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a module-level undo function as safe to run again by a later
    process: when it is pushed with JSON-able arguments (a :class:`Context`
    or a XAPI client as its first argument is fine), the operation's journal
    records the call, and if the process is killed before the operation
    ends, the next ``Compute.open`` (or ``xhost reconcile``) makes it. Such a
    function must be idempotent and tolerate what is already gone."""
    DURABLE[f"{fn.__module__}:{fn.__qualname__}"] = fn
    fn.__xhost_durable__ = True  # type: ignore[attr-defined]
    return fn


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def durable_call(fn: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Any] | None:
    """The journal form of an undo call, or None if it cannot be replayed."""
    if not getattr(fn, "__xhost_durable__", False):
        return None
    from xhost.xapi.client import XapiClient

    encoded = []
    for arg in args:
        if isinstance(arg, Context):
            encoded.append(_CTX)
        elif isinstance(arg, XapiClient):
            encoded.append(_XAPI)
        elif _plain(arg):
            encoded.append(arg)
        else:
            return None
    if not _plain(kwargs):
        return None
    return {"fn": f"{fn.__module__}:{fn.__qualname__}", "args": encoded, "kwargs": kwargs}


def replay(call: dict[str, Any], ctx: Context) -> Any:
    """Run a journalled undo call (see :func:`durable`) with ``ctx``."""
    name = call["fn"]
    fn = DURABLE.get(name)
    if fn is None and name.startswith("xhost."):
        import importlib

        importlib.import_module(name.split(":", 1)[0])  # registers its durable functions
        fn = DURABLE.get(name)
    if fn is None:
        raise LookupError(f"{name} is not a durable undo function")
    args = [ctx if a == _CTX else ctx.xapi if a == _XAPI else a for a in call["args"]]
    return fn(*args, **call["kwargs"])


class UndoRecorder:
    """Where an :class:`UndoLog` reports its durable actions (a journal entry)."""

    def record(self, description: str, call: dict[str, Any]) -> str:  # pragma: no cover
        raise NotImplementedError

    def forget(self, tokens: list[str]) -> None:  # pragma: no cover
        raise NotImplementedError


class UndoLog:
    """Undo actions of an operation, run newest first if the operation fails.

    Plugins register an undo right after each thing they create::

        vdi = ctx.xapi.call("VDI.create", rec)
        ctx.undo.push("destroy VDI %s" % vdi, ctx.xapi.call, "VDI.destroy", vdi)

    The operation's driver (the compute layer) gives the log a recorder, its
    journal entry: undo functions marked :func:`durable` are journalled as
    they are pushed (and forgotten when they ran or were discarded), so a
    killed process's cleanup is finished by the next run.
    """

    def __init__(self, recorder: UndoRecorder | None = None) -> None:
        self._actions: list[tuple[str, Callable[..., Any], tuple, dict, str | None]] = []
        self.listeners: list[Callable[[str, str], None]] = []
        self.recorder = recorder

    def child(self) -> UndoLog:
        """A log of its own (an attempt rolled back or kept apart from the
        operation's) journalled like this one."""
        return UndoLog(self.recorder)

    def push(self, description: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        token = None
        if self.recorder is not None:
            call = durable_call(fn, args, kwargs)
            if call is not None:
                token = self.recorder.record(description, call)
        self._actions.append((description, fn, args, kwargs, token))
        for listener in self.listeners:
            listener("push", description)

    def discard(self) -> None:
        """Forget every undo action (the operation succeeded), those of the
        logs pushed into this one (their ``rollback``) included."""
        tokens = [a[4] for a in self._actions if a[4] is not None]
        for _description, fn, _args, _kwargs, _token in self._actions:
            nested = getattr(fn, "__self__", None)
            if isinstance(nested, UndoLog) and getattr(fn, "__name__", "") == "rollback":
                nested.discard()
        self._actions.clear()
        if tokens and self.recorder is not None:
            self.recorder.forget(tokens)

    def __len__(self) -> int:
        return len(self._actions)

    def rollback(self, log: logging.Logger | None = None) -> list[tuple[str, BaseException]]:
        """Run the undo actions newest first; return the ones that failed
        (those stay journalled, for the next run to try again)."""
        failures: list[tuple[str, BaseException]] = []
        while self._actions:
            description, fn, args, kwargs, token = self._actions.pop()
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # keep undoing the rest
                failures.append((description, exc))
                if log:
                    log.warning("rollback step %r failed: %s", description, exc)
            else:
                if token is not None and self.recorder is not None:
                    self.recorder.forget([token])
            for listener in self.listeners:
                listener("pop", description)
        return failures


@dataclass
class Context:
    """Everything a hook implementation may use for one operation."""

    conf: cfg.ConfigOpts
    plugins: PluginHost
    xapi: XapiClient | None = None
    #: XAPI ref of the host the operation runs on.
    host_ref: str | None = None
    undo: UndoLog = field(default_factory=UndoLog)
    progress: ProgressCallback = _no_progress
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("xhost"))
    #: Free-form per-operation values plugins may share (namespaced keys).
    extra: dict[str, Any] = field(default_factory=dict)

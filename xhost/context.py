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


class UndoLog:
    """Undo actions of an operation, run newest first if the operation fails.

    Plugins register an undo right after each thing they create::

        vdi = ctx.xapi.call("VDI.create", rec)
        ctx.undo.push("destroy VDI %s" % vdi, ctx.xapi.call, "VDI.destroy", vdi)

    The operation's driver (the compute layer) journals the entries so a
    killed process can finish the cleanup on its next start.
    """

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[..., Any], tuple, dict]] = []
        self.listeners: list[Callable[[str, str], None]] = []

    def push(self, description: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._actions.append((description, fn, args, kwargs))
        for listener in self.listeners:
            listener("push", description)

    def discard(self) -> None:
        """Forget every undo action (the operation succeeded)."""
        self._actions.clear()

    def __len__(self) -> int:
        return len(self._actions)

    def rollback(self, log: logging.Logger | None = None) -> list[tuple[str, BaseException]]:
        """Run the undo actions newest first; return the ones that failed."""
        failures: list[tuple[str, BaseException]] = []
        while self._actions:
            description, fn, args, kwargs = self._actions.pop()
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # keep undoing the rest
                failures.append((description, exc))
                if log:
                    log.warning("rollback step %r failed: %s", description, exc)
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

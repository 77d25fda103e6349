"""The XenStore of a simulated host: a tree of nodes, permissions, watches.

It behaves like xenstored where callers can tell the difference:

* Every node has a value (bytes, possibly empty) and children; writing a
  path creates its missing ancestors with empty values.  Children are listed
  in creation order.
* Paths are absolute (``/local/domain/5/data``) or relative to the caller's
  home (``/local/domain/<domid>``); valid characters are letters, digits and
  ``-/_@``; no ``//``, no trailing ``/``; at most 3072 bytes.  A write's path
  plus value is at most 4096 bytes (``E2BIG``).
* ``rm`` removes a whole subtree; removing a missing node succeeds when its
  parent exists (``ENOENT`` otherwise); ``/`` cannot be removed (``EINVAL``).
* Permissions are xenstored's ``[owner-and-default, (domid, perm)...]`` lists
  (``n0``, ``r5``, ``b7`` ...).  Dom0 may do anything; a guest may read or
  write what the list grants it.  New nodes inherit their parent's list, with
  the guest as owner when a guest creates them.
* A watch on a path fires once when registered, then for every change of that
  node or below it, and when an ancestor is removed (with the watch's own
  path); ``@introduceDomain`` / ``@releaseDomain`` fire when domains come and
  go.  Events are delivered on a background thread, never while the store is
  locked, so callbacks may use the store.  Transactions fire their events on
  commit only and undo everything on failure.
"""
from __future__ import annotations

import errno as errno_mod
import itertools
import logging
import queue
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

LOG = logging.getLogger(__name__)

PAYLOAD_MAX = 4096
ABS_PATH_MAX = 3072
SPECIAL_WATCHES = ("@introduceDomain", "@releaseDomain")
_VALID = re.compile(r"^[A-Za-z0-9\-/_@]+$")

WatchCallback = Callable[[str, str], None]


class XenStoreError(Exception):
    """A xenstored error: ``code`` is the errno name (``ENOENT``, ``EACCES``...)."""

    def __init__(self, code: str, path: str = "") -> None:
        self.code = code
        self.path = path
        self.errno = getattr(errno_mod, code, errno_mod.EINVAL)
        super().__init__(f"{code}: {path}" if path else code)


def domain_path(domid: int) -> str:
    """The home of domain ``domid``: ``/local/domain/<domid>``."""
    return f"/local/domain/{domid}"


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _parse_perm(perm: str) -> tuple[str, int]:
    if len(perm) < 2 or perm[0] not in "nrwb" or not perm[1:].isdigit():
        raise XenStoreError("EINVAL", perm)
    return perm[0], int(perm[1:])


class _Node:
    __slots__ = ("value", "children", "perms")

    def __init__(self, value: bytes, perms: list[str]) -> None:
        self.value = value
        self.children: dict[str, _Node] = {}
        self.perms = perms

    def copy(self) -> _Node:
        node = _Node(self.value, list(self.perms))
        node.children = {k: v.copy() for k, v in self.children.items()}
        return node


_WATCH_SEQ = itertools.count()


class Watch:
    """A registered watch; :meth:`cancel` removes it."""

    def __init__(self, store: XenStore, path: str, token: str, callback: WatchCallback,
                 dedicated: bool, gate: threading.Event | None, owner: int) -> None:
        self.store = store
        self.path = path
        self.token = token
        self.callback = callback
        self.gate = gate
        self.owner = owner
        self.seq = next(_WATCH_SEQ)
        self.active = True
        #: Where the watch points, absolute (special names stay as they are).
        self.abs_path = path if path in SPECIAL_WATCHES else XenStore.canonical(path, owner)
        self._queue: queue.SimpleQueue[str | None] | None = None
        if dedicated:
            # Callbacks that may block (guest agents) get a thread of their own.
            self._queue = queue.SimpleQueue()
            threading.Thread(target=self._run, name=f"xs-watch {path}", daemon=True).start()

    def cancel(self) -> None:
        self.store.unwatch(self)

    def _deliver(self, path: str) -> None:
        if self._queue is not None:
            self._queue.put(path)
        else:
            self.store._shared_queue.put((self, path))

    def _stop(self) -> None:
        self.active = False
        if self._queue is not None:
            self._queue.put(None)

    def _run(self) -> None:
        assert self._queue is not None
        while True:
            path = self._queue.get()
            if path is None or not self.active:
                return
            if self.gate is not None:
                # A paused domain does not run its watch handlers.
                while not self.gate.wait(0.5):
                    if not self.active:
                        return
            self._call(path)

    def _call(self, path: str) -> None:
        try:
            self.callback(path, self.token)
        except Exception:
            LOG.exception("XenStore watch callback for %s failed", self.path)


@dataclass
class _Txn:
    undo: list[tuple[str, _Node | None]] = field(default_factory=list)
    events: list[tuple[str, bool]] = field(default_factory=list)


class XenStore:
    """One host's XenStore (thread-safe)."""

    def __init__(self) -> None:
        self._root = _Node(b"", ["n0"])
        self._lock = threading.RLock()
        self._watches: list[Watch] = []
        #: The watches of :attr:`_watches` that are not special, by absolute
        #: path: an event finds its watches through its ancestors instead of
        #: testing every watch of every domain.
        self._by_path: dict[str, list[Watch]] = {}
        self._txn: _Txn | None = None
        self._txn_owner: int | None = None
        self._shared_queue: queue.SimpleQueue[tuple[Watch, str] | None] = queue.SimpleQueue()
        #: Called by the shared delivery thread whenever it has caught up
        #: (work watch callbacks put off to do once for many events).
        self.idle_hooks: list[Callable[[], None]] = []
        self._dispatcher: threading.Thread | None = None
        for path in ("/local/domain", "/vm", "/tool/xenstored"):
            self.write(path, b"")

    # -- paths -----------------------------------------------------------------
    @staticmethod
    def canonical(path: str, caller: int = 0) -> str:
        """Absolute form of ``path`` for domain ``caller``; EINVAL when invalid."""
        if not isinstance(path, str) or not path:
            raise XenStoreError("EINVAL", str(path))
        if not path.startswith("/"):
            path = f"{domain_path(caller)}/{path}"
        if path != "/" and (path.endswith("/") or "//" in path or not _VALID.match(path)):
            raise XenStoreError("EINVAL", path)
        if len(path.encode()) > ABS_PATH_MAX:
            raise XenStoreError("EINVAL", path)
        return path

    @staticmethod
    def _parts(path: str) -> list[str]:
        return [p for p in path.split("/") if p]

    def _find(self, path: str) -> _Node | None:
        node = self._root
        for part in self._parts(path):
            node = node.children.get(part)
            if node is None:
                return None
        return node

    # -- permissions -------------------------------------------------------------
    @staticmethod
    def _allowed(perms: list[str], caller: int, want: str) -> bool:
        if caller == 0:
            return True
        owner_perm, owner = _parse_perm(perms[0])
        if owner == caller:
            return True
        granted = owner_perm
        for perm in perms[1:]:
            kind, domid = _parse_perm(perm)
            if domid == caller:
                granted = kind
                break
        return granted == "b" or granted == want

    def _check(self, node: _Node, caller: int, want: str, path: str) -> None:
        if not self._allowed(node.perms, caller, want):
            raise XenStoreError("EACCES", path)

    # -- reads -------------------------------------------------------------------
    def read(self, path: str, caller: int = 0) -> str:
        """The value at ``path`` as text (UTF-8)."""
        return self.read_bytes(path, caller).decode("utf-8", "surrogateescape")

    def read_bytes(self, path: str, caller: int = 0) -> bytes:
        path = self.canonical(path, caller)
        with self._lock:
            node = self._find(path)
            if node is None:
                raise XenStoreError("ENOENT", path)
            self._check(node, caller, "r", path)
            return node.value

    def exists(self, path: str, caller: int = 0) -> bool:
        try:
            self.read_bytes(path, caller)
        except XenStoreError:
            return False
        return True

    def directory(self, path: str, caller: int = 0) -> list[str]:
        """Names of the children of ``path``."""
        path = self.canonical(path, caller)
        with self._lock:
            node = self._find(path)
            if node is None:
                raise XenStoreError("ENOENT", path)
            self._check(node, caller, "r", path)
            return list(node.children)

    def get_perms(self, path: str, caller: int = 0) -> list[str]:
        path = self.canonical(path, caller)
        with self._lock:
            node = self._find(path)
            if node is None:
                raise XenStoreError("ENOENT", path)
            self._check(node, caller, "r", path)
            return list(node.perms)

    def tree(self, path: str, caller: int = 0) -> list[tuple[str, int, bytes | None, list[str]]]:
        """``(absolute path, depth, value, perms)`` of every node below ``path``
        in pre-order (what ``xenstore-ls`` prints)."""
        path = self.canonical(path, caller)
        out: list[tuple[str, int, bytes | None, list[str]]] = []
        with self._lock:
            node = self._find(path)
            if node is None:
                raise XenStoreError("ENOENT", path)
            self._check(node, caller, "r", path)

            def walk(prefix: str, parent: _Node, depth: int) -> None:
                for name, child in parent.children.items():
                    child_path = prefix.rstrip("/") + "/" + name
                    readable = self._allowed(child.perms, caller, "r")
                    out.append((child_path, depth, child.value if readable else None,
                                list(child.perms)))
                    if readable:
                        walk(child_path, child, depth + 1)
            walk(path, node, 0)
        return out

    def read_tree(self, path: str) -> tuple[dict[str, str], dict[str, list[str]]] | None:
        """Everything below ``path`` at one moment, as dom0 reads it: ``(values,
        children)`` keyed by the path relative to ``path`` (``""`` is ``path``
        itself), values as :meth:`read` gives them; None if ``path`` does not
        exist. One walk under the lock instead of a read per key."""
        path = self.canonical(path)
        values: dict[str, str] = {}
        children: dict[str, list[str]] = {}
        with self._lock:
            node = self._find(path)
            if node is None:
                return None
            stack = [("", node)]
            while stack:
                rel, at = stack.pop()
                values[rel] = at.value.decode("utf-8", "surrogateescape")
                names = list(at.children)
                children[rel] = names
                prefix = f"{rel}/" if rel else ""
                stack.extend((prefix + name, at.children[name]) for name in names)
        return values, children

    def dump(self, path: str = "/") -> dict[str, str]:
        """Every node below ``path`` (inclusive) as ``{absolute path: value}``."""
        path = self.canonical(path)
        with self._lock:
            node = self._find(path)
            if node is None:
                return {}
            result = {path: node.value.decode("utf-8", "replace")}
            for child_path, _depth, value, _perms in self.tree(path):
                result[child_path] = (value or b"").decode("utf-8", "replace")
            return result

    # -- writes ------------------------------------------------------------------
    def write(self, path: str, value: str | bytes, caller: int = 0) -> None:
        """Set ``path`` to ``value``, creating missing ancestors."""
        data = _as_bytes(value)
        path = self.canonical(path, caller)
        if len(path.encode()) + 1 + len(data) > PAYLOAD_MAX:
            raise XenStoreError("E2BIG", path)
        with self._lock:
            node = self._create(path, caller)
            self._check(node, caller, "w", path)
            self._record_undo(path, node)
            node.value = data
            self._changed(path, False)

    def mkdir(self, path: str, caller: int = 0, perms: list[str] | None = None) -> None:
        """Create ``path`` (empty) unless it exists; optionally set its perms."""
        path = self.canonical(path, caller)
        with self._lock:
            existed = self._find(path) is not None
            node = self._create(path, caller)
            if perms is not None:
                self._set_perms(node, path, perms, caller)
            if not existed or perms is not None:
                self._changed(path, False)

    def set_perms(self, path: str, perms: list[str], caller: int = 0) -> None:
        path = self.canonical(path, caller)
        with self._lock:
            node = self._find(path)
            if node is None:
                raise XenStoreError("ENOENT", path)
            self._set_perms(node, path, perms, caller)
            self._changed(path, False)

    def _set_perms(self, node: _Node, path: str, perms: list[str], caller: int) -> None:
        if not perms:
            raise XenStoreError("EINVAL", path)
        for perm in perms:
            _parse_perm(perm)
        if caller != 0 and _parse_perm(node.perms[0])[1] != caller:
            raise XenStoreError("EACCES", path)
        self._record_undo(path, node)
        node.perms = list(perms)

    def rm(self, path: str, caller: int = 0) -> None:
        """Remove ``path`` and everything below it."""
        path = self.canonical(path, caller)
        if path == "/":
            raise XenStoreError("EINVAL", path)
        with self._lock:
            node = self._find(path)
            parent_path = path.rsplit("/", 1)[0] or "/"
            parent = self._find(parent_path)
            if node is None:
                if parent is None:
                    raise XenStoreError("ENOENT", path)
                return
            assert parent is not None
            self._check(node, caller, "w", path)
            self._record_undo(path, node)
            del parent.children[path.rsplit("/", 1)[1]]
            self._changed(path, True)

    def _create(self, path: str, caller: int) -> _Node:
        node = self._root
        built = ""
        for part in self._parts(path):
            built += "/" + part
            child = node.children.get(part)
            if child is None:
                self._check(node, caller, "w", built)
                perms = list(node.perms)
                if caller != 0:
                    perms[0] = perms[0][0] + str(caller)
                child = _Node(b"", perms)
                self._record_undo(built, None)
                node.children[part] = child
            node = child
        return node

    # -- transactions --------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[XenStore]:
        """Group changes: watches fire on commit; an exception undoes them all."""
        with self._lock:
            if self._txn is not None:
                yield self
                return
            self._txn = _Txn()
            try:
                yield self
            except BaseException:
                txn, self._txn = self._txn, None
                for path, saved in reversed(txn.undo):
                    self._restore(path, saved)
                raise
            txn, self._txn = self._txn, None
            for path, recurse in txn.events:
                self._fire(path, recurse)

    def _record_undo(self, path: str, node: _Node | None) -> None:
        if self._txn is not None:
            self._txn.undo.append((path, node.copy() if node is not None else None))

    def _restore(self, path: str, saved: _Node | None) -> None:
        parts = self._parts(path)
        parent = self._find("/" + "/".join(parts[:-1])) if parts else None
        if parent is None:
            return
        if saved is None:
            parent.children.pop(parts[-1], None)
        else:
            parent.children[parts[-1]] = saved

    # -- watches -------------------------------------------------------------------
    def watch(self, path: str, callback: WatchCallback, token: str = "", *,
              caller: int = 0, dedicated: bool = False,
              gate: threading.Event | None = None) -> Watch:
        """Call ``callback(path, token)`` for changes at or below ``path``.

        Fires once at registration.  ``dedicated`` gives the watch its own
        delivery thread (for callbacks that block); ``gate`` holds deliveries
        while it is clear (a paused domain).  Relative paths are relative to
        the home of ``caller`` and events for them are reported relative too.
        """
        w = Watch(self, path, token, callback, dedicated, gate, caller)
        with self._lock:
            self._watches.append(w)
            if w.path not in SPECIAL_WATCHES:
                self._by_path.setdefault(w.abs_path, []).append(w)
            if not dedicated and self._dispatcher is None:
                self._dispatcher = threading.Thread(target=self._dispatch_shared,
                                                    name="xs-watches", daemon=True)
                self._dispatcher.start()
        w._deliver(path)
        return w

    def unwatch(self, watch: Watch) -> None:
        with self._lock:
            if watch in self._watches:
                self._watches.remove(watch)
                self._unindex(watch)
        watch._stop()

    def _unindex(self, watch: Watch) -> None:
        same = self._by_path.get(watch.abs_path)
        if same is not None and watch in same:
            same.remove(watch)
            if not same:
                del self._by_path[watch.abs_path]

    def unwatch_owner(self, caller: int) -> None:
        """Drop every watch of domain ``caller`` (the domain is gone)."""
        with self._lock:
            mine = [w for w in self._watches if w.owner == caller]
            self._watches = [w for w in self._watches if w.owner != caller]
            for w in mine:
                self._unindex(w)
        for w in mine:
            w._stop()

    def fire_special(self, name: str) -> None:
        """Fire ``@introduceDomain`` or ``@releaseDomain``."""
        with self._lock:
            targets = [w for w in self._watches if w.path == name]
        for w in targets:
            w._deliver(name)

    def _changed(self, path: str, recurse: bool) -> None:
        if self._txn is not None:
            self._txn.events.append((path, recurse))
        else:
            self._fire(path, recurse)

    def _fire(self, path: str, recurse: bool) -> None:
        with self._lock:
            by_path = self._by_path
            if not by_path:
                return
            # Watches at the path or above it see the path itself...
            hits: list[tuple[Watch, str]] = []
            at = path
            while True:
                for w in by_path.get(at, ()):
                    hits.append((w, path))
                if at == "/":
                    break
                at = at.rsplit("/", 1)[0] or "/"
            # ...and a removal also reaches the watches below it, with their own path.
            if recurse:
                below = path.rstrip("/") + "/"
                for wpath, watches in by_path.items():
                    if wpath.startswith(below):
                        hits.extend((w, wpath) for w in watches)
            if len(hits) > 1:
                hits.sort(key=lambda hit: hit[0].seq)  # in the order they were set
        for w, event in hits:
            if not w.path.startswith("/"):
                relative_prefix = domain_path(w.owner) + "/"
                if event.startswith(relative_prefix):
                    event = event[len(relative_prefix):]
            w._deliver(event)

    def _dispatch_shared(self) -> None:
        while True:
            item = self._shared_queue.get()
            if item is None:
                return
            watch, path = item
            if watch.active:
                watch._call(path)
            if self._shared_queue.empty():
                self._run_idle_hooks()

    def _run_idle_hooks(self) -> None:
        for hook in list(self.idle_hooks):
            try:
                hook()
            except Exception:  # a hook's failure must not stop the deliveries
                LOG.exception("xenstore idle hook failed")

    def close(self) -> None:
        """Stop every watch and the delivery thread (the tree stays; new
        watches start a new thread)."""
        with self._lock:
            watches, self._watches = self._watches, []
            self._by_path = {}
            dispatcher, self._dispatcher = self._dispatcher, None
        for w in watches:
            w._stop()
        if dispatcher is not None:
            self._shared_queue.put(None)
            dispatcher.join(timeout=5)

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until the shared delivery thread has handled what is queued."""
        if self._dispatcher is None:
            return
        done = threading.Event()
        def caught_up(_path: str, _token: str) -> None:
            self._run_idle_hooks()
            done.set()

        marker = Watch(self, "/", "", caught_up, False, None, 0)
        self._shared_queue.put((marker, "/"))
        done.wait(timeout)


class DomainXenStore:
    """A domain's view of the store: paths relative to its home, its permissions.

    This is what a guest (or a simulated guest agent) uses::

        xs = guest.xenstore
        xs.write("data/guest/42", '{"returncode": "0", "message": "ok"}')
        xs.watch("data/host", on_request)
    """

    def __init__(self, store: XenStore, domid: int, gate: threading.Event | None = None) -> None:
        self.store = store
        self.domid = int(domid)
        self.home = domain_path(self.domid)
        self.gate = gate
        self._watches: list[Watch] = []

    def read(self, path: str) -> str:
        return self.store.read(path, self.domid)

    def read_bytes(self, path: str) -> bytes:
        return self.store.read_bytes(path, self.domid)

    def get(self, path: str, default: str | None = None) -> str | None:
        """The value at ``path``, or ``default`` when it does not exist."""
        try:
            return self.read(path)
        except XenStoreError:
            return default

    def write(self, path: str, value: str | bytes) -> None:
        self.store.write(path, value, self.domid)

    def rm(self, path: str) -> None:
        self.store.rm(path, self.domid)

    def exists(self, path: str) -> bool:
        return self.store.exists(path, self.domid)

    def list(self, path: str) -> list[str]:
        return self.store.directory(path, self.domid)

    def watch(self, path: str, callback: WatchCallback, token: str = "") -> Watch:
        """Watch ``path`` (relative to the home, or absolute); callbacks run on
        a thread of their own and wait while the domain is paused."""
        w = self.store.watch(path, callback, token, caller=self.domid, dedicated=True,
                             gate=self.gate)
        self._watches.append(w)
        return w

    def close(self) -> None:
        """Cancel this handle's watches (the domain is gone)."""
        for w in self._watches:
            w.cancel()
        self._watches.clear()

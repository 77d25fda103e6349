"""Plumbing shared by the real-component harnesses.

Process ownership, readiness waits, scratch directories and last-resort
cleanup live here so that each harness module only describes its component.
"""
from __future__ import annotations

import atexit
import functools
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from xhost.testing.errors import ComponentUnavailable, HarnessError

#: Environment variable naming the directory that holds harness scratch
#: directories (default: the system temporary directory).  Keep it short:
#: OVS unix sockets live there and ``sun_path`` holds 107 bytes.
TMPDIR_ENV = "XHOST_TESTING_TMPDIR"

LOG = logging.getLogger(__name__)


def require_root(what: str) -> None:
    """Raise :class:`ComponentUnavailable` unless running with euid 0."""
    if os.geteuid() != 0:
        raise ComponentUnavailable(
            f"{what} needs root (network namespaces and links need "
            f"CAP_NET_ADMIN and CAP_SYS_ADMIN); run the tests as root, e.g. "
            f"in a root container or with sudo"
        )


def require_binaries(what: str, binaries: dict[str, str]) -> None:
    """Raise :class:`ComponentUnavailable` naming every missing binary.

    *binaries* maps a program name to the Debian package that provides it.
    """
    missing = {name: pkg for name, pkg in binaries.items() if shutil.which(name) is None}
    if missing:
        packages = " ".join(sorted(set(missing.values())))
        raise ComponentUnavailable(
            f"{what} needs {', '.join(sorted(missing))} which "
            f"{'is' if len(missing) == 1 else 'are'} not on PATH; "
            f"install it with: apt-get install -y {packages}"
        )


def pid_alive(pid: int) -> bool:
    """Whether *pid* names a live process (zombies count as dead).

    In containers whose init does not reap orphans, an exited daemon stays a
    zombie forever; ``kill(pid, 0)`` would still succeed on it.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the parenthesised command name, which may contain spaces.
    state = stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3]
    return state not in (b"Z", b"X")


def log_tail(path: Path | None, lines: int = 25) -> str:
    """The last *lines* of a log file, for error messages."""
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return f"last lines of {path}:\n  " + "\n  ".join(tail)


def wait_until(
    predicate: Callable[[], object],
    *,
    timeout: float,
    what: str,
    process: subprocess.Popen | None = None,
    log: Path | None = None,
) -> object:
    """Poll *predicate* until it returns something truthy; return that.

    Polls start at 2 ms and back off to 50 ms, so a fast component is seen
    as soon as it is ready.  When *process* exits first, or *timeout*
    passes, :class:`HarnessError` is raised with the tail of *log*.
    """
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        result = predicate()
        if result:
            return result
        if process is not None and process.poll() is not None:
            raise HarnessError(
                f"{what}: the process exited with status {process.returncode} "
                f"before it was ready\n{log_tail(log)}"
            )
        if time.monotonic() >= deadline:
            raise HarnessError(f"{what}: not ready after {timeout:g} s\n{log_tail(log)}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


@functools.cache
def pdeathsig_prefix() -> tuple[str, ...]:
    """Command prefix that makes a child die with this process.

    ``setpriv --pdeathsig TERM`` (util-linux) asks the kernel to send
    SIGTERM to the daemon when the test process dies, even by SIGKILL, so a
    killed test run leaves no daemons behind.  The setting survives the
    ``exec`` of ``ip netns exec`` and of the daemon itself.  Note: the kernel
    ties it to the *thread* that started the child, so start harnesses from
    a thread that outlives them (pytest's main thread does).
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ()
    probe = subprocess.run(
        [setpriv, "--pdeathsig", "TERM", "--", "true"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
    )
    return (setpriv, "--pdeathsig", "TERM", "--") if probe.returncode == 0 else ()


def scratch_root() -> Path:
    """Directory under which harnesses create their scratch directories."""
    return Path(os.environ.get(TMPDIR_ENV) or tempfile.gettempdir())


def make_scratch_dir(kind: str) -> Path:
    """Create ``<root>/xhost-<kind>-<owner pid>-<random>``.

    The owner pid in the name lets :func:`reap_stale_scratch_dirs` tell the
    leftovers of a killed test run from directories still in use.
    """
    root = scratch_root()
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"xhost-{kind}-{os.getpid()}-", dir=root))


def _kill_owned_pids(directory: Path) -> None:
    """SIGKILL processes recorded in ``*.pid`` files that still use *directory*.

    A pid is only killed when its command line mentions the directory, so a
    recycled pid never hits an unrelated process.
    """
    for pidfile in directory.glob("*.pid"):
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if str(directory).encode() in cmdline and pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def reap_stale_scratch_dirs(kind: str) -> list[Path]:
    """Remove scratch directories of *kind* whose owner process is gone.

    Returns the directories removed.  Normal runs clean up after themselves;
    this catches runs that were killed before their cleanup could run.
    """
    pattern = re.compile(rf"^xhost-{re.escape(kind)}-(\d+)-")
    removed = []
    root = scratch_root()
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        match = pattern.match(entry.name)
        if not match or not entry.is_dir() or pid_alive(int(match.group(1))):
            continue
        _kill_owned_pids(entry)
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def bound_loopback_socket() -> socket.socket:
    """A TCP socket bound to a kernel-chosen free port on 127.0.0.1.

    Handing the bound socket to the server (instead of a port number probed
    and released) leaves no window in which another process can take it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def run(argv: Sequence[str], *, timeout: float = 30, what: str | None = None,
        input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run a short command, raising :class:`HarnessError` with its stderr on failure."""
    try:
        proc = subprocess.run(list(argv), input=input, capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{what or argv[0]}: timed out after {timeout:g} s: "
                           f"{' '.join(argv)}") from exc
    if proc.returncode != 0:
        raise HarnessError(
            f"{what or argv[0]} failed (status {proc.returncode}): {' '.join(argv)}\n"
            f"{proc.stderr.decode(errors='replace').strip()}"
        )
    return proc


class _CleanupRegistry:
    """Cleanups that must run at interpreter exit if nobody ran them before."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[int, Callable[[], None]] = {}
        atexit.register(self.run_all)

    def add(self, owner: object, cleanup: Callable[[], None]) -> None:
        with self._lock:
            self._items[id(owner)] = cleanup

    def discard(self, owner: object) -> None:
        with self._lock:
            self._items.pop(id(owner), None)

    def run_all(self) -> None:
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
        # Newest first: an OVS instance goes before the namespace it runs in.
        for cleanup in reversed(items):
            try:
                cleanup()
            except Exception:  # exit path: keep cleaning the rest
                LOG.warning("harness cleanup at exit failed", exc_info=True)


exit_cleanups = _CleanupRegistry()

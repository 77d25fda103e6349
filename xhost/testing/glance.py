"""A real OpenStack Glance image service for tests.

Glance is installed once into a virtualenv of its own (it pins dozens of
OpenStack libraries that must not leak into xhost's environment), then each
:class:`GlanceServer` gets a private directory with an sqlite database, a
file store, no keystone, and ``glance.wsgi.api:application`` served by
gunicorn on a free loopback port::

    with GlanceServer() as glance:
        status, headers, body = glance.request("GET", "/v2/images")

The virtualenv lives in ``$XHOST_GLANCE_VENV`` (default
``~/.cache/xhost/glance-venv``).  Installing takes about a minute the first
time and is reused afterwards; CI can do it ahead of the tests with::

    python -m xhost.testing.glance --install    # prints the venv path

Environment:

``XHOST_GLANCE_VENV``
    where the Glance virtualenv lives.
``XHOST_GLANCE_REQUIREMENTS``
    pip requirement specifiers, space separated (default ``glance gunicorn``);
    changing them reinstalls.
``XHOST_GLANCE_PYTHON``
    interpreter for the virtualenv (default: the running one).
``XHOST_GLANCE_NO_INSTALL=1``
    never install; a missing virtualenv makes Glance unavailable.

Why the configuration looks as it does: ``glance-api`` can no longer run
standalone, so gunicorn serves the WSGI application; an empty paste flavor
selects the ``unauthenticated-context`` pipeline (no keystone); that context
has no roles, so the policy makes everyone admin (``context_is_admin: @``)
with ``enforce_new_defaults = false`` and ``enforce_scope = false``,
otherwise every write is a 403.  The database schema is migrated once at
install time into a template that each server copies, which saves the
3-4 s of ``glance-manage db_sync`` on every start.  Glance's format
inspector refuses uploads whose bytes do not match ``disk_format`` (415), so
tests must upload real images (for VHD: ``qemu-img create -f vpc``).
"""
from __future__ import annotations

import argparse
import configparser
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from xhost.testing._common import (
    bound_loopback_socket,
    exit_cleanups,
    log_tail,
    make_scratch_dir,
    pdeathsig_prefix,
    pid_alive,
    reap_stale_scratch_dirs,
    wait_until,
)
from xhost.testing.errors import ComponentUnavailable, HarnessError

__all__ = [
    "DEFAULT_REQUIREMENTS",
    "GlanceInstall",
    "GlanceServer",
    "HttpResponse",
    "default_venv",
    "ensure_installed",
    "find_install",
]

VENV_ENV = "XHOST_GLANCE_VENV"
REQUIREMENTS_ENV = "XHOST_GLANCE_REQUIREMENTS"
PYTHON_ENV = "XHOST_GLANCE_PYTHON"
NO_INSTALL_ENV = "XHOST_GLANCE_NO_INSTALL"

DEFAULT_REQUIREMENTS = ("glance", "gunicorn")
_MARKER = "xhost-glance.json"
_TEMPLATE_DB = "xhost-glance-template.sqlite"
_SCRATCH_KIND = "glance"

#: Policy overrides: the unauthenticated context has no roles, so make it admin.
DEFAULT_POLICY = {"context_is_admin": "@"}


def default_venv() -> Path:
    """Where the Glance virtualenv lives (``$XHOST_GLANCE_VENV`` or the cache)."""
    if os.environ.get(VENV_ENV):
        return Path(os.environ[VENV_ENV]).expanduser().absolute()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "xhost" / "glance-venv"


def _requirements() -> tuple[str, ...]:
    value = os.environ.get(REQUIREMENTS_ENV, "").split()
    return tuple(value) if value else DEFAULT_REQUIREMENTS


@dataclass(frozen=True)
class GlanceInstall:
    """A usable Glance virtualenv."""

    venv: Path
    glance_version: str
    gunicorn_version: str
    requirements: tuple[str, ...]
    #: Seconds spent installing by this call (0 when it was reused).
    install_seconds: float = 0.0

    @property
    def gunicorn(self) -> Path:
        return self.venv / "bin" / "gunicorn"

    @property
    def glance_manage(self) -> Path:
        return self.venv / "bin" / "glance-manage"

    @property
    def template_db(self) -> Path:
        """An sqlite database already migrated by ``glance-manage db_sync``."""
        return self.venv / _TEMPLATE_DB

    @property
    def paste_ini(self) -> Path:
        return self.venv / "etc" / "glance" / "glance-api-paste.ini"


def find_install(venv: Path | None = None,
                 requirements: tuple[str, ...] | None = None) -> GlanceInstall | None:
    """The completed install in *venv* for *requirements*, or None."""
    venv = venv or default_venv()
    requirements = requirements or _requirements()
    try:
        marker = json.loads((venv / _MARKER).read_text())
    except (OSError, ValueError):
        return None
    install = GlanceInstall(
        venv=venv,
        glance_version=marker.get("glance_version", ""),
        gunicorn_version=marker.get("gunicorn_version", ""),
        requirements=tuple(marker.get("requirements", ())),
    )
    complete = all(p.exists() for p in (install.gunicorn, install.glance_manage,
                                        install.template_db, install.paste_ini))
    if not complete or install.requirements != tuple(requirements):
        return None
    return install


@contextlib.contextmanager
def _install_lock(venv: Path) -> Iterator[None]:
    # Several pytest processes (xdist, parallel tox envs) may want the venv at
    # once: the first installs, the others wait and then reuse it.
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_installed(venv: Path | None = None, *,
                     requirements: tuple[str, ...] | None = None,
                     python: str | None = None,
                     allow_install: bool | None = None,
                     echo: bool = False) -> GlanceInstall:
    """Return the Glance install in *venv*, creating it when missing.

    Idempotent and safe to call from concurrent processes.  A partial
    install (interrupted earlier) is wiped and redone.

    :param allow_install: default: true unless ``XHOST_GLANCE_NO_INSTALL=1``.
    :param echo: stream pip's output to stderr instead of a log file.
    :raises ComponentUnavailable: missing and installing is not allowed.
    :raises HarnessError: pip or the schema migration failed.
    """
    venv = venv or default_venv()
    requirements = requirements or _requirements()
    if allow_install is None:
        allow_install = os.environ.get(NO_INSTALL_ENV, "") not in ("1", "true", "yes")
    found = find_install(venv, requirements)
    if found:
        return found
    if not allow_install:
        raise ComponentUnavailable(
            f"Glance is not installed in {venv} and {NO_INSTALL_ENV} forbids installing "
            f"it; run: python -m xhost.testing.glance --install"
        )
    with _install_lock(venv):
        found = find_install(venv, requirements)
        if found:
            return found
        started = time.monotonic()
        _install(venv, requirements, python or os.environ.get(PYTHON_ENV) or sys.executable,
                 echo=echo)
        install = find_install(venv, requirements)
        if install is None:  # pragma: no cover - _install raises first
            raise HarnessError(f"Glance install in {venv} is incomplete after installing")
        return GlanceInstall(**{**install.__dict__,
                                "install_seconds": time.monotonic() - started})


def _install(venv: Path, requirements: tuple[str, ...], python: str, *, echo: bool) -> None:
    # ``venv --clear`` empties the directory: never do that to something
    # that is not a virtualenv (a mistyped XHOST_GLANCE_VENV).
    if venv.exists() and any(venv.iterdir()) and not (venv / "pyvenv.cfg").exists():
        raise HarnessError(f"{venv} exists and is not a virtualenv; point {VENV_ENV} "
                           f"at an empty or new directory")
    log_path = venv.parent / f"{venv.name}-install.log"
    (venv / _MARKER).unlink(missing_ok=True)

    def step(argv: list[str], what: str) -> None:
        with open(log_path, "a") as log:
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            proc = subprocess.run(argv, stdout=None if echo else log, env=_clean_environ(),
                                  stderr=None if echo else subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            raise HarnessError(f"installing Glance into {venv}: {what} failed "
                               f"(status {proc.returncode})\n{log_tail(log_path)}")

    log_path.write_text("")
    step([python, "-m", "venv", "--clear", str(venv)], "creating the virtualenv")
    step([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
          *requirements], "pip install " + " ".join(requirements))
    versions = _venv_versions(venv)
    _build_template_db(venv, log_path)
    marker = {"requirements": list(requirements), **versions}
    tmp = venv / f"{_MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=2) + "\n")
    tmp.replace(venv / _MARKER)


def _venv_versions(venv: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json;"
            "print(json.dumps({'glance_version': m.version('glance'),"
            " 'gunicorn_version': m.version('gunicorn')}))")
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", code], env=_clean_environ(),
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"Glance venv {venv} lacks glance or gunicorn after pip install:\n"
                           f"{proc.stderr.strip()}")
    return json.loads(proc.stdout)


def _build_template_db(venv: Path, log_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="xhost-glance-dbsync-") as tmp:
        db = Path(tmp) / "glance.sqlite"
        conf = Path(tmp) / "glance-api.conf"
        conf.write_text(f"[database]\nconnection = sqlite:///{db}\n")
        with open(log_path, "a") as log:
            proc = subprocess.run(
                [str(venv / "bin" / "glance-manage"), "--config-file", str(conf), "db_sync"],
                stdout=log, stderr=subprocess.STDOUT, cwd=tmp, env=_clean_environ(), check=False)
        if proc.returncode != 0 or not db.exists():
            raise HarnessError(f"glance-manage db_sync failed (status {proc.returncode})\n"
                               f"{log_tail(log_path)}")
        shutil.copyfile(db, venv / _TEMPLATE_DB)


@dataclass(frozen=True)
class HttpResponse:
    """What :meth:`GlanceServer.request` returns."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class StartupTimes:
    """Seconds spent in each start-up phase of a :class:`GlanceServer`."""

    install: float = 0.0
    configure: float = 0.0
    ready: float = 0.0

    @property
    def total(self) -> float:
        return self.install + self.configure + self.ready


class GlanceServer:
    """A running Glance API with a private sqlite database and file store.

    :param venv: Glance virtualenv (default :func:`default_venv`); installed
        on :meth:`start` when missing.
    :param threads: gunicorn threads of its single worker (concurrent requests).
    :param config: extra ``glance-api.conf`` settings, ``{section: {key: value}}``,
        applied over the defaults.
    :param policy: extra policy rules applied over :data:`DEFAULT_POLICY`.
    """

    def __init__(self, *, venv: Path | None = None, threads: int = 4,
                 config: Mapping[str, Mapping[str, str]] | None = None,
                 policy: Mapping[str, str] | None = None) -> None:
        self.venv = venv or default_venv()
        self.threads = threads
        self.extra_config = {s: dict(v) for s, v in (config or {}).items()}
        self.policy = {**DEFAULT_POLICY, **(policy or {})}
        self.base_dir: Path | None = None
        self.port: int | None = None
        self.install: GlanceInstall | None = None
        self.times = StartupTimes()
        self._proc: subprocess.Popen | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- paths --------------------------------------------------------------

    def _require_started(self) -> Path:
        if self.base_dir is None:
            raise HarnessError("GlanceServer is not started; call start() first")
        return self.base_dir

    @property
    def endpoint(self) -> str:
        """Base URL of the API, e.g. ``http://127.0.0.1:40123``."""
        self._require_started()
        return f"http://127.0.0.1:{self.port}"

    @property
    def image_dir(self) -> Path:
        """The file store: uploaded image data lands here, one file per image."""
        return self._require_started() / "images"

    @property
    def log_path(self) -> Path:
        """Glance's own log (requests, errors)."""
        return self._require_started() / "glance-api.log"

    @property
    def server_log_path(self) -> Path:
        """gunicorn's log (start-up errors, worker crashes)."""
        return self._require_started() / "gunicorn.log"

    @property
    def pid(self) -> int | None:
        """pid of the gunicorn master, while it runs."""
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def worker_pids(self) -> list[int]:
        """pids of the gunicorn workers (children of the master)."""
        return [] if self.pid is None else self._children_of(self.pid)

    # -- life cycle ---------------------------------------------------------

    def start(self, timeout: float = 120) -> Self:
        """Install if needed, configure, start gunicorn and wait for ``/versions``.

        :raises ComponentUnavailable: Glance is missing and may not be installed.
        :raises HarnessError: installation or start-up failed (with log tails).
        """
        if self._proc is not None:
            raise HarnessError("GlanceServer is already started")
        t0 = time.monotonic()
        self.install = ensure_installed(self.venv)
        self.times.install = time.monotonic() - t0
        reap_stale_scratch_dirs(_SCRATCH_KIND)
        t1 = time.monotonic()
        self.base_dir = make_scratch_dir(_SCRATCH_KIND)
        exit_cleanups.add(self, self.stop)
        try:
            self._configure()
            self.times.configure = time.monotonic() - t1
            t2 = time.monotonic()
            self._spawn()
            wait_until(self._answers_versions, timeout=timeout, what="Glance API",
                       process=self._proc, log=self.server_log_path)
            self.times.ready = time.monotonic() - t2
        except BaseException as exc:
            detail = log_tail(self.log_path) if self.base_dir else ""
            self.stop()
            if isinstance(exc, HarnessError) and detail:
                raise HarnessError(f"{exc}\n{detail}") from exc
            raise
        return self

    def stop(self, timeout: float = 15) -> None:
        """Stop gunicorn and its workers and remove the private directory.

        Safe to call more than once.
        """
        exit_cleanups.discard(self)
        proc, self._proc = self._proc, None
        if proc is not None:
            workers = self._children_of(proc.pid)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            # The master normally takes its workers down; make sure of it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
            while any(pid_alive(w) for w in workers) and time.monotonic() < deadline:
                time.sleep(0.01)
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
        self.port = None

    @staticmethod
    def _children_of(pid: int) -> list[int]:
        try:
            return [int(p) for p in
                    Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _configure(self) -> None:
        base = self._require_started()
        assert self.install is not None
        for sub in ("images", "staging", "tasks", "locks"):
            (base / sub).mkdir()
        shutil.copyfile(self.install.template_db, base / "glance.sqlite")
        shutil.copyfile(self.install.paste_ini, base / "glance-api-paste.ini")
        (base / "policy.yaml").write_text(json.dumps(self.policy, indent=2) + "\n")
        settings: dict[str, dict[str, str]] = {
            "DEFAULT": {
                "bind_host": "127.0.0.1",
                "workers": "1",
                "enabled_backends": "fs:file",
                "log_file": str(base / "glance-api.log"),
                "node_staging_uri": f"file://{base / 'staging'}",
                "use_stderr": "false",
            },
            "database": {"connection": f"sqlite:///{base / 'glance.sqlite'}"},
            "paste_deploy": {"flavor": "", "config_file": str(base / "glance-api-paste.ini")},
            "glance_store": {"default_backend": "fs"},
            "fs": {"filesystem_store_datadir": f"{base / 'images'}/"},
            "os_glance_staging_store": {"filesystem_store_datadir": f"{base / 'staging'}/"},
            "os_glance_tasks_store": {"filesystem_store_datadir": f"{base / 'tasks'}/"},
            "oslo_concurrency": {"lock_path": str(base / "locks")},
            "oslo_policy": {
                "policy_file": str(base / "policy.yaml"),
                "enforce_scope": "false",
                "enforce_new_defaults": "false",
            },
        }
        for section, values in self.extra_config.items():
            settings.setdefault(section, {}).update(values)
        parser = configparser.RawConfigParser()
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        for section, values in settings.items():
            if section != "DEFAULT":
                parser.add_section(section)
            for key, value in values.items():
                parser.set(section, key, value)
        with open(base / "glance-api.conf", "w") as f:
            parser.write(f)

    def _spawn(self) -> None:
        base = self._require_started()
        assert self.install is not None
        sock = bound_loopback_socket()
        try:
            self.port = sock.getsockname()[1]
            argv = [
                *pdeathsig_prefix(), str(self.install.gunicorn),
                "--bind", f"fd://{sock.fileno()}",
                "--workers", "1", "--threads", str(self.threads),
                "--timeout", "300", "--graceful-timeout", "5",
                "--pid", str(base / "gunicorn.pid"),
                "--error-logfile", str(base / "gunicorn.log"),
            ]
            if _version_tuple(self.install.gunicorn_version) >= (27,):
                # Otherwise gunicorn 27 creates ~/.gunicorn/gunicorn.ctl.
                argv.append("--no-control-socket")
            argv.append("glance.wsgi.api:application")
            env = {**_clean_environ(), "OS_GLANCE_CONFIG_DIR": str(base)}
            with open(base / "gunicorn.log", "ab") as out:
                # Own process group: stop() can take down stray workers with it.
                self._proc = subprocess.Popen(
                    argv, cwd=base, env=env, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, pass_fds=(sock.fileno(),), process_group=0)
        finally:
            sock.close()

    def _answers_versions(self) -> bool:
        try:
            return self.request("GET", "/versions", timeout=2).status == 200
        except OSError:
            return False

    # -- HTTP ---------------------------------------------------------------

    def request(self, method: str, path: str, *, data: bytes | None = None,
                json_body: Any = None, headers: Mapping[str, str] | None = None,
                timeout: float = 60) -> HttpResponse:
        """Send one request to the API and return the response, errors included.

        No proxy is used whatever the environment says.  *json_body* is
        sent as ``application/json`` (use ``headers`` for PATCH's
        ``application/openstack-images-v2.1-json-patch``).
        """
        hdrs = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.endpoint + path, data=data, headers=hdrs,
                                     method=method)
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return HttpResponse(resp.status, dict(resp.headers.items()), resp.read())
        except urllib.error.HTTPError as err:
            return HttpResponse(err.code, dict(err.headers.items()), err.read())


def _clean_environ() -> dict[str, str]:
    """The environment for Glance's own processes.

    The caller's virtualenv and bytecode settings must not leak into
    Glance's: tox sets PYTHONDONTWRITEBYTECODE, which would make every
    worker start recompile what pip did not.
    """
    env = dict(os.environ)
    for name in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """``python -m xhost.testing.glance``: install Glance or serve it by hand."""
    parser = argparse.ArgumentParser(
        prog="python -m xhost.testing.glance",
        description="Manage the Glance virtualenv used by xhost's tests.")
    parser.add_argument("--venv", type=Path, default=None,
                        help=f"virtualenv path (default ${VENV_ENV} or {default_venv()})")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--install", action="store_true",
                        help="install Glance if missing, then print the venv path")
    action.add_argument("--serve", action="store_true",
                        help="run a throw-away Glance until interrupted, printing its URL")
    args = parser.parse_args(argv)
    try:
        if args.install:
            install = ensure_installed(args.venv, allow_install=True, echo=True)
            print(install.venv)
            return 0
        # SIGTERM unwinds like Ctrl-C, so the server is stopped and removed.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        with GlanceServer(venv=args.venv) as server:
            print(server.endpoint, flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        return 0
    except (ComponentUnavailable, HarnessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""pytest fixtures giving tests a running XAPI simulator.

Use them from a ``conftest.py``::

    pytest_plugins = ["xhost.testing.simfixtures"]

``simulator``
    A fresh :class:`xhost.sim.Simulator` per test: free port on 127.0.0.1,
    state in a temporary directory, speed 0 (no latency), no login delay,
    user ``root`` with password :data:`SIM_PASSWORD`.
``shared_simulator``
    One simulator for the whole test session (for read-mostly tests, e.g.
    conformance sweeps); do not leave objects behind that other tests see.
``xapi_session``
    A real PyPI ``XenAPI.Session`` logged in to ``simulator``; logged out
    afterwards.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from xhost.sim import Simulator

SIM_USER = "root"
SIM_PASSWORD = "xhost-sim-password"


def _start(state_dir: Path) -> Simulator:
    sim = Simulator(state_dir, users={SIM_USER: SIM_PASSWORD}, speed=0.0, auth_delay=0.0,
                    flush_interval=0.2)
    return sim.start()


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    """A started simulator with its own state directory."""
    sim = _start(tmp_path / "sim-state")
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="session")
def shared_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """One started simulator shared by every test of the session."""
    sim = _start(tmp_path_factory.mktemp("shared-sim") / "state")
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def xapi_session(simulator: Simulator):
    """A logged-in ``XenAPI.Session`` (the real PyPI client) on ``simulator``."""
    import XenAPI

    session = XenAPI.Session(simulator.url)
    session.xenapi.login_with_password(SIM_USER, SIM_PASSWORD, "1.0", "xhost-tests")
    try:
        yield session
    finally:
        try:
            session.xenapi.session.logout()
        except Exception:
            pass

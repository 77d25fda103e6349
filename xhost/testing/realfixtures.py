"""pytest fixtures for real third-party components.

Enable them in a ``conftest.py`` at the root of the test tree::

    pytest_plugins = ["xhost.testing.realfixtures"]

or on the command line with ``-p xhost.testing.realfixtures``.  Tests that
use these fixtures are marked ``real`` automatically (deselect them with
``-m "not real"``); mark tests that drive the harnesses directly yourself.

Fixtures:

``netns``
    a fresh :class:`~xhost.testing.netns.NetNamespace` per test.
``ovs``
    a fresh :class:`~xhost.testing.ovs.PrivateOVS` per test (about 0.1 s),
    ovs-vswitchd in its own namespace (``ovs.netns``), TCP remote enabled.
``ovs_session``
    one PrivateOVS for the session; call ``ovs_session.reset()`` to drop
    the bridges a test made.
``glance``
    one running :class:`~xhost.testing.glance.GlanceServer` for the session
    (about 2 s to start; Glance is installed on first use, about a minute).
    Tests must delete the images they create.

A fixture skips only when its component cannot run here (not root, a
binary missing, Glance absent under ``XHOST_GLANCE_NO_INSTALL=1``), with the
reason and the fix.  ``XHOST_REQUIRE_REAL=1`` turns these skips into
failures, so CI cannot pass by skipping.  Every other problem (a daemon that
crashes, pip failing) is an error, never a skip.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import NoReturn

import pytest

from xhost.testing._common import require_binaries, require_root
from xhost.testing.errors import ComponentUnavailable
from xhost.testing.glance import GlanceServer
from xhost.testing.netns import NetNamespace
from xhost.testing.ovs import PrivateOVS

__all__ = [
    "REAL_FIXTURES",
    "REQUIRE_REAL_ENV",
    "component_guard",
    "glance",
    "netns",
    "ovs",
    "ovs_session",
    "require_binaries_or_skip",
    "require_real",
    "require_root_or_skip",
    "unavailable",
]

REQUIRE_REAL_ENV = "XHOST_REQUIRE_REAL"

#: Tests using any of these fixtures get the ``real`` marker, so that
#: ``pytest -m "not real"`` runs everything else.
REAL_FIXTURES = frozenset({"netns", "ovs", "ovs_session", "glance"})


def require_real() -> bool:
    """Whether ``XHOST_REQUIRE_REAL`` forbids skipping real-component tests."""
    return os.environ.get(REQUIRE_REAL_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def unavailable(reason: str) -> NoReturn:
    """Skip the current test because a component cannot run, or fail it
    under ``XHOST_REQUIRE_REAL=1``."""
    if require_real():
        pytest.fail(f"{reason} [{REQUIRE_REAL_ENV}=1: not skipping]", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def component_guard() -> Iterator[None]:
    """Turn :class:`ComponentUnavailable` raised inside into :func:`unavailable`."""
    try:
        yield
    except ComponentUnavailable as exc:
        unavailable(str(exc))


def require_binaries_or_skip(what: str, binaries: dict[str, str]) -> None:
    """:func:`unavailable` unless every program in *binaries* is on PATH.

    *binaries* maps a program to its Debian package, e.g.
    ``{"qemu-img": "qemu-utils"}``.
    """
    with component_guard():
        require_binaries(what, binaries)


def require_root_or_skip(what: str) -> None:
    """:func:`unavailable` unless running as root."""
    with component_guard():
        require_root(what)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real: needs a real third-party component (root, OVS, network namespaces, Glance)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real)


def pytest_report_header(config: pytest.Config) -> str:
    state = "required, skips fail" if require_real() else "optional, may skip"
    return f"xhost real components: {state} ({REQUIRE_REAL_ENV}={os.environ.get(REQUIRE_REAL_ENV, '')!s})"


@pytest.fixture
def netns() -> Iterator[NetNamespace]:
    """A fresh network namespace standing for dom0, removed after the test."""
    with component_guard():
        namespace = NetNamespace().create()
    try:
        yield namespace
    finally:
        namespace.destroy()


def _start_ovs() -> PrivateOVS:
    with component_guard():
        return PrivateOVS().start()


@pytest.fixture
def ovs() -> Iterator[PrivateOVS]:
    """A private Open vSwitch, vswitchd in a fresh namespace, for one test."""
    instance = _start_ovs()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def ovs_session() -> Iterator[PrivateOVS]:
    """A private Open vSwitch shared by the session (``reset()`` between uses)."""
    instance = _start_ovs()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def glance() -> Iterator[GlanceServer]:
    """A running Glance API for the session; ``glance.endpoint`` is its URL."""
    server = GlanceServer()
    with component_guard():
        server.start()
    try:
        yield server
    finally:
        server.stop()

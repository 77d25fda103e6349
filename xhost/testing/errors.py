"""Exceptions raised by the real-component harnesses.

A harness raises :class:`ComponentUnavailable` only when its component
truly cannot run here (not root, a binary missing); every other failure is
a :class:`HarnessError`.  The fixtures in :mod:`xhost.testing.realfixtures`
turn :class:`ComponentUnavailable` into a skip, or into a failure under
``XHOST_REQUIRE_REAL=1``.
"""

__all__ = ["ComponentUnavailable", "HarnessError"]


class ComponentUnavailable(RuntimeError):
    """The component cannot run on this machine (not root, binary missing).

    The message says what is missing and how to get it.
    """


class HarnessError(RuntimeError):
    """A component that should run here failed to start or to stop.

    The message carries the failing command's stderr or the daemon's log tail.
    """

"""XAPI errors as raised inside the simulator.

Every failure a client can see is an :class:`ApiError` carrying the exact
``ErrorDescription`` list (code first, then string parameters) that goes on
the wire.  The parameter names of every code are in the generated
``data/errors.json``; :func:`error_params` exposes them for documentation
and for tests that check the arity of what the simulator sends.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

NULL_REF = "OpaqueRef:NULL"


class ApiError(Exception):
    """A XAPI failure: ``ApiError("HANDLE_INVALID", "VM", ref)``."""

    def __init__(self, code: str, *params: object) -> None:
        self.code = code
        self.params = [str(p) for p in params]
        super().__init__(code, *self.params)

    @property
    def description(self) -> list[str]:
        """The wire ``ErrorDescription``: ``[code, param, ...]``."""
        return [self.code, *self.params]

    def __str__(self) -> str:
        return f"{self.code}: {self.params}"


@lru_cache(maxsize=1)
def _error_table() -> dict[str, list[str]]:
    text = resources.files("xhost.sim").joinpath("data/errors.json").read_text()
    return json.loads(text)


def error_params(code: str) -> list[str]:
    """Parameter names XAPI declares for ``code`` (KeyError if unknown)."""
    return list(_error_table()[code])


def known_error_codes() -> set[str]:
    """All error codes of the datamodel."""
    return set(_error_table())


def internal_error(message: str) -> ApiError:
    return ApiError("INTERNAL_ERROR", message)

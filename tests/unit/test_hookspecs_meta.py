"""The hook specifications are the reference manual: check they stay complete."""
from __future__ import annotations

import ast
import inspect
import pathlib

import pytest

from xhost import hookspecs

TESTS = pathlib.Path(__file__).resolve().parents[1]
DOCS = TESTS.parent / "docs"
HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("xhost_"))


def spec_options(name):
    return getattr(hookspecs, name).xhost_spec


def test_there_are_hooks_for_every_role():
    roles = {hookspecs.role_of(n) for n in HOOKS}
    assert roles == {None, "image_handler", "image_service", "network_backend",
                     "storage_backend", "guest_agent"}


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented(name):
    fn = getattr(hookspecs, name)
    doc = inspect.getdoc(fn)
    assert doc, f"{name} has no docstring"
    params = list(inspect.signature(fn).parameters)
    for param in params:
        assert f":param {param}:" in doc, f"{name}: argument {param!r} is not documented"
    assert ":returns:" in doc, f"{name}: return value not documented"
    firstresult = spec_options(name)["firstresult"]
    assert ("Stops at first non-None result (firstresult)." in doc) == firstresult, \
        f"{name}: the docstring must say whether it is firstresult"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_fully_typed(name):
    fn = getattr(hookspecs, name)
    sig = inspect.signature(fn)
    assert sig.return_annotation is not inspect.Signature.empty, f"{name}: no return type"
    for param in sig.parameters.values():
        assert param.annotation is not inspect.Parameter.empty, f"{name}: {param.name} untyped"


@pytest.mark.parametrize("name", HOOKS)
def test_role_hooks_are_firstresult(name):
    assert spec_options(name)["firstresult"] == (hookspecs.role_of(name) is not None)


def _test_function_names():
    names = set()
    for path in TESTS.rglob("test_*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
    return names


def test_every_hook_has_a_test():
    names = _test_function_names()
    missing = [h for h in HOOKS if f"test_hook_{h}" not in names]
    assert not missing, f"hooks without a test_hook_<name> test: {missing}"


def test_every_hook_is_in_the_reference_docs():
    text = (DOCS / "reference" / "hooks.rst").read_text()
    missing = [h for h in HOOKS if f"autofunction:: xhost.hookspecs.{h}" not in text]
    assert not missing, f"hooks missing from docs/reference/hooks.rst: {missing}"

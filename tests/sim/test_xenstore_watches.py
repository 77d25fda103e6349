"""XenStore watch delivery: which watches an event reaches, and with which path."""
from __future__ import annotations

from xhost.sim.xenstore import XenStore


def recorder(xs: XenStore, path: str, caller: int = 0):
    seen: list[str] = []
    watch = xs.watch(path, lambda p, _token: seen.append(p), caller=caller)
    xs.drain()
    seen.clear()  # a watch fires once when it is set
    return watch, seen


def test_events_reach_watches_at_and_above_the_path_only():
    xs = XenStore()
    _, root = recorder(xs, "/")
    _, above = recorder(xs, "/a")
    _, exact = recorder(xs, "/a/b/c")
    _, sibling = recorder(xs, "/a/bc")
    _, below = recorder(xs, "/a/b/c/d")
    xs.write("/a/b/c", "1")
    xs.drain()
    assert root == above == exact == ["/a/b/c"]
    assert sibling == [] and below == []


def test_removal_reaches_watches_below_with_their_own_path():
    xs = XenStore()
    xs.write("/a/b/c/d", "1")
    _, deep = recorder(xs, "/a/b/c/d")
    _, mid = recorder(xs, "/a/b")
    _, other = recorder(xs, "/ab/c")
    xs.rm("/a/b")
    xs.drain()
    assert deep == ["/a/b/c/d"]
    assert mid == ["/a/b"]
    assert other == []


def test_relative_watches_see_relative_paths():
    xs = XenStore()
    xs.mkdir("/local/domain/7", perms=["n7"])
    _, seen = recorder(xs, "data", caller=7)
    xs.write("/local/domain/7/data/key", "v")
    xs.write("/local/domain/8/data/key", "v")
    xs.drain()
    assert seen == ["data/key"]


def test_transaction_fires_on_commit_in_the_order_watches_were_set():
    xs = XenStore()
    order: list[str] = []
    for name in ("first", "second", "third"):
        path = {"first": "/t/x", "second": "/t", "third": "/"}[name]
        xs.watch(path, lambda p, _t, name=name: order.append(f"{name}:{p}"))
    xs.drain()
    order.clear()
    with xs.transaction():
        xs.write("/t/x", "1")
        assert order == []
    xs.drain()
    assert order == ["first:/t/x", "second:/t/x", "third:/t/x"]


def test_cancelled_and_owner_dropped_watches_see_nothing_more():
    xs = XenStore()
    watch, cancelled = recorder(xs, "/w")
    _, owned = recorder(xs, "/local/domain/3/w", caller=3)
    watch.cancel()
    xs.unwatch_owner(3)
    xs.write("/w/k", "1")
    xs.write("/local/domain/3/w/k", "1")
    xs.drain()
    assert cancelled == [] and owned == []


def test_read_tree_is_what_reads_and_directories_give():
    xs = XenStore()
    xs.write("/local/domain/4/data/a", "1")
    xs.write("/local/domain/4/data/b/c", "é")
    xs.write("/local/domain/4/attr", "")
    values, children = xs.read_tree("/local/domain/4")
    for rel, value in values.items():
        path = "/local/domain/4" + (f"/{rel}" if rel else "")
        assert xs.read(path) == value
        assert sorted(xs.directory(path)) == sorted(children[rel])
    assert values["data/b/c"] == "é" and sorted(children["data"]) == ["a", "b"]
    assert xs.read_tree("/local/domain/5") is None

"""event.from and the legacy event.register/next/unregister."""
from __future__ import annotations

import threading
import time

import XenAPI

from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER


def event_from(x, classes, token, timeout=0.0):
    return getattr(x.event, "from")(classes, token, timeout)


def test_empty_token_replays_every_object_as_add(x):
    batch = event_from(x, ["*"], "")
    assert batch["token"].count(",") == 1 and len(batch["token"]) == 41
    vms = x.VM.get_all()
    vm_events = [e for e in batch["events"] if e["class"] == "vm"]
    assert {e["ref"] for e in vm_events} == set(vms)
    assert all(e["operation"] == "add" for e in batch["events"])
    snap = vm_events[0]["snapshot"]
    assert set(snap) == set(x.VM.get_record(vm_events[0]["ref"]))
    assert int(batch["valid_ref_counts"]["vm"]) == len(vms)
    assert isinstance(batch["valid_ref_counts"]["vm"], int)
    assert not [e for e in batch["events"] if e["class"] == "session"]


def test_modifications_coalesce_and_deletions_report_del(x, new_vm):
    vm = new_vm("ev")
    token = event_from(x, ["vm"], "")["token"]
    for i in range(5):
        x.VM.set_name_description(vm, f"d{i}")
    batch = event_from(x, ["vm"], token)
    mods = [e for e in batch["events"] if e["ref"] == vm]
    assert len(mods) == 1 and mods[0]["operation"] == "mod"
    assert mods[0]["snapshot"]["name_description"] == "d4"
    assert batch["token"] > token
    token = batch["token"]
    x.VM.destroy(vm)
    batch = event_from(x, ["vm"], token)
    dels = [e for e in batch["events"] if e["ref"] == vm]
    assert [e["operation"] for e in dels] == ["del"] and "snapshot" not in dels[0]


def test_created_and_destroyed_between_calls_is_invisible(x):
    token = event_from(x, ["task"], "")["token"]
    task = x.task.create("short", "lived")
    x.task.destroy(task)
    batch = event_from(x, ["task"], token, 0.2)
    assert [e for e in batch["events"] if e["ref"] == task] == []


def test_blocks_until_a_change_then_wakes(simulator, x, new_vm):
    vm = new_vm("wake")
    token = event_from(x, ["vm"], "")["token"]

    def change():
        time.sleep(0.3)
        other = XenAPI.Session(simulator.url)
        other.xenapi.login_with_password(SIM_USER, SIM_PASSWORD)
        other.xenapi.VM.set_name_label(vm, "changed")

    threading.Thread(target=change).start()
    start = time.monotonic()
    batch = event_from(x, ["vm"], token, 10.0)
    elapsed = time.monotonic() - start
    assert 0.25 < elapsed < 5
    assert [e["snapshot"]["name_label"] for e in batch["events"] if e["ref"] == vm] == ["changed"]


def test_timeout_returns_empty_batch_with_token(x):
    token = event_from(x, ["vm"], "")["token"]
    start = time.monotonic()
    batch = event_from(x, ["vm"], token, 0.3)
    assert time.monotonic() - start >= 0.29
    assert batch["events"] == [] and batch["token"] == token


def test_class_and_object_subscriptions(x, new_vm):
    a, b = new_vm("a"), new_vm("b")
    token = event_from(x, ["*"], "")["token"]
    x.VM.set_name_description(a, "1")
    x.VM.set_name_description(b, "2")
    x.host.set_name_description(x.host.get_all()[0], "h")
    only_a = event_from(x, [f"vm/{a}"], token)
    assert {e["ref"] for e in only_a["events"]} == {a}
    hosts = event_from(x, ["host"], token)
    assert {e["class"] for e in hosts["events"]} == {"host"}
    mixed = event_from(x, ["VM"], token)
    assert {a, b} <= {e["ref"] for e in mixed["events"]}


def test_task_lifecycle_is_visible_through_events(x, new_vm):
    vm = new_vm("tasks")
    token = event_from(x, ["task"], "")["token"]
    task = x.Async.VM.start(vm, False, False)
    seen = []
    deadline = time.time() + 5
    while time.time() < deadline:
        batch = event_from(x, ["task"], token, 1.0)
        token = batch["token"]
        seen += [e["snapshot"]["status"] for e in batch["events"]
                 if e["ref"] == task and "snapshot" in e]
        if "success" in seen:
            break
    assert seen[-1] == "success"


def test_token_errors(x, fail):
    assert fail(getattr(x.event, "from"), ["vm"], "garbage", 0.0) == \
        ["EVENT_FROM_TOKEN_PARSE_FAILURE", "garbage"]
    assert fail(getattr(x.event, "from"), ["vm"], "a,b", 0.0) == \
        ["EVENT_FROM_TOKEN_PARSE_FAILURE", "a,b"]


def test_legacy_register_next_unregister(x, new_vm, fail):
    assert fail(x.event.next)[0] == "SESSION_NOT_REGISTERED"
    vm = new_vm("legacy")
    x.event.register(["vm"])
    x.VM.set_name_label(vm, "legacy2")
    events = x.event.next()
    mine = [e for e in events if e["ref"] == vm]
    assert mine and mine[0]["operation"] == "mod" and mine[0]["class"] == "vm"
    assert mine[0]["snapshot"]["name_label"] == "legacy2"
    assert mine[0]["obj_uuid"] == x.VM.get_uuid(vm)
    x.event.unregister(["vm"])


def test_inject_and_current_id(x):
    host = x.host.get_all()[0]
    before = int(x.event.get_current_id())
    token = x.event.inject("host", host)
    batch = event_from(x, ["host"], token)
    assert [e["ref"] for e in batch["events"]] == [host]
    assert int(x.event.get_current_id()) > before


def test_every_mutation_bumps_the_generation(x, new_vm):
    vm = new_vm("gen")
    ids = []
    for op in (lambda: x.VM.add_tags(vm, "t"), lambda: x.VM.add_to_other_config(vm, "k", "v"),
               lambda: x.VM.set_name_label(vm, "n")):
        op()
        ids.append(int(x.event.get_current_id()))
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_logout_wakes_a_blocked_event_from(simulator):
    session = XenAPI.Session(simulator.url)
    session.xenapi.login_with_password(SIM_USER, SIM_PASSWORD)
    token = getattr(session.xenapi.event, "from")(["vm"], "", 0.0)["token"]
    ref = session._session
    raw = XenAPI.xmlrpclib.ServerProxy(simulator.url)
    result = {}

    def waiter():
        result["reply"] = getattr(raw, "event.from")(ref, ["vm"], token, 30.0)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    simulator.sessions.expire(ref)
    t.join(5)
    assert result["reply"]["ErrorDescription"] == ["SESSION_INVALID", ref]


def test_events_lost_when_deletions_were_forgotten(simulator, x, fail, monkeypatch):
    import xhost.sim.db as simdb

    monkeypatch.setattr(simdb, "MAX_TOMBSTONES", 2)
    token = event_from(x, ["task"], "")["token"]
    x.host.set_name_description(x.host.get_all()[0], "advance")
    old = event_from(x, ["host"], token)["token"]
    tasks = [x.task.create(f"t{i}", "") for i in range(5)]
    for task in tasks:
        x.task.destroy(task)
    assert fail(getattr(x.event, "from"), ["task"], old, 0.0) == ["EVENTS_LOST"]
    survivor = x.task.create("survivor", "")
    fresh = event_from(x, ["task"], "")["token"]
    x.task.destroy(survivor)
    batch = event_from(x, ["task"], fresh)
    assert [(e["operation"], e["ref"]) for e in batch["events"]] == [("del", survivor)]

"""State directory: restart resumes, crash consistency, locking."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import XenAPI

from xhost.sim import Simulator
from xhost.sim.persistence import StateDirInUse

USERS = {"root": "pw"}


def login(url):
    session = XenAPI.Session(url)
    session.xenapi.login_with_password("root", "pw", "1.0", "persistence-test")
    return session


def make_vm(x, name):
    tpl = x.VM.get_by_name_label("Debian Bookworm 12")[0]
    vm = x.VM.clone(tpl, name)
    x.VM.provision(vm)
    x.VM.set_is_a_template(vm, False)
    return vm


def assert_consistent(x):
    """Relations hold in both directions and every record is complete."""
    for vbd, rec in x.VBD.get_all_records().items():
        assert vbd in x.VM.get_VBDs(rec["VM"])
        if rec["VDI"] != "OpaqueRef:NULL":
            assert vbd in x.VDI.get_VBDs(rec["VDI"])
    for vm, rec in x.VM.get_all_records().items():
        for vbd in rec["VBDs"]:
            assert x.VBD.get_VM(vbd) == vm
    for vdi, rec in x.VDI.get_all_records().items():
        assert vdi in x.SR.get_VDIs(rec["SR"])


def test_restart_resumes_objects_refs_and_sessions(tmp_path):
    state = tmp_path / "state"
    with Simulator(state, users=USERS) as sim:
        session = login(sim.url)
        x = session.xenapi
        vm = make_vm(x, "survivor")
        x.VM.start(vm, False, False)
        domid = x.VM.get_domid(vm)
        token = getattr(x.event, "from")(["vm"], "", 0.0)["token"]
        ref = session._session
    with Simulator(state, users=USERS) as sim:
        raw = XenAPI.xmlrpclib.ServerProxy(sim.url)
        assert raw.VM.get_power_state(ref, vm)["Value"] == "Running"
        assert raw.VM.get_domid(ref, vm)["Value"] == domid
        later = getattr(raw, "event.from")(ref, ["vm"], token, 0.0)
        assert later["Status"] == "Success"
        x = login(sim.url).xenapi
        assert_consistent(x)
        other = make_vm(x, "second")
        x.VM.start(other, False, False)
        assert int(x.VM.get_domid(other)) > int(domid)
        assert len(x.VM.get_by_name_label("survivor")) == 1


def test_state_dir_is_locked_while_in_use(tmp_path):
    with Simulator(tmp_path / "s", users=USERS):
        with pytest.raises(StateDirInUse, match="in use by a running simulator"):
            Simulator(tmp_path / "s", users=USERS).start()


def test_damaged_database_gives_a_clear_error(tmp_path):
    state = tmp_path / "s"
    state.mkdir()
    (state / "db.json").write_text("{ truncated")
    with pytest.raises(RuntimeError, match="damaged"):
        Simulator(state, users=USERS).start()


def test_running_tasks_fail_after_a_restart(tmp_path):
    state = tmp_path / "s"
    sim = Simulator(state, users=USERS).start()
    x = login(sim.url).xenapi
    task = x.task.create("pending import", "")
    sim.stop()
    with Simulator(state, users=USERS) as sim:
        x = login(sim.url).xenapi
        rec = x.task.get_record(task)
        assert rec["status"] == "failure" and rec["error_info"][0] == "INTERNAL_ERROR"


def test_sigkilled_simulator_restarts_consistent(tmp_path):
    state = tmp_path / "state"
    env = dict(os.environ, XHOST_SIM_PASSWORD="pw")
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "xhost.cli.main", "sim", "serve", "--state-dir", str(state),
         "--flush-interval", "0.1", "--auth-delay", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        x = login(url).xenapi
        vms = [make_vm(x, f"crash{i}") for i in range(5)]
        for vm in vms[:3]:
            x.VM.start(vm, False, False)
        time.sleep(0.5)
        # Keep mutating while the process dies: the last changes may be lost,
        # but the state on disk must be a consistent snapshot.
        for i in range(20):
            x.VM.set_name_description(vms[0], f"d{i}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    doc = json.loads((state / "db.json").read_text())
    assert doc["format"] == 1
    with Simulator(state, users=USERS) as sim:
        x = login(sim.url).xenapi
        names = {r["name_label"] for r in x.VM.get_all_records().values()}
        assert {f"crash{i}" for i in range(5)} <= names
        running = [vm for vm in vms if x.VM.get_power_state(vm) == "Running"]
        assert len(running) == 3
        assert_consistent(x)


def test_db_json_written_from_changes_equals_a_full_encoding(tmp_path):
    """db.json re-encodes only the records changed since the last write; what
    it holds must still be exactly the whole database."""
    state = tmp_path / "state"
    with Simulator(state, users=USERS) as sim:
        x = login(sim.url).xenapi
        first = make_vm(x, "kept")
        gone = make_vm(x, "removed")
        sim.persistence.flush(force=True)
        x.VM.set_name_label(first, "renamed")
        x.VM.start(first, False, False)
        for vbd in x.VM.get_VBDs(gone):
            x.VBD.destroy(vbd)
        x.VM.destroy(gone)
        make_vm(x, "added")
        sim.persistence.flush(force=True)
        stored = json.loads((state / "db.json").read_text())
        with sim.db.lock:
            full = json.loads(json.dumps(sim.db.snapshot()))
        assert stored["tables"] == full["tables"]
        for key in ("generation", "created", "modified", "deleted"):
            assert stored[key] == full[key]
        names = {rec["name_label"] for rec in stored["tables"]["VM"].values()}
        assert "renamed" in names and "added" in names
        assert "kept" not in names and "removed" not in names

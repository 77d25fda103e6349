"""The private Open vSwitch harness: real ovsdb-server + ovs-vswitchd, driven by ovsdbapp."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from xhost.testing._common import pid_alive, reap_stale_scratch_dirs
from xhost.testing.errors import HarnessError
from xhost.testing.netns import host_link_names, list_namespaces, reap_stale_namespaces
from xhost.testing.ovs import PrivateOVS, ovsdb_value
from xhost.testing.realfixtures import require_binaries_or_skip, require_root_or_skip

EXTERNAL_IDS = {
    "iface-id": "4f9e7c2a-0d1b-4c55-9a3e-2b7f0e6d1c11",
    "attached-mac": "fa:16:3e:12:34:56",
    "iface-status": "active",
    "vm-uuid": "0c3c2f6e-8f0a-4b8e-9d57-1f4a6f7b2e90",
}

pytestmark = pytest.mark.real


@pytest.fixture(autouse=True)
def _root_and_ovs():
    require_root_or_skip("Open vSwitch tests")
    require_binaries_or_skip("Open vSwitch tests", {"ovs-vswitchd": "openvswitch-switch",
                                                    "ovsdb-server": "openvswitch-switch"})



def _plug(api, port="vif1.0", external_ids=EXTERNAL_IDS):
    with api.transaction(check_error=True) as txn:
        txn.add(api.add_br("br-int", may_exist=True, datapath_type="netdev"))
        txn.add(api.add_port("br-int", port))
        txn.add(api.db_set("Interface", port, ("type", "internal"),
                           ("external_ids", external_ids)))


def test_ovsdbapp_over_tcp_writes_port_external_ids(ovs):
    assert ovs.tcp_connection.startswith("tcp:127.0.0.1:")
    api = ovs.ovsdbapp_api(ovs.tcp_connection)
    _plug(api)

    # Read back through ovsdbapp and, independently, through ovs-vsctl.
    assert api.db_get("Interface", "vif1.0", "external_ids").execute(check_error=True) \
        == EXTERNAL_IDS
    assert api.iface_to_br("vif1.0").execute(check_error=True) == "br-int"
    found = api.db_find("Interface", ("external_ids", "=", {"iface-id": EXTERNAL_IDS["iface-id"]}),
                        columns=["name"]).execute(check_error=True)
    assert [row["name"] for row in found] == ["vif1.0"]
    assert ovs.interface_external_ids("vif1.0") == EXTERNAL_IDS
    assert ovs.record("Bridge", "br-int", "datapath_type") == {"datapath_type": "netdev"}
    assert ovs.bridges() == ["br-int"] and ovs.ports("br-int") == ["vif1.0"]
    interface = ovs.record("Interface", "vif1.0", "ofport", "error")
    assert interface["ofport"] > 0 and interface["error"] == []

    # vswitchd made the tap devices inside its namespace and nowhere else.
    assert {"br-int", "vif1.0"} <= ovs.netns.link_names()
    assert not {"br-int", "vif1.0", "ovs-netdev"} & host_link_names()


def test_unix_connection_and_port_external_ids(ovs):
    api = ovs.ovsdbapp_api(ovs.unix_connection)
    _plug(api, "vif2.0")
    with api.transaction(check_error=True) as txn:
        txn.add(api.db_set("Port", "vif2.0", ("external_ids", {"owner": "xhost"})))
    assert ovs.port_external_ids("vif2.0") == {"owner": "xhost"}
    api.del_port("vif2.0", bridge="br-int").execute(check_error=True)
    assert ovs.ports("br-int") == []
    assert "vif2.0" not in ovs.netns.link_names()


def test_two_instances_are_isolated(ovs):
    # Also checks the ovsdbapp class-level connection workaround: each API
    # must talk to its own server.
    with PrivateOVS() as other:
        api_a, api_b = ovs.ovsdbapp_api(), other.ovsdbapp_api()
        _plug(api_a, "vif1.0")
        api_b.add_br("br-other", datapath_type="netdev").execute(check_error=True)
        assert ovs.bridges() == ["br-int"]
        assert other.bridges() == ["br-other"]
        assert ovs.netns.name != other.netns.name
        assert "br-other" not in ovs.netns.link_names()


def test_missing_device_is_reported_in_the_row(ovs):
    ovs.vsctl("add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=netdev")
    # ovs-vsctl succeeds; the failure is only visible in the Interface row.
    ovs.vsctl("add-port", "br-int", "nosuchdev")
    row = ovs.record("Interface", "nosuchdev", "ofport", "error")
    assert row["ofport"] == -1 and "No such device" in row["error"]
    with pytest.raises(HarnessError, match="absent"):
        ovs.record("Interface", "absent")


def test_session_instance_reset(ovs_session):
    ovs_session.vsctl("add-br", "br-a", "--", "set", "Bridge", "br-a", "datapath_type=netdev",
                      "--", "add-br", "br-b", "--", "set", "Bridge", "br-b",
                      "datapath_type=netdev")
    assert ovs_session.bridges() == ["br-a", "br-b"]
    ovs_session.reset()
    assert ovs_session.bridges() == []
    assert not {"br-a", "br-b"} & ovs_session.netns.link_names()


def test_given_namespace_is_used_and_kept(netns):
    with PrivateOVS(netns=netns, tcp=False) as ovs:
        assert ovs.netns is netns
        assert ovs.connection == ovs.unix_connection
        with pytest.raises(HarnessError, match="tcp=False"):
            _ = ovs.tcp_connection
        ovs.vsctl("add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=netdev")
        assert "br-int" in netns.link_names()
    assert netns.exists
    assert "br-int" not in netns.link_names()  # vswitchd exit --cleanup removed its taps


def test_stop_removes_processes_files_and_namespace():
    ovs = PrivateOVS().start()
    pids = dict(ovs.pids)
    base, ns_name = ovs.base_dir, ovs.netns.name
    assert set(pids) == {"ovsdb-server", "ovs-vswitchd"}
    assert (base / "conf.db").is_file() and ns_name in list_namespaces()
    ovs.stop()
    assert not any(pid_alive(pid) for pid in pids.values())
    assert not base.exists()
    assert ns_name not in list_namespaces()
    assert ovs.pids == {}
    ovs.stop()  # idempotent
    with pytest.raises(HarnessError, match="not started"):
        _ = ovs.unix_connection


def _start_in_child(tail: str):
    code = (
        "import json, os, time\n"
        "from xhost.testing.ovs import PrivateOVS\n"
        "o = PrivateOVS().start()\n"
        "o.vsctl('add-br', 'br-int', '--', 'set', 'Bridge', 'br-int', 'datapath_type=netdev')\n"
        "print(json.dumps({'pids': list(o.pids.values()), 'dir': str(o.base_dir),"
        " 'netns': o.netns.name}), flush=True)\n" + tail
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    state = json.loads(proc.stdout.readline())
    return proc, state


def _wait_dead(pids, timeout=10):
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not any(pid_alive(p) for p in pids)


def test_exit_without_stop_cleans_everything():
    proc, state = _start_in_child("")
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == 0
    assert _wait_dead(state["pids"])
    assert not os.path.exists(state["dir"])
    assert state["netns"] not in list_namespaces()


def test_killed_owner_leaves_no_daemons_and_leftovers_are_reaped():
    proc, state = _start_in_child("time.sleep(300)\n")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    # The daemons die with their owner (parent-death signal) ...
    assert _wait_dead(state["pids"])
    # ... and the files and namespace SIGKILL left are removed by the next run.
    assert os.path.exists(state["dir"]) and state["netns"] in list_namespaces()
    assert any(str(p) == state["dir"] for p in reap_stale_scratch_dirs("ovs"))
    assert state["netns"] in reap_stale_namespaces()
    assert not os.path.exists(state["dir"])
    assert state["netns"] not in list_namespaces()


def test_ovsdb_value_conversion():
    assert ovsdb_value(["map", [["a", "1"], ["b", ["uuid", "u-1"]]]]) == {"a": "1", "b": "u-1"}
    assert ovsdb_value(["set", [1, 2]]) == [1, 2]
    assert ovsdb_value(["set", []]) == []
    assert ovsdb_value(7) == 7 and ovsdb_value("x") == "x"


def test_namespace_class_is_reusable_for_ovs(netns):
    # PrivateOVS accepts any NetNamespace: the one a simulator's real-network
    # mode made for dom0, with Linux bridges living beside OVS.
    netns.add_bridge("xenbr0")
    with PrivateOVS(netns=netns) as ovs:
        ovs.vsctl("add-br", "br-int", "--", "set", "Bridge", "br-int", "datapath_type=netdev")
        assert {"xenbr0", "br-int"} <= netns.link_names()
        assert netns.bridges() == {"xenbr0": []}


def test_without_vswitchd_writes_need_no_wait():
    with PrivateOVS(vswitchd=False) as ovs:
        assert ovs.netns is None and set(ovs.pids) == {"ovsdb-server"}
        # vsctl adds --no-wait by itself, otherwise ovs-vsctl would hang.
        ovs.vsctl("add-br", "br-int")
        assert ovs.bridges() == ["br-int"]


def test_bad_schema_is_refused_before_anything_is_made(tmp_path):
    namespaces = list_namespaces()
    with pytest.raises(HarnessError, match="schema .*nope.ovsschema not found"):
        PrivateOVS(schema=tmp_path / "nope.ovsschema").start()
    assert list_namespaces() == namespaces

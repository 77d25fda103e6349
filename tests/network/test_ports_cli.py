"""``xhost server add-port`` / ``remove-port`` and the crash recovery of
interrupted hot plugs."""
from __future__ import annotations

import io
import json
import uuid

import pytest

from xhost.backends.network_common.names import HybridNames
from xhost.cli.main import XhostApp
from xhost.compute import api
from xhost.objects import Port

pytestmark = pytest.mark.real


def run_cli(compute, *argv):
    out, err = io.StringIO(), io.StringIO()
    app = XhostApp(stdout=out, stderr=err)
    app._compute = compute
    rc = app.run(list(argv))
    return rc, out.getvalue(), err.getvalue()


def test_add_and_remove_a_port_from_the_command_line(ovs_bed):
    server = ovs_bed.ovs_compute().create_server("cli", "tiny", "m1.tiny", ["tenant-a"])
    rc, out, err = run_cli(ovs_bed.ovs_compute(), "server", "add-port", "cli",
                           "--network", "tenant-b", "--hybrid", "-f", "json")
    assert rc == 0, err
    port = json.loads(out)
    assert (port["network"], port["device"], port["hybrid_plug"]) == ("tenant-b", "1", True)
    names = HybridNames.for_port(port["id"])
    assert ovs_bed.ovs.interface_external_ids(names.qvo)["iface-id"] == port["id"]
    rc, out, err = run_cli(ovs_bed.ovs_compute(), "server", "show", "cli", "-f", "json")
    assert [p["id"] for p in json.loads(out)["ports"]][1] == port["id"]
    rc, out, err = run_cli(ovs_bed.ovs_compute(), "server", "remove-port", "cli", port["mac"])
    assert rc == 0, err
    assert ovs_bed.ovs.ports("br-int") == [ovs_bed.vif_name(server)]
    assert names.qbr not in ovs_bed.ns.link_names()
    rc, out, err = run_cli(ovs_bed.ovs_compute(), "server", "remove-port", "cli", "nope")
    assert rc != 0 and "server 'cli' has no port 'nope'; its ports:" in err
    rc, out, err = run_cli(ovs_bed.ovs_compute(), "server", "add-port", "ghost",
                           "--network", "x")
    assert rc != 0 and "no server 'ghost'" in err


def _orphan(compute, entry_id):
    path = f"{compute.journal.path}/{entry_id}.json"
    with open(path) as f:
        data = json.load(f)
    data["pid"] = 999999999  # no such process: the attach was killed
    with open(path, "w") as f:
        json.dump(data, f)


def test_reconcile_undoes_an_attach_killed_half_way(ovs_bed):
    compute = ovs_bed.ovs_compute()
    server = compute.create_server("k", "tiny", "m1.tiny", ["tenant-a"])
    before = ovs_bed.snapshot()
    # What a process killed after plugging (hybrid plumbing built, port not yet
    # recorded on the VM) leaves behind.
    instance = api.instance_from_record(compute._find("k")[1])
    port = Port(id=str(uuid.uuid4()), mac=api.random_mac(), network="tenant-b", device="1",
                hybrid_plug=True)
    ctx = compute.context()
    network = compute.plugins.network_prepare(ctx, instance, port)
    compute.plugins.network_plug_vif(ctx, instance, server.vm_ref, port, network, "1")
    assert HybridNames.for_port(port.id).qbr in ovs_bed.ns.link_names()
    entry = compute.journal.begin("attach", instance=server.id, name="k", vm=server.vm_ref,
                                  ports=[api.port_entry(port)])
    _orphan(compute, entry)
    assert compute.reconcile() == ["attach of k cleaned up"]
    assert not before.differences(ovs_bed.snapshot())
    assert ovs_bed.vm_of(server)["power_state"] == "Running"


def test_reconcile_keeps_a_completed_attach_and_finishes_a_detach(ovs_bed):
    compute = ovs_bed.ovs_compute()
    server = compute.create_server("k2", "tiny", "m1.tiny", [])
    before = ovs_bed.snapshot()
    port = compute.attach_interface("k2", "tenant-a")
    # Killed after recording the port: the attach had completed.
    entry = compute.journal.begin("attach", instance=server.id, name="k2", vm=server.vm_ref,
                                  ports=[port])
    _orphan(compute, entry)
    compute.reconcile()
    assert [p["id"] for p in ovs_bed.ports_tag(server)] == [port["id"]]
    # Killed in the middle of a detach: the VIF is gone, the rest is finished.
    instance = api.instance_from_record(compute._find("k2")[1])
    compute.plugins.network_unplug_vif(compute.context(), instance, server.vm_ref,
                                       instance.ports[0])
    entry = compute.journal.begin("detach", instance=server.id, name="k2", vm=server.vm_ref,
                                  ports=[port])
    _orphan(compute, entry)
    assert compute.reconcile() == ["detach of k2 cleaned up"]
    assert not before.differences(ovs_bed.snapshot())
    assert ovs_bed.ports_tag(server) == []

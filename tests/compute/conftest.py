"""Minimal in-test plugins so the compute layer's own mechanics (journal,
rollback, listing) are tested against the simulator independently of the
built-in plugins (which have their own end-to-end tests)."""
from __future__ import annotations

import pytest

from xhost import hookimpl, plugins
from xhost.compute.api import Compute
from xhost.compute.connection import HostConnection
from xhost.objects import Disk, ImageMeta
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER
from xhost.xapi.client import XapiClient

TAG = "nova_instance_uuid"


class BlankStorage:
    """Root disk: a blank VDI of the flavor's size on the default SR."""

    @hookimpl
    def xhost_storage_choose_sr(self, ctx):
        pool = next(iter(ctx.xapi.call("pool.get_all_records").values()))
        return pool["default_SR"]

    @hookimpl
    def xhost_storage_create_root_disk(self, ctx, instance, sr_ref):
        vdi = ctx.xapi.call("VDI.create", {
            "name_label": instance.name, "SR": sr_ref,
            "virtual_size": str(max(instance.flavor.root_gb, 1) * 2**30), "type": "system",
            "sharable": False, "read_only": False,
            "other_config": {TAG: instance.uuid, "nova_disk_type": "root"}})
        ctx.undo.push("destroy root VDI", ctx.xapi.call, "VDI.destroy", vdi)
        uuid = ctx.xapi.call("VDI.get_uuid", vdi)
        return [Disk(vdi_ref=vdi, vdi_uuid=uuid, kind="root", userdevice="0", bootable=True)]

    @hookimpl
    def xhost_storage_create_ephemeral_disks(self):
        return []

    @hookimpl
    def xhost_storage_create_swap_disk(self):
        return []

    @hookimpl
    def xhost_storage_destroy_disks(self, ctx, instance):
        for ref, rec in ctx.xapi.call("VDI.get_all_records").items():
            if rec["other_config"].get(TAG) == instance.uuid:
                ctx.xapi.call("VDI.destroy", ref)
        return True


class ExistingNetwork:
    """Ports go on the XAPI network whose name_label is the port's network."""

    @hookimpl
    def xhost_network_prepare(self, ctx, port):
        refs = ctx.xapi.call("network.get_by_name_label", port.network)
        if not refs:
            raise ValueError(f"no network {port.network!r}")
        return refs[0]

    @hookimpl
    def xhost_network_plug_vif(self, ctx, vm_ref, port, network_ref, device):
        return ctx.xapi.call("VIF.create", {
            "device": device, "network": network_ref, "VM": vm_ref, "MAC": port.mac,
            "MTU": "1500", "other_config": {"neutron-port-id": port.id},
            "qos_algorithm_type": "", "qos_algorithm_params": {}})

    @hookimpl
    def xhost_network_post_start(self):
        return True

    @hookimpl
    def xhost_network_cleanup(self):
        return True


class StaticImages:
    images = {"img-1": ImageMeta(id="img-1", name="tiny", status="active", disk_format="vhd",
                                 container_format="ovf", properties={"os_type": "linux"})}

    @hookimpl
    def xhost_image_service_show(self, image_id):
        from xhost.images import ImageNotFound

        if image_id not in self.images:
            raise ImageNotFound(image=image_id, hint="")
        return self.images[image_id]

    @hookimpl
    def xhost_image_service_list(self, filters):
        return [i for i in self.images.values() if i.name == filters.get("name", i.name)]


@pytest.fixture
def compute(simulator, make_conf, tmp_path):
    conf = make_conf(f"[compute]\nstate_dir = {tmp_path}/xhost-state\n")
    pm = plugins.new_plugin_manager()
    pm.register(BlankStorage(), name="storage_backend:blank")
    pm.register(ExistingNetwork(), name="network_backend:existing")
    pm.register(StaticImages(), name="image_service:static")
    host = plugins.PluginHost(pm, conf, {"storage_backend": "blank",
                                         "network_backend": "existing",
                                         "image_service": "static"}, [])
    client = XapiClient(simulator.url, SIM_USER, SIM_PASSWORD)
    c = Compute(conf, HostConnection(client), host)
    c.simulator = simulator
    yield c
    c.close()

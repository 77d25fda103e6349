"""Booting instances through the compute layer on the simulator, with the
real guest agent plugin (loaded through its entry point) and minimal in-test
storage, network and image plugins (selected explicitly, so these tests do
not depend on which built-in plugins are installed or configured)."""
from __future__ import annotations

import json
import urllib.request

import pytest

from xhost import hookimpl, plugins, registry
from xhost.compute.api import Compute
from xhost.compute.connection import HostConnection
from xhost.objects import Disk, ImageMeta
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER
from xhost.xapi.client import XapiClient

TAG = "nova_instance_uuid"
NETWORK = "Pool-wide network associated with eth0"
#: What the in-test IPAM gives the first port of every instance.
FIXED_IP = {"ip": "192.0.2.10", "netmask": "255.255.255.0", "gateway": "192.0.2.1"}


class BlankStorage:
    """Root disk: a blank VDI on the default SR. It also stands in for an
    IPAM (it runs before the VM record, which carries vm-data/networking)."""

    @hookimpl
    def xhost_storage_choose_sr(self, ctx, instance):
        if instance is not None and instance.ports and not instance.ports[0].ips:
            instance.ports[0].ips.append(dict(FIXED_IP))
            instance.ports[0].details["dns"] = ["192.0.2.53"]
        pool = next(iter(ctx.xapi.call("pool.get_all_records").values()))
        return pool["default_SR"]

    @hookimpl
    def xhost_storage_create_root_disk(self, ctx, instance, sr_ref):
        vdi = ctx.xapi.call("VDI.create", {
            "name_label": instance.name, "SR": sr_ref, "virtual_size": str(2**30),
            "type": "system", "sharable": False, "read_only": False,
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
    @hookimpl
    def xhost_network_prepare(self, ctx, port):
        return ctx.xapi.call("network.get_by_name_label", port.network)[0]

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


class Images:
    """Images made by the tests: ``images.add(name, **properties)``."""

    def __init__(self):
        self.images: dict[str, ImageMeta] = {}

    def add(self, name: str, **properties) -> ImageMeta:
        image = ImageMeta(id=f"img-{name}", name=name, status="active", disk_format="vhd",
                          container_format="ovf", properties={"os_type": "linux", **properties})
        self.images[image.id] = image
        return image

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
def images():
    return Images()


@pytest.fixture
def make_compute(simulator, make_conf, tmp_path, images):
    """``make_compute(xenserver={option: value}, text="[group]...",
    extensions={name: obj})``: a Compute on ``simulator`` with the guest agent
    plugin the configuration selects (short agent timeouts unless
    ``xenserver`` sets them)."""
    made: list[Compute] = []

    def make(xenserver: dict[str, object] | None = None, text: str = "",
             extensions: dict[str, object] | None = None) -> Compute:
        options = {"agent_timeout": 5, "agent_version_timeout": 10,
                   "agent_resetnetwork_timeout": 5, **(xenserver or {})}
        lines = "".join(f"{k} = {v}\n" for k, v in options.items())
        text = (f"[compute]\nstate_dir = {tmp_path}/xhost-state\n[xenserver]\n{lines}{text}")
        conf = make_conf(text)
        agent_name = plugins.selected_names(conf)["guest_agent"]
        agent = plugins.load_role_plugin(registry.ROLES_BY_KEY["guest_agent"], agent_name, conf)
        pm = plugins.new_plugin_manager()
        pm.register(BlankStorage(), name="storage_backend:blank")
        pm.register(ExistingNetwork(), name="network_backend:existing")
        pm.register(images, name="image_service:test")
        pm.register(agent, name=f"guest_agent:{agent_name}")
        for name, extension in (extensions or {}).items():
            pm.register(extension, name=f"extension:{name}")
        host = plugins.PluginHost(pm, conf, {"storage_backend": "blank",
                                             "network_backend": "existing",
                                             "image_service": "test",
                                             "guest_agent": agent_name},
                                  list(extensions or {}))
        client = XapiClient(simulator.url, SIM_USER, SIM_PASSWORD)
        compute = Compute(conf, HostConnection(client), host)
        made.append(compute)
        return compute

    yield make
    for compute in made:
        compute.close()


@pytest.fixture
def guest_view(simulator):
    """``guest_view(vm_uuid)``: ``GET /sim/guests/<uuid>`` over HTTP."""

    def get(vm_uuid: str) -> dict:
        manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        manager.add_password(None, simulator.url, SIM_USER, SIM_PASSWORD)
        opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(manager))
        request = urllib.request.Request(f"{simulator.url}/sim/guests/{vm_uuid}")
        with opener.open(request, timeout=10) as response:
            return json.loads(response.read())
    return get

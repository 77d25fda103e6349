"""Each hook, called through the typed facade, reaches its implementation
with the right arguments and gives back its result (built-in plugins test
their own implementations elsewhere)."""
from __future__ import annotations

import functools
import inspect
import logging

import pytest

from xhost import exception, hookimpl, hookspecs, plugins
from xhost.context import Context
from xhost.objects import Flavor, ImageMeta, Instance, Port

RESULT = object()
CTX = object()
INSTANCE = Instance(uuid="i-1", name="vm1", flavor=Flavor("m1.tiny", 1, 512, 1))
IMAGE = ImageMeta(id="img-1", name="cirros", disk_format="vhd", container_format="ovf")
PORT = Port(id="port-1", mac="fa:16:3e:00:00:01", network="net1")


def make_plugin(results: dict[str, object], record: list):
    """A plugin object implementing ``results``' hooks, recording calls."""
    obj = type("RecordingPlugin", (), {})()
    for name, result in results.items():
        spec = getattr(hookspecs, name)
        argnames = list(inspect.signature(spec).parameters)

        def impl(*args, _name=name, _argnames=argnames, _result=result):
            record.append((_name, dict(zip(_argnames, args))))
            if isinstance(_result, BaseException):
                raise _result
            return _result

        setattr(obj, name, hookimpl(functools.wraps(spec)(impl)))
    return obj


def host_for(results, record, role="image_handler"):
    pm = plugins.new_plugin_manager()
    selected = {r.key: "recorder" for r in plugins.registry.ROLES}
    pm.register(make_plugin(results, record), name=f"{role}:recorder")
    return plugins.PluginHost(pm, conf=None, selected=selected, extensions=[])


def roundtrip(hook: str, method: str, **kwargs):
    record: list = []
    host = host_for({hook: RESULT}, record, hookspecs.role_of(hook) or "extension")
    assert getattr(host, method)(**kwargs) is RESULT
    assert record == [(hook, kwargs)]
    # and, unimplemented, it names the plugin and the hook
    empty = host_for({}, [])
    with pytest.raises(exception.NotSupportedByPlugin, match=hook):
        getattr(empty, method)(**kwargs)


def broadcast(hook: str, method: str, **kwargs):
    first, second = [], []
    pm = plugins.new_plugin_manager()
    pm.register(make_plugin({hook: RuntimeError("boom")}, first), name="extension:a")
    pm.register(make_plugin({hook: None}, second), name="extension:b")
    host = plugins.PluginHost(pm, conf=kwargs.get("conf"), selected={}, extensions=["a", "b"])
    assert getattr(host, method)(**{k: v for k, v in kwargs.items() if k != "conf"}) is None
    # a failing extension does not stop the others
    assert first == [(hook, kwargs)] and second == [(hook, kwargs)]


# -- image handler ------------------------------------------------------------

def test_hook_xhost_image_capabilities():
    roundtrip("xhost_image_capabilities", "image_capabilities", ctx=CTX)


def test_hook_xhost_image_download():
    roundtrip("xhost_image_download", "image_download", ctx=CTX, image=IMAGE,
              sr_ref="OpaqueRef:sr", instance=INSTANCE)


def test_hook_xhost_image_upload():
    roundtrip("xhost_image_upload", "image_upload", ctx=CTX, image=IMAGE,
              vdi_refs=["OpaqueRef:leaf", "OpaqueRef:base"], instance=None)


# -- image service ------------------------------------------------------------

def test_hook_xhost_image_service_create():
    roundtrip("xhost_image_service_create", "image_service_create", ctx=CTX, name="n",
              disk_format="raw", container_format="bare", properties={"os_type": "linux"})


def test_hook_xhost_image_service_show():
    roundtrip("xhost_image_service_show", "image_service_show", ctx=CTX, image_id="img-1")


def test_hook_xhost_image_service_list():
    roundtrip("xhost_image_service_list", "image_service_list", ctx=CTX, filters={"name": "x"})


def test_hook_xhost_image_service_update():
    roundtrip("xhost_image_service_update", "image_service_update", ctx=CTX, image_id="img-1",
              changes={"name": "y"}, remove=["os_type"])


def test_hook_xhost_image_service_delete():
    roundtrip("xhost_image_service_delete", "image_service_delete", ctx=CTX, image_id="img-1")


def test_hook_xhost_image_service_upload():
    roundtrip("xhost_image_service_upload", "image_service_upload", ctx=CTX, image_id="img-1",
              data=[b"abc"], size=3)


def test_hook_xhost_image_service_download():
    roundtrip("xhost_image_service_download", "image_service_download", ctx=CTX,
              image_id="img-1")


def test_hook_xhost_image_service_location():
    record: list = []
    host = host_for({"xhost_image_service_location": RESULT}, record, "image_service")
    assert host.image_service_location(CTX, "img-1", for_upload=True) is RESULT
    assert record == [("xhost_image_service_location",
                       {"ctx": CTX, "image_id": "img-1", "for_upload": True})]
    # None is a valid answer: "not reachable over HTTP"
    assert host_for({}, []).image_service_location(CTX, "img-1", False) is None


# -- network backend ----------------------------------------------------------

def test_hook_xhost_network_prepare():
    roundtrip("xhost_network_prepare", "network_prepare", ctx=CTX, instance=INSTANCE, port=PORT)


def test_hook_xhost_network_plug_vif():
    roundtrip("xhost_network_plug_vif", "network_plug_vif", ctx=CTX, instance=INSTANCE,
              vm_ref="OpaqueRef:vm", port=PORT, network_ref="OpaqueRef:net", device="0")


def test_hook_xhost_network_post_start():
    roundtrip("xhost_network_post_start", "network_post_start", ctx=CTX, instance=INSTANCE,
              vm_ref="OpaqueRef:vm", port=PORT, vif_ref="OpaqueRef:vif")


def test_hook_xhost_network_hot_plug():
    roundtrip("xhost_network_hot_plug", "network_hot_plug", ctx=CTX, instance=INSTANCE,
              vm_ref="OpaqueRef:vm", port=PORT, vif_ref="OpaqueRef:vif")


def test_hook_xhost_network_hot_unplug():
    roundtrip("xhost_network_hot_unplug", "network_hot_unplug", ctx=CTX, instance=INSTANCE,
              vm_ref="OpaqueRef:vm", port=PORT, vif_ref="OpaqueRef:vif")


def test_hook_xhost_network_unplug_vif():
    roundtrip("xhost_network_unplug_vif", "network_unplug_vif", ctx=CTX, instance=INSTANCE,
              vm_ref="OpaqueRef:vm", port=PORT)


def test_hook_xhost_network_cleanup():
    roundtrip("xhost_network_cleanup", "network_cleanup", ctx=CTX, instance=INSTANCE, port=PORT)


# -- storage backend ----------------------------------------------------------

def test_hook_xhost_storage_choose_sr():
    roundtrip("xhost_storage_choose_sr", "storage_choose_sr", ctx=CTX, instance=INSTANCE)


def test_hook_xhost_storage_capabilities():
    roundtrip("xhost_storage_capabilities", "storage_capabilities", ctx=CTX, sr_ref="OpaqueRef:sr")


def test_hook_xhost_storage_create_root_disk():
    roundtrip("xhost_storage_create_root_disk", "storage_create_root_disk", ctx=CTX,
              instance=INSTANCE, sr_ref="OpaqueRef:sr", image=IMAGE)


def test_hook_xhost_storage_create_ephemeral_disks():
    roundtrip("xhost_storage_create_ephemeral_disks", "storage_create_ephemeral_disks", ctx=CTX,
              instance=INSTANCE, sr_ref="OpaqueRef:sr")


def test_hook_xhost_storage_create_swap_disk():
    roundtrip("xhost_storage_create_swap_disk", "storage_create_swap_disk", ctx=CTX,
              instance=INSTANCE, sr_ref="OpaqueRef:sr")


def test_hook_xhost_storage_create_config_drive():
    roundtrip("xhost_storage_create_config_drive", "storage_create_config_drive", ctx=CTX,
              instance=INSTANCE, sr_ref="OpaqueRef:sr", files={"openstack/latest/meta_data.json": b"{}"})


def test_hook_xhost_storage_attach_volume():
    roundtrip("xhost_storage_attach_volume", "storage_attach_volume", ctx=CTX, instance=INSTANCE,
              vm_ref="OpaqueRef:vm", connection_info={"driver_volume_type": "iscsi"},
              mountpoint="/dev/xvdb")


def test_hook_xhost_storage_detach_volume():
    roundtrip("xhost_storage_detach_volume", "storage_detach_volume", ctx=CTX, instance=INSTANCE,
              vm_ref="OpaqueRef:vm", mountpoint="/dev/xvdb")


def test_hook_xhost_storage_destroy_disks():
    roundtrip("xhost_storage_destroy_disks", "storage_destroy_disks", ctx=CTX, instance=INSTANCE,
              vm_ref=None)


# -- guest agent --------------------------------------------------------------

def test_hook_xhost_agent_detect():
    roundtrip("xhost_agent_detect", "agent_detect", ctx=CTX, instance=INSTANCE)


def test_hook_xhost_agent_version():
    roundtrip("xhost_agent_version", "agent_version", ctx=CTX, instance=INSTANCE,
              vm_ref="OpaqueRef:vm", timeout=1.5)


def test_hook_xhost_agent_set_password():
    roundtrip("xhost_agent_set_password", "agent_set_password", ctx=CTX, instance=INSTANCE,
              vm_ref="OpaqueRef:vm", password="s3cret")


def test_hook_xhost_agent_inject_file():
    roundtrip("xhost_agent_inject_file", "agent_inject_file", ctx=CTX, instance=INSTANCE,
              vm_ref="OpaqueRef:vm", path="/etc/motd", contents=b"hi")


def test_hook_xhost_agent_reset_network():
    roundtrip("xhost_agent_reset_network", "agent_reset_network", ctx=CTX, instance=INSTANCE,
              vm_ref="OpaqueRef:vm")


def test_hook_xhost_agent_update():
    roundtrip("xhost_agent_update", "agent_update", ctx=CTX, instance=INSTANCE,
              vm_ref="OpaqueRef:vm", url="http://agents/x.tgz", md5sum="0" * 32)


def test_hook_xhost_agent_configure_instance():
    roundtrip("xhost_agent_configure_instance", "agent_configure_instance", ctx=CTX,
              instance=INSTANCE, vm_ref="OpaqueRef:vm")


# -- broadcast -----------------------------------------------------------------

def test_hook_xhost_plugins_loaded():
    pm = plugins.new_plugin_manager()
    record: list = []
    pm.register(make_plugin({"xhost_plugins_loaded": None}, record), name="extension:a")
    host = plugins.PluginHost(pm, conf="CONF", selected={}, extensions=["a"])
    host.plugins_loaded()
    assert record == [("xhost_plugins_loaded", {"plugins": host, "conf": "CONF"})]


def test_hook_xhost_instance_spawned():
    broadcast("xhost_instance_spawned", "instance_spawned", ctx=CTX, instance=INSTANCE)


def test_hook_xhost_instance_spawn_failed():
    broadcast("xhost_instance_spawn_failed", "instance_spawn_failed", ctx=CTX, instance=INSTANCE,
              error=ValueError("x"))


def test_hook_xhost_instance_destroyed():
    broadcast("xhost_instance_destroyed", "instance_destroyed", ctx=CTX, instance=INSTANCE)


def test_hook_xhost_instance_state_changed():
    broadcast("xhost_instance_state_changed", "instance_state_changed", ctx=CTX,
              instance=INSTANCE, old_state="building", new_state="active")


def test_hook_xhost_instance_fault(caplog):
    instance = Instance(uuid="i-2", name="vm2", flavor=INSTANCE.flavor)
    with caplog.at_level(logging.ERROR):
        broadcast("xhost_instance_fault", "instance_fault", ctx=CTX, instance=instance,
                  message="agent did not answer")
    assert instance.faults == ["agent did not answer"]
    assert "boom" in caplog.text


def test_hook_xhost_image_uploaded():
    broadcast("xhost_image_uploaded", "image_uploaded", ctx=CTX, image=IMAGE, instance=None)


def test_context_rollback_runs_newest_first_and_keeps_going():
    ctx = Context(conf=None, plugins=None)
    done = []
    ctx.undo.push("a", done.append, "a")
    ctx.undo.push("b", lambda: (_ for _ in ()).throw(RuntimeError("b failed")))
    ctx.undo.push("c", done.append, "c")
    failures = ctx.undo.rollback()
    assert done == ["c", "a"]
    assert [d for d, _ in failures] == ["b"] and len(ctx.undo) == 0

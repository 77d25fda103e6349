"""The steps of a spawn, each one's undo registered as soon as it has effect."""
from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING

from xhost import exception
from xhost.compute import configdrive, vmrecord
from xhost.context import Context, durable
from xhost.objects import Disk, Instance

if TYPE_CHECKING:
    from xhost.compute.api import Compute
    from xhost.xapi.client import XapiClient

#: (step, fraction of the spawn done when it starts)
STEPS = (
    ("choosing the SR", 0.0),
    ("creating the root disk", 0.05),
    ("creating ephemeral and swap disks", 0.55),
    ("creating the config drive", 0.6),
    ("creating the VM", 0.65),
    ("attaching disks", 0.7),
    ("plugging network interfaces", 0.75),
    ("starting the VM", 0.8),
    ("finishing network plumbing", 0.9),
    ("unpausing the VM", 0.93),
    ("configuring the guest", 0.95),
)


class Spawner:
    def __init__(self, compute: Compute, ctx: Context, instance: Instance) -> None:
        self.compute = compute
        self.ctx = ctx
        self.xapi = compute.xapi
        self.plugins = compute.plugins
        self.instance = instance
        self.disks: list[Disk] = []
        self._fractions = dict(STEPS)

    def _step(self, name: str) -> None:
        self.ctx.extra["step"] = name
        self.ctx.progress(name, self._fractions[name])

    def run(self) -> None:
        ctx, instance, plugins = self.ctx, self.instance, self.plugins
        self._step("choosing the SR")
        sr = plugins.storage_choose_sr(ctx, instance)

        self._step("creating the root disk")
        disks: list[Disk] = list(plugins.storage_create_root_disk(ctx, instance, sr,
                                                                  instance.image))
        self._step("creating ephemeral and swap disks")
        disks += plugins.storage_create_ephemeral_disks(ctx, instance, sr)
        disks += plugins.storage_create_swap_disk(ctx, instance, sr)
        if instance.config_drive:
            self._step("creating the config drive")
            files = configdrive.files_for(instance)
            disks.append(plugins.storage_create_config_drive(ctx, instance, sr, files))

        self._step("creating the VM")
        kernel = next((d.dom0_path for d in disks if d.kind == "kernel"), None)
        ramdisk = next((d.dom0_path for d in disks if d.kind == "ramdisk"), None)
        record = vmrecord.vm_record(instance, vmrecord.vm_mode(instance), kernel, ramdisk)
        vm = self.xapi.call("VM.create", record)
        instance.vm_ref = vm
        ctx.undo.push(f"destroy VM {instance.name}", destroy_vm, self.xapi, vm)

        self._step("attaching disks")
        self.disks = disks
        for disk in disks:
            if disk.kind in ("kernel", "ramdisk"):
                continue
            self.xapi.call("VBD.create", {
                "VM": vm, "VDI": disk.vdi_ref, "userdevice": disk.userdevice or "autodetect",
                "bootable": disk.bootable, "mode": "RO" if disk.read_only else "RW",
                "type": disk.vbd_type, "empty": False, "other_config": {},
                "qos_algorithm_type": "", "qos_algorithm_params": {}})

        self._step("plugging network interfaces")
        vifs = []
        for index, port in enumerate(instance.ports):
            network = plugins.network_prepare(ctx, instance, port)
            vifs.append(plugins.network_plug_vif(ctx, instance, vm, port, network,
                                                 port.device or str(index)))

        self._step("starting the VM")
        # Paused, on this host (where the network backend plumbs its ports).
        # A plain call: it returns once the domain exists, which is what an
        # Async task and its wait would have cost two more calls to learn.
        self.xapi.call("VM.start_on", vm, ctx.host_ref, True, False,
                       timeout=self.compute.conf.compute.spawn_timeout)

        self._step("finishing network plumbing")
        for port, vif in zip(instance.ports, vifs):
            plugins.network_post_start(ctx, instance, vm, port, vif)

        self._step("unpausing the VM")
        self.xapi.call("VM.unpause", vm)
        record["other_config"][vmrecord.TAG_STATE] = "active"

        self._step("configuring the guest")
        self._configure_guest(vm)
        # Every fault of the spawn (storage warnings such as auto disk config
        # declining a disk, agent trouble), recorded on the VM for `server show`.
        if instance.faults:
            record["other_config"][vmrecord.TAG_FAULTS] = json.dumps(instance.faults)
        self.xapi.call("VM.set_other_config", vm, record["other_config"])
        ctx.undo.discard()
        old = instance.state
        instance.state = "active"
        ctx.progress("done", 1.0)
        plugins.instance_state_changed(ctx, instance, old, "active")
        plugins.instance_spawned(ctx, instance)

    def _configure_guest(self, vm: str) -> list[str]:
        """The guest agent's first-boot sequence; its failures are recorded
        on the instance, never fatal."""
        from xhost.compute import agentboot

        return agentboot.first_boot(self.ctx, self.instance, vm)


@durable
def destroy_vm(xapi: XapiClient, vm: str) -> None:
    """Undo ``VM.create``: the VM goes (shut down first if it runs); its
    VBDs and VIFs go with it. A VM that is gone is fine."""
    try:
        xapi.call("VM.hard_shutdown", vm)
    except (exception.VmBadPowerState, exception.HandleInvalid):
        pass
    with contextlib.suppress(exception.HandleInvalid):
        xapi.call("VM.destroy", vm)

"""Simulated guests (part 1: guest metrics only).

When a VM's domain starts, its guest "boots" and, if it has PV tools,
publishes ``VM_guest_metrics`` like the XCP-ng guest agent: OS version, PV
driver version, one IP per VIF, feature flags.  A VM whose
``other_config["xhost_sim_tools"]`` is ``"false"`` behaves as a guest without
tools: no guest metrics ever appear and clean shutdown/reboot fail with
``VM_MISSING_PV_DRIVERS``.  IPs come from ``xenstore_data``
``vm-data/networks/<device>/ip`` (or ``.../address``) when set, else a
deterministic address derived from the VIF's MAC (a stand-in for a DHCP
lease).

Part 2 replaces this with a full guest (XenStore tree, agent protocol) by
installing another object with the same interface on ``Simulator.guests``.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from .errors import NULL_REF
from .xapi_types import now_datetime

if TYPE_CHECKING:
    from .simulator import Simulator

TOOLS_KEY = "xhost_sim_tools"


def has_tools(vm: dict) -> bool:
    return vm["other_config"].get(TOOLS_KEY, "true").lower() not in ("false", "0", "no")


def lease_for(mac: str, device: str) -> str:
    digest = hashlib.sha256(mac.lower().encode()).digest()
    return f"10.{digest[0] % 200 + 20}.{digest[1]}.{digest[2] % 250 + 2}"


class SimpleGuests:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def on_start(self, vm: str) -> None:
        """The domain of ``vm`` booted."""
        db = self.sim.db
        rec = db.get("VM", vm)
        if not has_tools(rec) or rec["is_control_domain"]:
            return
        networks: dict[str, str] = {}
        for vif in rec["VIFs"]:
            vif_rec = db.find("VIF", vif)
            if vif_rec is None:
                continue
            dev = vif_rec["device"]
            xs = rec["xenstore_data"]
            ip = (xs.get(f"vm-data/networks/{dev}/ip") or xs.get(f"vm-data/networks/{dev}/address")
                  or lease_for(vif_rec["MAC"], dev))
            networks[f"{dev}/ip"] = ip
            networks[f"{dev}/ipv4/0"] = ip
        windows = "viridian" in rec["platform"] and rec["platform"].get("viridian") == "true"
        os_version = ({"name": "Microsoft Windows Server 2022 Standard|C:\\Windows|"
                               "\\Device\\Harddisk0\\Partition2",
                       "distro": "windows", "major": "10", "minor": "0"} if windows else
                      {"name": "Debian GNU/Linux 12 (bookworm)", "uname": "6.1.0-25-amd64",
                       "distro": "debian", "major": "12", "minor": "7"})
        values = {
            "os_version": os_version,
            "PV_drivers_version": {"major": "8", "minor": "3", "micro": "0", "build": "1"},
            "PV_drivers_up_to_date": True,
            "PV_drivers_detected": True,
            "networks": networks,
            "other": {"feature-shutdown": "1", "feature-poweroff": "1", "feature-reboot": "1",
                      "feature-suspend": "1", "feature-vcpu-hotplug": "1",
                      "has-vendor-device": "0", "platform-feature-multiprocessor-suspend": "1"},
            "memory": {},
            "disks": {},
            "live": True,
            "can_use_hotplug_vbd": "yes",
            "can_use_hotplug_vif": "yes",
            "last_updated": now_datetime(),
            "other_config": {},
        }
        spec = self.sim.schema.classes["VM_guest_metrics"]
        with db.lock:
            old = rec["guest_metrics"]
            if old != NULL_REF and db.exists("VM_guest_metrics", old):
                db.update("VM_guest_metrics", old, **values)
            else:
                gm = db.add("VM_guest_metrics", spec.new_record(values))
                db.update("VM", vm, guest_metrics=gm)

    def on_stop(self, vm: str) -> None:
        """The domain of ``vm`` is gone."""
        db = self.sim.db
        with db.lock:
            rec = db.find("VM", vm)
            if rec is None:
                return
            gm = rec["guest_metrics"]
            if gm != NULL_REF:
                db.update("VM", vm, guest_metrics=NULL_REF)
                if db.exists("VM_guest_metrics", gm):
                    db.remove("VM_guest_metrics", gm)

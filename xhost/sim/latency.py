"""Per-method latency model.

Figures are what a real XCP-ng host takes (see the reference notes' published
numbers: cheap reads 1-5 ms, ``get_all_records`` of 500 VMs ~0.3-0.5 s,
VM.start 2-5 s plus ~1 s per extra disk, clean shutdown 3-10 s, hard shutdown
~1 s, CoW clone 1-3 s, copies at 100-200 MB/s of allocated data).  The
simulator multiplies them by a global *speed* factor: 0 (the default, used by
tests) disables all waiting, 1 behaves like a real host, 0.1 is a brisk demo.
Per-method overrides (in seconds, not scaled) let a test hold an operation
open to observe ``current_operations`` or cancel a task.
"""
from __future__ import annotations

#: Seconds at speed 1.0 for explicit messages; implicit reads use CHEAP_READ.
CHEAP_READ = 0.002
CHEAP_WRITE = 0.004
RECORD_READ = 0.004
#: Per-record cost of get_all_records (0.4 s for 500 VMs).
PER_RECORD = 0.0008

DEFAULTS: dict[str, float] = {
    "session.login_with_password": 0.05,
    "session.logout": 0.01,
    "VM.start": 3.0,
    "VM.start_on": 3.0,
    "VM.resume": 2.5,
    "VM.resume_on": 2.5,
    "VM.clean_shutdown": 5.0,
    "VM.shutdown": 5.0,
    "VM.hard_shutdown": 1.0,
    "VM.clean_reboot": 6.0,
    "VM.hard_reboot": 2.0,
    "VM.suspend": 4.0,
    "VM.pause": 0.3,
    "VM.unpause": 0.3,
    "VM.clone": 2.0,
    "VM.copy": 10.0,
    "VM.snapshot": 2.0,
    "VM.checkpoint": 5.0,
    "VM.revert": 2.0,
    "VM.provision": 1.5,
    "VM.destroy": 0.3,
    "VM.pool_migrate": 20.0,
    "VM.migrate_send": 60.0,
    "VDI.create": 0.5,
    "VDI.destroy": 0.5,
    "VDI.clone": 1.0,
    "VDI.snapshot": 1.0,
    "VDI.copy": 10.0,
    "VDI.resize": 0.5,
    "VBD.plug": 1.0,
    "VBD.unplug": 1.0,
    "VBD.insert": 0.5,
    "VBD.eject": 0.5,
    "VIF.plug": 0.5,
    "VIF.unplug": 0.5,
    "SR.scan": 1.0,
    "PBD.plug": 2.0,
    "PBD.unplug": 1.0,
    "host.call_plugin": 0.2,
    "network.create": 0.2,
    "pool.join": 30.0,
}

#: Per extra VBD on VM.start (seconds at speed 1.0).
START_PER_VBD = 1.0


def default_latency(method: str, kind: str | None) -> float:
    """Seconds ``method`` (``Class.name``) takes at speed 1.0."""
    value = DEFAULTS.get(method)
    if value is not None:
        return value
    if kind in ("get", "get_by_uuid", "get_by_name_label", "get_all"):
        return CHEAP_READ
    if kind == "get_record":
        return RECORD_READ
    if kind in ("get_all_records", "get_all_records_where"):
        return RECORD_READ  # plus PER_RECORD each, added by the dispatcher
    if kind is not None:
        return CHEAP_WRITE
    return 0.02

"""How instances look to users: built from XAPI records in a constant number
of calls, whatever the number of instances."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from xhost.compute import vmrecord

#: XAPI power state -> Nova instance state.
POWER_TO_STATUS = {"Running": "active", "Halted": "shutoff", "Paused": "paused",
                   "Suspended": "suspended"}
TRANSIENT_STATES = {"building", "deleting", "error"}
LIST_COLUMNS = ("id", "name", "status", "power_state", "image", "flavor", "addresses")
INSTANCES_QUERY = ('field "is_control_domain"="false" and field "is_a_template"="false" '
                   'and field "is_a_snapshot"="false"')


@dataclass
class Server:
    id: str
    name: str
    status: str
    power_state: str
    image: str
    flavor: str
    addresses: str
    vm_ref: str = ""
    faults: list[str] = field(default_factory=list)
    ports: list[dict[str, Any]] = field(default_factory=list)
    disks: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    #: The admin password xhost generated and the guest agent set, given
    #: only by ``Compute.create_server`` (it is stored nowhere).
    admin_password: str | None = field(default=None, repr=False)

    def row(self) -> tuple[Any, ...]:
        return tuple(getattr(self, c) for c in LIST_COLUMNS)


def is_instance(record: dict[str, Any]) -> bool:
    return bool(record.get("other_config", {}).get(vmrecord.TAG_UUID))


def status_of(record: dict[str, Any]) -> str:
    state = record.get("other_config", {}).get(vmrecord.TAG_STATE, "")
    if state in TRANSIENT_STATES:
        return state
    return POWER_TO_STATUS.get(record["power_state"], record["power_state"].lower())


def addresses_of(record: dict[str, Any], guest_metrics: dict[str, Any] | None) -> str:
    """``net=ip, ip; net2=ip`` from the guest's reported addresses (by VIF device)."""
    ports = _ports(record)
    networks = (guest_metrics or {}).get("networks") or {}
    parts = []
    for index, port in enumerate(ports):
        device = str(port.get("device", index))
        ips = [v for k, v in sorted(networks.items())
               if k.split("/")[0] == device and v and k.count("/") >= 1
               and (k.endswith("/ip") or "/ipv4/" in k or "/ipv6/" in k)]
        unique = list(dict.fromkeys(ips))
        if unique:
            parts.append(f"{port.get('network', index)}={', '.join(unique)}")
    return "; ".join(parts)


def _ports(record: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        return json.loads(record.get("other_config", {}).get(vmrecord.TAG_PORTS, "[]"))
    except ValueError:
        return []


def _flavor_name(record: dict[str, Any]) -> str:
    try:
        return json.loads(record["other_config"].get(vmrecord.TAG_FLAVOR, "{}")).get("name", "")
    except ValueError:
        return ""


def from_record(ref: str, record: dict[str, Any], guest_metrics: dict[str, Any] | None) -> Server:
    other = record.get("other_config", {})
    try:
        faults = json.loads(other.get(vmrecord.TAG_FAULTS, "[]"))
    except ValueError:
        faults = []
    return Server(
        id=other.get(vmrecord.TAG_UUID, ""),
        name=record["name_label"],
        status=status_of(record),
        power_state=record["power_state"],
        image=other.get(vmrecord.TAG_IMAGE_NAME, other.get(vmrecord.TAG_IMAGE, "")),
        flavor=_flavor_name(record),
        addresses=addresses_of(record, guest_metrics),
        vm_ref=ref,
        faults=faults,
        ports=_ports(record),
    )

"""The XAPI records xhost creates for an instance (what Nova's vm_utils did).

Everything goes into the one ``VM.create`` record — ``other_config`` tags and
the ``vm-data/`` XenStore keys included — so a spawn makes one call where
Nova made a dozen.
"""
from __future__ import annotations

import json
import re
from typing import Any

from xhost import exception
from xhost.objects import Instance, Port

MiB = 1024 * 1024
#: other_config keys on xhost's VMs (Nova's ``nova_uuid`` kept so VMs made by
#: Nova are recognised).
TAG_UUID = "nova_uuid"
TAG_STATE = "xhost_state"
TAG_IMAGE = "xhost_image"
TAG_IMAGE_NAME = "xhost_image_name"
TAG_FLAVOR = "xhost_flavor"
TAG_FAULTS = "xhost_faults"
TAG_PORTS = "xhost_ports"
#: The image's properties at creation (what Nova kept in system_metadata as
#: ``image_<name>``): later decisions, e.g. whether the instance has a guest
#: agent, do not depend on the image still existing.
TAG_IMAGE_PROPERTIES = "xhost_image_properties"
#: Longest property value kept in TAG_IMAGE_PROPERTIES.
IMAGE_PROPERTY_MAX = 255
#: other_config key on every VDI made for an instance (Nova's name).
VDI_TAG_INSTANCE = "nova_instance_uuid"
VDI_TAG_KIND = "nova_disk_type"

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def image_property(properties: dict[str, Any], name: str, *legacy: str) -> Any:
    """An image property by its current name, else its legacy names."""
    for key in (name, *legacy):
        if key in properties and properties[key] not in (None, ""):
            return properties[key]
    return None


def recorded_properties(properties: dict[str, Any]) -> str:
    """The JSON of TAG_IMAGE_PROPERTIES: scalar properties, short values only."""
    kept = {k: v for k, v in properties.items()
            if isinstance(v, (str, int, float, bool)) and len(str(v)) <= IMAGE_PROPERTY_MAX}
    return json.dumps(kept, sort_keys=True)


def strict_bool(value: Any) -> bool | None:
    """``True``/``False`` for a recognisable boolean, ``None`` otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


class InvalidVmMode(exception.XhostError):
    msg_fmt = "image property vm_mode/hw_vm_mode {value!r} is not one of xen, pv, hvm"


def vm_mode(instance: Instance) -> str:
    """``pv`` or ``hvm``: the image's ``hw_vm_mode``/``vm_mode`` wins; ISO
    images boot HVM; then its os_type (linux: PV, windows: HVM), then its
    format (VHD and AMI: PV)."""
    image = instance.image
    props = image.properties if image else {}
    mode = instance.vm_mode or image_property(props, "hw_vm_mode", "vm_mode")
    if mode:
        mode = str(mode).lower()
        if mode in ("xen", "pv"):
            return "pv"
        if mode == "hvm":
            return "hvm"
        raise InvalidVmMode(value=mode)
    if image and image.disk_format == "iso":
        # An installer CD boots from the emulated CD-ROM (BIOS order "dc"), which
        # only an HVM guest has; PV's pygrub would look for a kernel on the disk.
        return "hvm"
    os_type = (instance.os_type or image_property(props, "os_type") or "").lower()
    if os_type == "windows":
        return "hvm"
    if os_type == "linux":
        return "pv"
    if image and image.disk_format in ("vhd", "ami"):
        return "pv"
    return "hvm"


def port_entry(port: Port) -> dict[str, Any]:
    """How a port is recorded in the VM's ``xhost_ports`` tag and the journal."""
    entry: dict[str, Any] = {"id": port.id, "mac": port.mac, "network": port.network}
    if port.device is not None:
        entry["device"] = port.device
    if port.vlan is not None:
        entry["vlan"] = port.vlan
    if port.hybrid_plug:
        entry["hybrid_plug"] = True
    return entry


def networking_json(port: Port) -> str:
    """Nova's ``vm-data/networking/<mac>`` document for one port."""
    ips = [ip for ip in port.ips if ":" not in str(ip.get("ip", ""))]
    ip6s = [ip for ip in port.ips if ":" in str(ip.get("ip", ""))]
    gateway = next((ip.get("gateway") for ip in ips if ip.get("gateway")), None)
    doc = {
        "label": port.network,
        "mac": port.mac,
        "ips": [{"ip": ip["ip"], "netmask": ip.get("netmask", "255.255.255.0"),
                 "gateway": ip.get("gateway"), "enabled": "1"} for ip in ips],
        "ip6s": [{"ip": ip["ip"], "netmask": ip.get("prefixlen", 64),
                  "gateway": ip.get("gateway"), "enabled": "1"} for ip in ip6s],
        "dns": port.details.get("dns", []),
        "routes": port.details.get("routes", []),
    }
    if gateway:
        doc["gateway"] = gateway
    if port.details.get("broadcast"):
        doc["broadcast"] = port.details["broadcast"]
    return json.dumps(doc, sort_keys=True)


def _metadata_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9\-_@]", "_", key)


def xenstore_data(instance: Instance) -> dict[str, str]:
    data = {"vm-data/allowvssprovider": "false",
            "vm-data/hostname": instance.hostname or instance.name,
            "vm-data/auto-disk-config": str(bool(instance.auto_disk_config))}
    for port in instance.ports:
        data[f"vm-data/networking/{port.mac.replace(':', '').lower()}"] = networking_json(port)
    for key, value in instance.metadata.items():
        data[f"vm-data/user-metadata/{_metadata_key(key)}"] = json.dumps(value)
    return data


def vm_record(instance: Instance, mode: str, kernel: str | None = None,
              ramdisk: str | None = None) -> dict[str, Any]:
    """The ``VM.create`` record of an instance."""
    ram = str(instance.flavor.ram_mb * MiB)
    vcpus = str(instance.flavor.vcpus)
    windows = (instance.os_type or "").lower() == "windows"
    platform = {"acpi": "true", "apic": "true", "pae": "true", "timeoffset": "0",
                "nx": "true" if mode == "hvm" else "false"}
    if windows:
        platform["viridian"] = "true"
    image = instance.image
    other_config = {
        TAG_UUID: instance.uuid,
        TAG_STATE: "building",
        TAG_FLAVOR: json.dumps({"name": instance.flavor.name, "vcpus": instance.flavor.vcpus,
                                "ram_mb": instance.flavor.ram_mb,
                                "root_gb": instance.flavor.root_gb,
                                "ephemeral_gb": instance.flavor.ephemeral_gb,
                                "swap_mb": instance.flavor.swap_mb}),
        TAG_PORTS: json.dumps([port_entry(p) for p in instance.ports]),
    }
    if image is not None:
        other_config[TAG_IMAGE] = image.id
        other_config[TAG_IMAGE_NAME] = image.name or image.id
        other_config[TAG_IMAGE_PROPERTIES] = recorded_properties(image.properties)
    record: dict[str, Any] = {
        "name_label": instance.name,
        "name_description": f"xhost instance {instance.uuid}",
        "user_version": "1",
        "is_a_template": False,
        "affinity": "OpaqueRef:NULL",
        "memory_static_min": "0",
        "memory_static_max": ram,
        "memory_dynamic_min": ram,
        "memory_dynamic_max": ram,
        "VCPUs_max": vcpus,
        "VCPUs_at_startup": vcpus,
        "VCPUs_params": {},
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart",
        "actions_after_crash": "destroy",
        "PV_bootloader": "",
        "PV_kernel": "",
        "PV_ramdisk": "",
        "PV_args": "",
        "PV_bootloader_args": "",
        "PV_legacy_args": "",
        "HVM_boot_policy": "",
        "HVM_boot_params": {},
        "platform": platform,
        "PCI_bus": "",
        "other_config": other_config,
        "recommendations": "",
        "xenstore_data": xenstore_data(instance),
    }
    if mode == "pv":
        record["domain_type"] = "pv"
        if kernel:
            record["PV_kernel"] = kernel
            record["PV_ramdisk"] = ramdisk or ""
            record["PV_args"] = "root=/dev/xvda1"
        else:
            record["PV_bootloader"] = "pygrub"
    else:
        record["domain_type"] = "hvm"
        record["HVM_boot_policy"] = "BIOS order"
        record["HVM_boot_params"] = {"order": "dc"}
    return record

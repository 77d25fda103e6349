"""The files of an OpenStack ``config-2`` config drive for an instance."""
from __future__ import annotations

import json

from xhost.objects import Instance


def files_for(instance: Instance) -> dict[str, bytes]:
    """Path inside the drive -> contents (the storage backend makes the ISO)."""
    meta = {
        "uuid": instance.uuid,
        "name": instance.name,
        "hostname": instance.hostname or instance.name,
        "launch_index": 0,
        "availability_zone": "nova",
        "meta": dict(instance.metadata),
        "files": [],
    }
    if instance.key_data:
        meta["public_keys"] = {"default": instance.key_data}
        meta["keys"] = [{"name": "default", "type": "ssh", "data": instance.key_data}]
    if instance.admin_password:
        meta["admin_pass"] = instance.admin_password
    files: dict[str, bytes] = {}
    for index, (path, contents) in enumerate(sorted(instance.files.items())):
        content_path = f"/content/{index:04d}"
        meta["files"].append({"path": path, "content_path": content_path})
        files[f"openstack{content_path}"] = contents
    network = {"links": [], "networks": [], "services": []}
    for index, port in enumerate(instance.ports):
        link = f"tap{port.id[:11]}"
        network["links"].append({"id": link, "type": "phy", "ethernet_mac_address": port.mac,
                                 "mtu": port.mtu, "vif_id": port.id})
        for ip in port.ips:
            network["networks"].append({
                "id": f"network{index}", "link": link, "type": "ipv4",
                "ip_address": ip["ip"], "netmask": ip.get("netmask", "255.255.255.0"),
                "routes": ([{"network": "0.0.0.0", "netmask": "0.0.0.0",
                             "gateway": ip["gateway"]}] if ip.get("gateway") else []),
                "network_id": port.network})
        if not port.ips:
            network["networks"].append({"id": f"network{index}", "link": link, "type": "ipv4_dhcp",
                                        "network_id": port.network})
    for version in ("latest", "2013-10-17"):
        files[f"openstack/{version}/meta_data.json"] = json.dumps(meta, sort_keys=True).encode()
        files[f"openstack/{version}/network_data.json"] = json.dumps(network, sort_keys=True).encode()
        files[f"openstack/{version}/vendor_data.json"] = b"{}"
        if instance.user_data is not None:
            files[f"openstack/{version}/user_data"] = instance.user_data
    return files

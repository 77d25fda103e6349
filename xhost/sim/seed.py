"""Seed state: a freshly installed XCP-ng 8.3 host (API 2.21).

The pool of one host has ``default_SR`` set to the local ``ext`` SR, the host
carries XCP-ng 8.3's ``software_version`` (``product_version`` 8.3.0,
``platform_version`` 3.4.0, ``network_backend``), a control domain, the usual
SRs (Local storage, XCP-ng Tools ISO library, DVD drives, Removable
storage), ``xenbr0`` on ``eth0`` plus the host-internal management network,
the SM driver catalogue, and the stock templates with the ``other_config``
(``install-methods``, ``disks`` provisioning XML, ``linux_template``,
``default_template``) and ``recommendations`` XML that real templates have.
"""
from __future__ import annotations

import hashlib
import uuid as uuidlib
from typing import TYPE_CHECKING, Any

from . import lifecycle
from .xapi_types import now_datetime

if TYPE_CHECKING:
    from .simulator import SimHost, Simulator

GiB = 1 << 30
MiB = 1 << 20

SOFTWARE_VERSION = {
    "product_version": "8.3.0",
    "product_version_text": "8.3",
    "product_version_text_short": "8.3",
    "platform_name": "XCP",
    "platform_version": "3.4.0",
    "product_brand": "XCP-ng",
    "build_number": "cloud",
    "git_id": "0",
    "hostname": "localhost",
    "date": "2024-10-02",
    "dbv": "2024.0917",
    "is_preview_release": "false",
    "xapi": "24.19",
    "xapi_build": "24.19.2",
    "xen": "4.17.5-3",
    "linux": "4.19.0+1",
    "xencenter_min": "2.21",
    "xencenter_max": "2.21",
    "db_schema": "5.780",
}

CPU_FLAGS = ("fpu vme de pse tsc msr pae mce cx8 apic sep mtrr mca cmov pat clflush acpi mmx "
             "fxsr sse sse2 ht syscall nx rdtscp lm constant_tsc rep_good nopl nonstop_tsc "
             "cpuid pni pclmulqdq monitor est ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes "
             "xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch fsgsbase bmi1 avx2 "
             "bmi2 erms rdseed adx clflushopt xsaveopt xsavec xgetbv1")

#: name_label -> (reference_label, family, min memory, vcpus_max, uefi, description)
TEMPLATES: list[dict[str, Any]] = [
    {"name": "Other install media", "ref": "other-install-media", "kind": "other",
     "min_memory": 128 * MiB, "max_memory": 128 * GiB, "disk": 0,
     "description": "Template which allows VM installation from install media"},
    {"name": "Generic Linux BIOS", "ref": "generic-linux-bios", "kind": "linux",
     "min_memory": 512 * MiB, "disk": 10 * GiB},
    {"name": "Generic Linux UEFI", "ref": "generic-linux-uefi", "kind": "linux-uefi",
     "min_memory": 512 * MiB, "disk": 10 * GiB},
    {"name": "Debian Bullseye 11", "ref": "debian-11", "kind": "linux",
     "min_memory": 512 * MiB, "disk": 10 * GiB},
    {"name": "Debian Bookworm 12", "ref": "debian-12", "kind": "linux-uefi",
     "min_memory": 1 * GiB, "disk": 10 * GiB},
    {"name": "Ubuntu Focal Fossa 20.04", "ref": "ubuntu-20.04", "kind": "linux",
     "min_memory": 1 * GiB, "disk": 10 * GiB},
    {"name": "Ubuntu Jammy Jellyfish 22.04", "ref": "ubuntu-22.04", "kind": "linux-uefi",
     "min_memory": 1 * GiB, "disk": 10 * GiB},
    {"name": "Ubuntu Noble Numbat 24.04", "ref": "ubuntu-24.04", "kind": "linux-uefi",
     "min_memory": 1 * GiB, "disk": 10 * GiB},
    {"name": "CentOS Stream 9", "ref": "centos-9", "kind": "linux-uefi",
     "min_memory": 1 * GiB, "disk": 10 * GiB},
    {"name": "Rocky Linux 9", "ref": "rocky-9", "kind": "linux-uefi",
     "min_memory": 1 * GiB, "disk": 10 * GiB},
    {"name": "AlmaLinux 9", "ref": "alma-9", "kind": "linux-uefi",
     "min_memory": 1 * GiB, "disk": 10 * GiB},
    {"name": "Red Hat Enterprise Linux 9", "ref": "rhel-9", "kind": "linux-uefi",
     "min_memory": 1 * GiB, "disk": 10 * GiB},
    {"name": "Windows 10 (64-bit)", "ref": "windows-10-64bit", "kind": "windows",
     "min_memory": 2 * GiB, "disk": 32 * GiB},
    {"name": "Windows 11", "ref": "windows-11", "kind": "windows-uefi",
     "min_memory": 4 * GiB, "disk": 64 * GiB},
    {"name": "Windows Server 2019 (64-bit)", "ref": "windows-server-2019-64bit",
     "kind": "windows", "min_memory": 2 * GiB, "disk": 32 * GiB},
    {"name": "Windows Server 2022 (64-bit)", "ref": "windows-server-2022-64bit",
     "kind": "windows-uefi", "min_memory": 2 * GiB, "disk": 32 * GiB},
]

LINUX_DESCRIPTION = (
    "To use this template from the CLI, install your VM using vm-install, then set "
    "other-config-install-repository to the path to your network repository, e.g. "
    "http://<server>/<path> or nfs:server:/<path>")


def _uuid_for(*parts: str) -> str:
    """Stable uuids for seeded objects (same names, same uuids on every seed)."""
    digest = hashlib.sha1("/".join(parts).encode()).hexdigest()
    return str(uuidlib.UUID(digest[:32], version=5))


def _add(sim: Simulator, cls: str, **values: Any) -> str:
    spec = sim.schema.classes[cls]
    unknown = set(values) - set(spec.fields)
    if unknown:
        raise KeyError(f"seed: {cls} has no fields {sorted(unknown)}")
    return sim.db.add(cls, spec.new_record(values))


def _restrictions(max_memory: int, vcpus_max: int, vifs: int = 7, vbds: int = 255,
                  uefi: bool = False) -> str:
    parts = [f'<restriction field="memory-static-max" max="{max_memory}" />',
             f'<restriction field="vcpus-max" max="{vcpus_max}" />',
             '<restriction field="has-vendor-device" value="false" />',
             '<restriction field="allow-gpu-passthrough" value="1" />',
             '<restriction field="allow-vgpu" value="1" />']
    if uefi:
        parts += ['<restriction field="supports-uefi" value="yes" />',
                  '<restriction field="supports-secure-boot" value="yes" />']
    parts += [f'<restriction max="{vbds}" property="number-of-vbds" />',
              f'<restriction max="{vifs}" property="number-of-vifs" />']
    return "<restrictions>" + "".join(parts) + "</restrictions>"


def template_record(t: dict[str, Any]) -> dict[str, Any]:
    kind = t["kind"]
    windows = kind.startswith("windows")
    uefi = kind.endswith("uefi")
    min_mem = t["min_memory"]
    max_mem = t.get("max_memory", 1536 * GiB if not windows else 1536 * GiB)
    platform = {"nx": "true", "acpi": "1", "apic": "true", "pae": "true", "hpet": "true",
                "viridian": "true" if windows or kind == "other" else "false",
                "vga": "std", "videoram": "8"}
    if kind != "other":
        platform["device_id"] = "0002" if windows else "0001"
    if uefi:
        platform["secureboot"] = "true" if windows else "auto"
    else:
        platform["secureboot"] = "false"
        platform["device-model"] = "qemu-upstream-compat"
    if windows:
        platform.update({"viridian_reference_tsc": "true",
                         "viridian_time_ref_count": "true", "viridian_apic_assist": "true"})
    boot_params = {"order": "dc" if kind == "other" else "cdn"}
    if uefi:
        boot_params["firmware"] = "uefi"
    other_config: dict[str, str] = {
        "default_template": "true",
        "mac_seed": _uuid_for("template-mac-seed", t["ref"]),
        "install-methods": "cdrom" if kind in ("other",) or windows else "cdrom,nfs,http,ftp",
        "base_template_name": t["name"],
    }
    if kind.startswith("linux"):
        other_config["linux_template"] = "true"
    if t.get("disk"):
        other_config["disks"] = (
            '<provision><disk bootable="true" device="0" size="%d" sr="" type="system"/>'
            "</provision>" % t["disk"])
    vcpus_max = 64 if not kind == "other" else 32
    description = t.get("description") or (
        "Clones of this template will automatically provision their storage when first "
        "booted and then reconfigure themselves with the optimal settings for the guest."
        if windows else LINUX_DESCRIPTION)
    return {
        "uuid": _uuid_for("template", t["ref"]),
        "name_label": t["name"],
        "name_description": description,
        "user_version": 1,
        "is_a_template": True,
        "is_default_template": True,
        "memory_static_min": min_mem,
        "memory_static_max": min_mem * 2 if kind != "other" else min_mem,
        "memory_dynamic_min": min_mem * 2 if kind != "other" else min_mem,
        "memory_dynamic_max": min_mem * 2 if kind != "other" else min_mem,
        "VCPUs_max": 2 if windows else 1,
        "VCPUs_at_startup": 2 if windows else 1,
        "actions_after_shutdown": "destroy",
        "actions_after_reboot": "restart",
        "actions_after_crash": "restart",
        "HVM_boot_policy": "BIOS order",
        "HVM_boot_params": boot_params,
        "HVM_shadow_multiplier": 1.0,
        "platform": platform,
        "other_config": other_config,
        "recommendations": _restrictions(max_mem, vcpus_max, uefi=uefi),
        "reference_label": t["ref"],
        "domain_type": "hvm",
        "domid": -1,
        "hardware_platform_version": 0,
        "has_vendor_device": False,
        "generation_id": "",
    }


def _sr_operations(sim: Simulator, content_type: str) -> list[str]:
    ops = sim.schema.enums["storage_operations"]
    if content_type == "user":
        return list(ops)
    return [op for op in ops if op in ("vdi_introduce", "vdi_destroy", "forget", "scan",
                                       "plug", "unplug", "update", "pbd_create",
                                       "pbd_destroy")]


def seed_pool(sim: Simulator) -> None:
    db = sim.db
    hostname = sim.host_name
    host_uuid = str(uuidlib.uuid4())
    now = now_datetime()
    memory_total = sim.memory_gib * GiB
    dom0_memory = min(8 * GiB, max(2 * GiB, memory_total // 16))

    metrics = _add(sim, "host_metrics", memory_total=memory_total,
                   memory_free=memory_total - dom0_memory, live=True, last_updated=now)
    sv = dict(SOFTWARE_VERSION, hostname=hostname, network_backend=sim.network_backend)
    cpu_info = {
        "cpu_count": str(sim.cpus), "socket_count": "1", "threads_per_core": "2",
        "vendor": "GenuineIntel", "speed": "2394.374",
        "modelname": "Intel(R) Xeon(R) Silver 4214 CPU @ 2.20GHz", "family": "6",
        "model": "85", "stepping": "7", "flags": CPU_FLAGS,
        "features_pv": "1fc9cbf5-f6f83203-2991cbf5-00000123-0000000f-019c0fab-00000008-"
                       "00000000-00000000-00000000-00000000-00000000",
        "features_hvm": "1fcbfbff-f7fa3223-2d93fbff-00000523-0000000f-01bc0fbb-00000008-"
                        "00000000-00000000-00000000-00000000-00000000",
        "features_pv_host": "1fc9cbf5-f6f83203-2991cbf5-00000123-0000000f-019c0fab-"
                            "00000008-00000000-00000000-00000000-00000000-00000000",
        "features_hvm_host": "1fcbfbff-f7fa3223-2d93fbff-00000523-0000000f-01bc0fbb-"
                             "00000008-00000000-00000000-00000000-00000000-00000000",
    }
    host = _add(
        sim, "host", uuid=host_uuid, name_label=hostname,
        name_description="Default install", hostname=hostname,
        address=sim.public_address, enabled=True,
        API_version_major=2, API_version_minor=21, API_version_vendor="XenSource",
        API_version_vendor_implementation={}, software_version=sv,
        capabilities=["xen-3.0-x86_64", "hvm-3.0-x86_32", "hvm-3.0-x86_32p",
                      "hvm-3.0-x86_64", ""],
        cpu_configuration={}, sched_policy="credit",
        supported_bootloaders=["pygrub", "eliloader"], logging={}, cpu_info=cpu_info,
        other_config={"agent_start_time": "%.0f." % __import__("time").time(),
                      "boot_time": "%.0f." % __import__("time").time(),
                      "iscsi_iqn": f"iqn.2024-10.com.example:{host_uuid[:8]}"},
        metrics=metrics, license_params={"sku_type": "xcp-ng", "expiry": "30000101T00:00:00Z",
                                         "restrict_vswitch_controller": "false"},
        edition="xcp-ng", license_server={"address": "localhost", "port": "27000"},
        power_on_mode="", memory_overhead=0, bios_strings={
            "bios-vendor": "Xen", "bios-version": "", "system-manufacturer": "Xen",
            "system-product-name": "HVM domU", "system-version": "",
            "system-serial-number": "", "hp-rombios": "", "oem-1": "Xen",
            "oem-2": "MS_VM_CERT/SHA1/bdbeb6e0a816d43fa6d3fe8aaef04c2bad9d3e3d"},
        virtual_hardware_platform_versions=[0, 1, 2], ssl_legacy=False,
        iscsi_iqn=f"iqn.2024-10.com.example:{host_uuid[:8]}",
        tls_verification_enabled=True, https_only=False,
        editions=["xcp-ng"], latest_synced_updates_applied="unknown")
    for i in range(sim.cpus):
        _add(sim, "host_cpu", host=host, number=i, vendor="GenuineIntel", speed=2394,
             modelname=cpu_info["modelname"], family=6, model=85, stepping="7",
             flags=CPU_FLAGS, features="", utilisation=0.01)

    # -- storage -------------------------------------------------------------------
    for sm_type, name, desc, _caps in (
            ("ext", "Local EXT3 VHD", "SR plugin representing disks as VHD files stored "
             "on a local EXT3 filesystem, created inside an LVM volume", True),
            ("nfs", "NFS VHD", "SR plugin which stores disks as VHD files on a remote "
             "NFS filesystem", True),
            ("lvm", "Local LVM", "SR plugin which represents disks as VHD files on "
             "Logical Volumes within a locally-attached Volume Group", True),
            ("lvmoiscsi", "LVM over iSCSI", "SR plugin which represents disks as "
             "Logical Volumes within a Volume Group created on an iSCSI LUN", True),
            ("iso", "ISO", "Handles CD images stored as files in iso format", False),
            ("udev", "Local Devices", "SR plugin which represents removable media "
             "and block devices", False),
            ("file", "Local Path VHD", "SR plugin which represents disks as VHD "
             "files stored on a local path", True)):
        driver = sim.storage.for_type(sm_type)
        _add(sim, "SM", name_label=name, name_description=desc, type=sm_type,
             vendor="Citrix Systems Inc" if sm_type != "file" else "XCP-ng",
             copyright="(C) 2008 Citrix Systems Inc", version="1.0",
             required_api_version="1.0",
             configuration={"device": "local device path (required) (e.g. /dev/sda3)"}
             if sm_type in ("ext", "lvm") else {},
             capabilities=list(driver.capabilities) if driver else [],
             features={c: "1" for c in (driver.capabilities if driver else ())},
             driver_filename=f"/opt/xensource/sm/{sm_type.upper()}SR",
             required_cluster_stack=[])

    def add_sr(name: str, desc: str, sr_type: str, content: str, size: int, shared: bool,
               device_config: dict[str, str], other: dict[str, str],
               sm_config: dict[str, str]) -> str:
        sr = _add(sim, "SR", uuid=str(uuidlib.uuid4()), name_label=name,
                  name_description=desc, type=sr_type, content_type=content,
                  physical_size=size, physical_utilisation=0, virtual_allocation=0,
                  shared=shared, other_config=other, sm_config=sm_config,
                  allowed_operations=_sr_operations(sim, content),
                  clustered=False, is_tools_sr=(name == "XCP-ng Tools"))
        _add(sim, "PBD", host=host, SR=sr, device_config=device_config,
             currently_attached=True, other_config={})
        return sr

    local_sr = add_sr("Local storage", f"Local storage on {hostname}", "ext", "user",
                      500 * GiB, False, {"device": "/dev/sda3"},
                      {"i18n-original-value-name_label": "Local storage",
                       "i18n-key": "local-storage"}, {"devserial": "scsi-SATA_sim-disk"})
    tools_sr = add_sr("XCP-ng Tools", "XCP-ng Windows PV drivers and Linux guest agent",
                      "iso", "iso", 64 * MiB, True,
                      {"location": "/opt/xensource/packages/iso", "legacy_mode": "true"},
                      {"xenserver_tools_sr": "true",
                       "i18n-original-value-name_label": "XCP-ng Tools",
                       "i18n-key": "xenserver-tools"}, {})
    add_sr("DVD drives", "Physical DVD drives", "udev", "iso", 0, False,
           {"location": "/dev/xapi/cd"},
           {"i18n-original-value-name_label": "DVD drives",
            "i18n-original-value-name_description": "Physical DVD drives",
            "i18n-key": "local-hotplug-cd"}, {"type": "cd"})
    add_sr("Removable storage", "", "udev", "disk", 0, False,
           {"location": "/dev/xapi/block"},
           {"i18n-original-value-name_label": "Removable storage",
            "i18n-key": "local-hotplug-disk"}, {"type": "block"})
    _add(sim, "VDI", name_label="guest-tools.iso", name_description="XCP-ng VM Tools",
         SR=tools_sr, virtual_size=53_739_520, physical_utilisation=53_739_520,
         type="user", sharable=True, read_only=True, managed=True,
         location="guest-tools.iso", sm_config={}, other_config={})
    sr_update(sim, tools_sr)

    # -- network -------------------------------------------------------------------
    xenbr0 = ""
    for index in range(2):
        mac = "52:54:00:%02x:" % index + ":".join(
            host_uuid.replace("-", "")[i:i + 2] for i in (0, 2))
        net = _add(sim, "network", name_label=f"Pool-wide network associated with eth{index}",
                   name_description="", bridge=f"xenbr{index}", MTU=1500, managed=True,
                   other_config={}, default_locking_mode="unlocked")
        xenbr0 = xenbr0 or net
        pif_metrics = _add(sim, "PIF_metrics", carrier=True, vendor_id="8086",
                           vendor_name="Intel Corporation", device_id="10fb",
                           device_name="82599ES 10-Gigabit SFI/SFP+ Network Connection",
                           speed=10000, duplex=True, pci_bus_path=f"0000:03:00.{index}",
                           other_config={}, last_updated=now)
        management = index == 0
        _add(sim, "PIF", device=f"eth{index}", network=net, host=host, MAC=mac, MTU=1500,
             VLAN=-1, metrics=pif_metrics, physical=True, currently_attached=management,
             ip_configuration_mode="DHCP" if management else "None",
             IP=sim.public_address if management and ":" not in sim.public_address else "",
             netmask="255.255.255.0" if management else "", gateway="", DNS="",
             management=management, other_config={}, disallow_unplug=False,
             ipv6_configuration_mode="None", primary_address_type="IPv4", managed=True,
             properties={"gro": "on"}, capabilities=["fcoe"], igmp_snooping_status="unknown")
    _add(sim, "network", name_label="Host internal management network",
         name_description="Network on which guests will be assigned a private link-local "
                          "IP address which can be used to talk XenAPI",
         bridge="xenapi", MTU=1500, managed=True, default_locking_mode="unlocked",
         other_config={"is_guest_installer_network": "true",
                       "is_host_internal_management_network": "true",
                       "ip_begin": "169.254.0.1", "ip_end": "169.254.255.254",
                       "netmask": "255.255.0.0"})

    # -- control domain ------------------------------------------------------------
    dom0_metrics = _add(sim, "VM_metrics", memory_actual=dom0_memory, VCPUs_number=sim.cpus,
                        VCPUs_utilisation={}, VCPUs_CPU={}, VCPUs_params={}, VCPUs_flags={},
                        state=[], start_time=now, install_time=now, last_updated=now,
                        other_config={}, hvm=False, nested_virt=False, nomigrate=False,
                        current_domain_type="pv")
    dom0 = _add(
        sim, "VM", name_label=f"Control domain on host: {hostname}",
        name_description="The domain which manages physical devices and manages other "
                         "domains",
        power_state="Running", user_version=1, is_a_template=False, resident_on=host,
        affinity=host, memory_overhead=0, memory_target=dom0_memory,
        memory_static_max=dom0_memory, memory_dynamic_max=dom0_memory,
        memory_dynamic_min=dom0_memory, memory_static_min=dom0_memory,
        VCPUs_params={}, VCPUs_max=sim.cpus, VCPUs_at_startup=sim.cpus,
        actions_after_shutdown="destroy", actions_after_reboot="destroy",
        actions_after_crash="destroy", PV_bootloader="", PV_kernel="", PV_ramdisk="",
        PV_args="", PV_bootloader_args="", PV_legacy_args="", HVM_boot_policy="",
        HVM_boot_params={}, platform={}, PCI_bus="", other_config={
            "storage_driver_domain": "", "is_system_domain": "true", "perfmon": ""},
        domid=0, domarch="x64", is_control_domain=True, metrics=dom0_metrics,
        recommendations="", domain_type="pv", hardware_platform_version=0)
    vm_other = dict(sim.db.get("VM", dom0)["other_config"], storage_driver_domain=dom0)
    sim.db.update("VM", dom0, other_config=vm_other)
    _add(sim, "console", protocol="rfb", location="", VM=dom0, other_config={})
    sim.db.update("host", host, control_domain=dom0)

    # -- pool ----------------------------------------------------------------------
    _add(sim, "pool", name_label="", name_description="", master=host, default_SR=local_sr,
         suspend_image_SR=local_sr, crash_dump_SR=local_sr,
         other_config={"memory-ratio-hvm": "0.25", "memory-ratio-pv": "0.25",
                       "auto_poweron": "false"},
         ha_enabled=False, restrictions={"restrict_vswitch_controller": "false",
                                         "restrict_lab": "false", "restrict_pooling": "false",
                                         "restrict_xen_motion": "false", "platform_name": "XCP",
                                         "platform_version": "3.4.0",
                                         "product_version": "8.3.0"},
         cpu_info={"cpu_count": str(sim.cpus), "socket_count": "1",
                   "vendor": "GenuineIntel", "features_pv": cpu_info["features_pv"],
                   "features_hvm": cpu_info["features_hvm"],
                   "features_pv_host": cpu_info["features_pv_host"],
                   "features_hvm_host": cpu_info["features_hvm_host"]},
         migration_compression=False, coordinator_bias=True, tls_verification_enabled=True,
         telemetry_frequency="weekly", update_sync_frequency="weekly")

    # -- templates -----------------------------------------------------------------
    for t in TEMPLATES:
        ref = _add(sim, "VM", **template_record(t))
        lifecycle.update_allowed_operations(db, ref)
    lifecycle.update_allowed_operations(db, dom0)
    sr_update(sim, local_sr)
    from . import storage_setup

    storage_setup.seed(sim, host, local_sr)


def sr_update(sim: Simulator, sr: str) -> None:
    """Recompute an SR's utilisation figures from its VDIs."""
    db = sim.db
    with db.lock:
        rec = db.get("SR", sr)
        vdis = [db.find("VDI", v) for v in rec["VDIs"]]
        vdis = [v for v in vdis if v is not None]
        physical = sum(v["physical_utilisation"] for v in vdis)
        # Hidden "base copy" VDIs (managed=false) take space but no allocation.
        virtual = sum(v["virtual_size"] for v in vdis if v["managed"])
        if rec["physical_utilisation"] != physical or rec["virtual_allocation"] != virtual:
            db.update("SR", sr, physical_utilisation=physical, virtual_allocation=virtual)


def master_host(sim: Simulator) -> str:
    pools = sim.db.all("pool")
    if not pools:
        raise RuntimeError("the state directory has no pool object; it is not a simulator "
                           "state directory")
    return next(iter(pools.values()))["master"]


def update_host_address(sim: Simulator, host: SimHost) -> None:
    """The host's address follows where it is served from."""
    rec = sim.db.get("host", host.host_ref)
    if rec["address"] != host.public_address:
        sim.db.update("host", host.host_ref, address=host.public_address)
    for ref, con in sim.db.all("console").items():
        loc = f"https://{host.public_address}/console?ref={ref}"
        if con["location"] != loc and con["VM"] in rec["resident_VMs"]:
            sim.db.update("console", ref, location=loc)


def after_restart(sim: Simulator) -> None:
    """What xapi does on start: clear current operations, recompute allowed ops."""
    db = sim.db
    for cls in ("VM", "VDI", "VBD", "VIF", "SR", "host", "pool", "PBD"):
        for ref, rec in db.all(cls).items():
            if rec.get("current_operations"):
                db.update(cls, ref, current_operations={})
    for ref in db.refs("VM"):
        lifecycle.update_allowed_operations(db, ref)

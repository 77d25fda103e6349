"""Plain data objects passed to and returned from hooks.

They carry no behaviour and no XAPI session, so plugins can build and inspect
them freely; fields are added over time (never removed or renamed), so
plugins should construct them with keyword arguments.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Flavor:
    """Size of an instance."""

    name: str
    vcpus: int
    ram_mb: int
    root_gb: int
    ephemeral_gb: int = 0
    swap_mb: int = 0
    extra_specs: dict[str, str] = field(default_factory=dict)


@dataclass
class ImageMeta:
    """An image as the image service describes it.

    ``properties`` holds free-form image properties (``os_type``,
    ``auto_disk_config``, ``vm_mode``, ``img_use_agent`` / ``xenapi_use_agent``
    and the other ``hw_``/``img_`` names) exactly as the service stores them.
    """

    id: str
    name: str = ""
    status: str = "queued"
    disk_format: str | None = None
    container_format: str | None = None
    size: int | None = None
    virtual_size: int | None = None
    checksum: str | None = None
    os_hash_algo: str | None = None
    os_hash_value: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ImageLocation:
    """Where the bytes of an image can be fetched or stored over HTTP(S).

    Given to code that moves bytes itself without going through the image
    service plugin (a dom0 script, for the ``direct_vhd`` handler).
    ``headers`` may hold credentials: never log them.
    """

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    verify_tls: bool = True
    ca_file: str | None = None
    #: Called once the transfer is over (done, failed or never started): an
    #: image service serving the bytes itself stops serving them.
    revoke: Callable[[], None] | None = field(default=None, repr=False, compare=False)


@dataclass
class ImageHandlerCapabilities:
    """What an image handler can move, and where to."""

    #: ``disk_format`` values it downloads (``vhd``, ``raw``, ``iso``...).
    disk_formats: frozenset[str]
    #: ``container_format`` values it downloads (``bare``, ``ovf``, ``tgz``...).
    container_formats: frozenset[str]
    #: SR types it can write into (``ext``, ``nfs``, ``lvm``...); ``None`` = any.
    sr_types: frozenset[str] | None
    #: ``(disk_format, container_format)`` it produces on upload.
    upload_format: tuple[str, str]


@dataclass
class Disk:
    """A virtual disk (VDI) made for an instance."""

    vdi_ref: str
    #: ``""`` when its maker did not need to read it (the VDI's record has it).
    vdi_uuid: str
    #: ``root``, ``ephemeral``, ``swap``, ``config_drive``, ``kernel``,
    #: ``ramdisk``, ``iso``, ``volume``.
    kind: str
    #: XAPI ``VBD.userdevice`` it should be attached at ("0", "2", "3"...).
    userdevice: str | None = None
    bootable: bool = False
    read_only: bool = False
    vbd_type: str = "Disk"
    #: File in dom0 (kernel/ramdisk images only).
    dom0_path: str | None = None
    #: Size of the disk in bytes, when its maker knows it (saves reading it back).
    virtual_size: int | None = None


@dataclass
class DownloadedImage:
    """Result of an image download: the disks made from it, keyed by kind."""

    disks: dict[str, Disk]
    image: ImageMeta

    @property
    def root(self) -> Disk | None:
        return self.disks.get("root")


@dataclass
class StorageCapabilities:
    """What the storage backend can do with a given SR."""

    sr_ref: str
    sr_type: str
    #: VHD files of VDIs are reachable from dom0 (file-based SR: ext, nfs).
    vhd_files: bool
    copy_on_write: bool
    shared: bool
    free_bytes: int | None = None


@dataclass
class Port:
    """One network interface of an instance (a Neutron port, in Nova terms)."""

    id: str
    mac: str
    #: Name of the network the port is on (a XAPI network name_label or
    #: a backend-specific name).
    network: str
    device: str | None = None
    mtu: int = 1500
    vlan: int | None = None
    ips: list[dict[str, Any]] = field(default_factory=list)
    #: Apply security groups through Nova's hybrid qbr/qvb/qvo plumbing.
    hybrid_plug: bool = False
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Instance:
    """A virtual machine as xhost knows it."""

    uuid: str
    name: str
    flavor: Flavor
    image: ImageMeta | None = None
    ports: list[Port] = field(default_factory=list)
    #: ``building``, ``active``, ``shutoff``, ``paused``, ``suspended``,
    #: ``deleting``, ``error`` (Nova's vocabulary).
    state: str = "building"
    vm_mode: str | None = None
    os_type: str | None = None
    auto_disk_config: bool = False
    config_drive: bool = False
    user_data: bytes | None = None
    key_data: str | None = None
    admin_password: str | None = field(default=None, repr=False)
    metadata: dict[str, str] = field(default_factory=dict)
    #: Files to inject (guest path -> bytes).
    files: dict[str, bytes] = field(default_factory=dict, repr=False)
    hostname: str | None = None
    vm_ref: str | None = None
    #: Problems met after the instance was created that did not fail it
    #: (e.g. guest agent errors), newest last.
    faults: list[str] = field(default_factory=list)


@dataclass
class AgentResult:
    """What a guest agent answered."""

    returncode: str
    message: str

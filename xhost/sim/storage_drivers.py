"""SR drivers: what the VDI and SR behaviours call to do storage work.

The behaviours in :mod:`xhost.sim.behaviours.storage` own the XAPI semantics
(records, errors, operations, relations); a driver owns the *content*.
:class:`RecordOnlyDriver` keeps sizes and chain metadata but no bytes; the
simulator replaces it with content-keeping drivers for ``ext``/``file``/``nfs``
(VHD files), ``lvm`` (raw volumes) and ``iso`` through
:meth:`StorageDrivers.register` (see :mod:`xhost.sim.storage_setup`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ApiError

if TYPE_CHECKING:
    from .dispatch import CallContext
    from .simulator import Simulator

#: Metadata a dynamic VHD needs before any data block (footer, header, BAT).
VHD_OVERHEAD = 3 * 512 + 4096


class SRDriver:
    """Base driver: every hook has the record-only behaviour."""

    #: SM capabilities advertised in the SM record for this type.
    capabilities: tuple[str, ...] = ()
    thin = True
    vdi_type = "vhd"

    def sr_attach(self, ctx: CallContext, sr: str) -> None:
        """PBD.plug."""

    def sr_detach(self, ctx: CallContext, sr: str) -> None:
        """PBD.unplug."""

    def sr_scan(self, ctx: CallContext, sr: str) -> None:
        """SR.scan: reconcile the VDI records with the storage."""

    def vdi_create(self, ctx: CallContext, sr: str, vdi: str, record: dict[str, Any]
                   ) -> dict[str, Any]:
        """Allocate a new disk; returns field updates for its record."""
        size = record["virtual_size"]
        return {"physical_utilisation": VHD_OVERHEAD if self.thin else size,
                "location": record["uuid"],
                "sm_config": dict(record["sm_config"], vdi_type=self.vdi_type)}

    def vdi_destroy(self, ctx: CallContext, sr: str, vdi: str, record: dict[str, Any]) -> None:
        """Free a disk."""

    def vdi_clone(self, ctx: CallContext, sr: str, src: str, src_record: dict[str, Any],
                  new: str, new_record: dict[str, Any], *, snapshot: bool,
                  driver_params: dict[str, str] | None = None) -> dict[str, Any]:
        """Make ``new`` a copy-on-write child of ``src``; returns updates for ``new``."""
        sm = dict(new_record["sm_config"], vdi_type=self.vdi_type)
        if src_record["sm_config"].get("vhd-parent") is not None or self.vdi_type == "vhd":
            sm["vhd-parent"] = src_record["uuid"]
        return {"physical_utilisation": VHD_OVERHEAD if self.thin
                else src_record["virtual_size"],
                "location": new_record["uuid"], "sm_config": sm}

    def vdi_copy(self, ctx: CallContext, src: str, src_record: dict[str, Any], dst: str,
                 dst_record: dict[str, Any], base: str = "OpaqueRef:NULL") -> dict[str, Any]:
        """Copy the content of ``src`` (or what differs from ``base``) into ``dst``
        (which may be in another SR)."""
        return {"physical_utilisation": src_record["physical_utilisation"]}

    def vdi_resize(self, ctx: CallContext, sr: str, vdi: str, record: dict[str, Any],
                   new_size: int) -> dict[str, Any]:
        return {"virtual_size": new_size,
                "physical_utilisation": record["physical_utilisation"] if self.thin
                else new_size}

    def vdi_attach(self, ctx: CallContext, vdi: str, writable: bool,
                   vbd: str | None = None) -> None:
        """VBD ``vbd`` of ``vdi`` is being plugged (VM start or hotplug)."""

    def vdi_detach(self, ctx: CallContext, vdi: str, vbd: str | None = None) -> None:
        """VBD ``vbd`` of ``vdi`` is being unplugged."""


class RecordOnlyDriver(SRDriver):
    capabilities = ("SR_PROBE", "SR_UPDATE", "VDI_CREATE", "VDI_DELETE", "VDI_ATTACH",
                    "VDI_DETACH", "VDI_UPDATE", "VDI_CLONE", "VDI_SNAPSHOT", "VDI_RESIZE",
                    "VDI_GENERATE_CONFIG", "VDI_RESET_ON_BOOT/2", "ATOMIC_PAUSE")


class ThickDriver(RecordOnlyDriver):
    thin = False
    vdi_type = "aio"


class IsoDriver(SRDriver):
    """ISO libraries: read-only content, no VDI.create."""

    capabilities = ("VDI_INTRODUCE", "VDI_DELETE", "VDI_ATTACH", "VDI_DETACH",
                    "SR_SCAN", "SR_ATTACH", "SR_DETACH")
    vdi_type = "file"

    def vdi_create(self, ctx: CallContext, sr: str, vdi: str, record: dict[str, Any]
                   ) -> dict[str, Any]:
        raise ApiError("SR_OPERATION_NOT_SUPPORTED", sr)


class StorageDrivers:
    """SR type -> driver."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self._drivers: dict[str, SRDriver] = {}
        for sr_type in ("ext", "nfs", "file", "smb"):
            self._drivers[sr_type] = RecordOnlyDriver()
        for sr_type in ("lvm", "lvmoiscsi", "lvmohba"):
            self._drivers[sr_type] = ThickDriver()
        for sr_type in ("iso", "udev"):
            self._drivers[sr_type] = IsoDriver()

    def register(self, sr_type: str, driver: SRDriver) -> None:
        self._drivers[sr_type] = driver

    def types(self) -> list[str]:
        return sorted(self._drivers)

    def for_type(self, sr_type: str) -> SRDriver | None:
        return self._drivers.get(sr_type)

    def for_sr(self, sr: str) -> SRDriver:
        rec = self.sim.db.get("SR", sr)
        driver = self._drivers.get(rec["type"])
        if driver is None:
            raise ApiError("SR_UNKNOWN_DRIVER", rec["type"])
        return driver

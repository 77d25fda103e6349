"""Choosing the SR (``[xenserver] sr_matching_filter``) and describing it."""
from __future__ import annotations

from typing import Any

from xhost.context import Context
from xhost.objects import StorageCapabilities

from .errors import InvalidSrFilter, NoMatchingSr

NULL = "OpaqueRef:NULL"
#: SR types whose VDIs are VHD files in a directory dom0 mounts (SM's FileSR family).
FILE_SR_TYPES = frozenset({"ext", "nfs", "file", "smb"})
#: SR types that cannot hold instance disks (removable media, ISO libraries).
_NO_DISKS_TYPES = frozenset({"udev", "iso"})


def parse_filter(value: str) -> tuple[str, str, str]:
    """``("default", "", "")`` or ``("other-config", key, value)``."""
    kind, sep, pattern = (value or "").partition(":")
    kind = kind.strip()
    if not sep:
        raise InvalidSrFilter(value=value, reason="it has no ':'")
    if kind == "default-sr":
        if pattern.strip().lower() != "true":
            raise InvalidSrFilter(value=value, reason="default-sr only takes 'true'")
        return ("default", "", "")
    if kind == "other-config":
        key, eq, wanted = pattern.partition("=")
        if not eq or not key:
            raise InvalidSrFilter(value=value, reason="other-config needs '<key>=<value>'")
        return ("other-config", key, wanted)
    raise InvalidSrFilter(value=value, reason=f"unknown criterion {kind!r}")


def _plugged_here(ctx: Context) -> set[str]:
    pbds = ctx.xapi.call("PBD.get_all_records_where",
                         f'field "host"="{ctx.host_ref}" and field "currently_attached"="true"')
    return {rec["SR"] for rec in pbds.values()}


def _can_hold_disks(rec: dict[str, Any]) -> bool:
    return rec.get("type") not in _NO_DISKS_TYPES and rec.get("content_type") != "iso"


def _listing(srs: dict[str, dict[str, Any]], plugged: set[str], default: str) -> str:
    items = []
    for ref, rec in sorted(srs.items(), key=lambda item: item[1]["name_label"]):
        notes = [rec["type"]]
        if ref == default:
            notes.append("the pool's default SR")
        if ref not in plugged:
            notes.append("not plugged on this host")
        if not _can_hold_disks(rec):
            notes.append("cannot hold disks")
        other = ", ".join(f"{k}={v}" for k, v in sorted(rec.get("other_config", {}).items()))
        notes.append(f"other-config: {other or 'none'}")
        items.append(f"{rec['name_label']!r} ({'; '.join(notes)})")
    return "; ".join(items) or "none"


def _free(rec: dict[str, Any]) -> int:
    try:
        return max(0, int(rec["physical_size"]) - int(rec["physical_utilisation"]))
    except (KeyError, ValueError):
        return 0


def choose_sr(ctx: Context) -> str:
    """The SR for instance disks, among SRs plugged on ``ctx.host_ref``.

    ``other-config`` matching several SRs picks the one with the most free
    space (then by name), so the choice is stable.
    """
    value = ctx.conf.xenserver.sr_matching_filter
    kind, key, wanted = parse_filter(value)
    plugged = _plugged_here(ctx)
    default = NULL
    if kind == "default":
        pool = next(iter(ctx.xapi.call("pool.get_all_records").values()))
        default = pool.get("default_SR", NULL)
        if default in plugged:
            return default
        why = (": the pool has no default SR" if default in (NULL, "")
               else ": the pool's default SR is not plugged on this host")
        srs = ctx.xapi.call("SR.get_all_records")
        raise NoMatchingSr(value=value, host=ctx.host_ref, why=why,
                           listing=_listing(srs, plugged, default))
    srs = ctx.xapi.call("SR.get_all_records")
    matches = [(ref, rec) for ref, rec in srs.items()
               if rec.get("other_config", {}).get(key) == wanted and ref in plugged
               and _can_hold_disks(rec)]
    if not matches:
        pool = next(iter(ctx.xapi.call("pool.get_all_records").values()))
        raise NoMatchingSr(value=value, host=ctx.host_ref, why="",
                           listing=_listing(srs, plugged, pool.get("default_SR", NULL)))
    matches.sort(key=lambda item: (-_free(item[1]), item[1]["name_label"], item[0]))
    return matches[0][0]


def sr_record(ctx: Context, sr_ref: str) -> dict[str, Any]:
    """The SR's record as first read on this connection (its uuid, type and
    name do not change; its sizes may be stale)."""
    return ctx.xapi.remembered(("SR.record", sr_ref),
                               lambda: ctx.xapi.call("SR.get_record", sr_ref))


class ChoiceCache:
    """The SR chosen for a host, kept ``seconds`` on the connection (the
    filter is matched again after that, and after any spawn that failed)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def choose(self, ctx: Context) -> str:
        key = ("storage_sr.choice", ctx.host_ref or "", ctx.conf.xenserver.sr_matching_filter)
        sr = ctx.xapi.remembered(key, lambda: choose_sr(ctx), self.seconds)
        # Whatever makes the operation fail (the SR unplugged, full...), the
        # next one matches the filter again.
        ctx.undo.push("forget the SR choice", ctx.xapi.forget, key)
        return sr


def capabilities(ctx: Context, sr_ref: str) -> StorageCapabilities:
    rec = ctx.xapi.call("SR.get_record", sr_ref)
    vhd_files = rec["type"] in FILE_SR_TYPES
    size = int(rec.get("physical_size") or 0)
    return StorageCapabilities(
        sr_ref=sr_ref, sr_type=rec["type"], vhd_files=vhd_files,
        # Nova's rule: copy-on-write clones of cached images only where VDIs
        # are VHD files; elsewhere a clone is a full copy.
        copy_on_write=vhd_files, shared=bool(rec["shared"]),
        free_bytes=_free(rec) if size > 0 else None)

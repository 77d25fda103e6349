"""Finding the XAPI network a port names."""
from __future__ import annotations

from typing import Any

from xhost.context import Context

from .vifs import NetworkBackendError


def _quote(value: str, what: str) -> str:
    if '"' in value or "\\" in value:
        raise NetworkBackendError(reason=f"{what} {value!r} may not contain '\"' or '\\'")
    return value


def find_network(ctx: Context, name: str, *, by_bridge_only: bool = False,
                 hint: str = "") -> tuple[str, dict[str, Any]]:
    """The XAPI network whose name_label, bridge or uuid is ``name`` (as Nova
    found a nova-network bridge), read once per operation.

    :raises NetworkBackendError: none matches (the message lists the networks
        there are) or several do.
    """
    cache = ctx.extra.setdefault("network.by_name", {})
    key = (name, by_bridge_only)
    if key in cache:
        return cache[key]
    value = _quote(name, "network name")
    query = f'field "bridge"="{value}"'
    if not by_bridge_only:
        query = f'field "name__label"="{value}" or {query} or field "uuid"="{value}"'
    found = ctx.xapi.call("network.get_all_records_where", query)
    if not found:
        names = sorted(f"{r['name_label']} ({r['bridge']})"
                       for r in ctx.xapi.call("network.get_all_records").values()
                       if r["other_config"].get("is_host_internal_management_network")
                       != "true")
        what = "bridge" if by_bridge_only else "name, bridge or uuid"
        raise NetworkBackendError(
            reason=f"no XAPI network with {what} {name!r}{hint}; the host has: "
                   f"{', '.join(names) or 'none'}")
    if len(found) > 1:
        by_label = {r: rec for r, rec in found.items() if rec["name_label"] == name}
        if len(by_label) != 1:
            raise NetworkBackendError(
                reason=f"{len(found)} XAPI networks match {name!r}; name one by its uuid")
        found = by_label
    result = next(iter(found.items()))
    cache[key] = result
    return result


class NetworkCache:
    """The network a name found, reused for ``seconds`` on the connection: a
    spawn on a known network saves the lookup. Forgotten when an operation
    that used it fails, and by :meth:`forget` when the network turns out to
    be gone; a name moved to another network is noticed after ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def find(self, ctx: Context, name: str) -> tuple[str, dict[str, Any]]:
        """:func:`find_network` of ``name``, or what it gave less than
        ``seconds`` ago on this connection."""
        result = ctx.xapi.remembered(("network.by_name", name),
                                     lambda: find_network(ctx, name), self.seconds)
        ctx.extra.setdefault("network.by_name", {})[(name, False)] = result
        ctx.undo.push(f"forget network {name!r}", self.forget, ctx, name)
        return result

    def forget(self, ctx: Context, name: str) -> None:
        ctx.xapi.forget(("network.by_name", name))
        ctx.extra.get("network.by_name", {}).pop((name, False), None)

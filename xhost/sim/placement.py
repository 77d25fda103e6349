"""Where a VM starts: xapi's host choice for ``VM.start`` and ``VM.resume``.

The VM's affinity host when it can run the VM; otherwise, among the hosts
that can (enabled, live, seeing the VM's SRs and networks, with the memory),
the one with the most free memory (the master first on a tie).  When no host
has the memory, xapi tries again without the memory check and lets the start
fail on the chosen host (``HOST_NOT_ENOUGH_FREE_MEMORY``); when no host can
run the VM at all: ``NO_HOSTS_AVAILABLE``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import NULL_REF, ApiError

if TYPE_CHECKING:
    from .dispatch import CallContext


def can_run(ctx: CallContext, vm: str, rec: dict[str, Any], host: str, *,
            memory: bool = True) -> ApiError | None:
    """The error starting ``vm`` on ``host`` would meet, or None (``memory``
    False: ignoring free memory, which is the placement's last check)."""
    from .behaviours.vm import _check_placement

    try:
        _check_placement(ctx, vm, rec, host)
    except ApiError as exc:
        if not memory and exc.code == "HOST_NOT_ENOUGH_FREE_MEMORY":
            return None
        return exc
    return None


def choose_host(ctx: CallContext, vm: str, rec: dict[str, Any]) -> str:
    """The host ``VM.start`` / ``VM.resume`` puts ``vm`` on."""
    from .behaviours.vm import host_free_memory

    db = ctx.db
    affinity = rec["affinity"]
    if affinity != NULL_REF and db.exists("host", affinity) and \
            can_run(ctx, vm, rec, affinity) is None:
        return affinity
    hosts = db.refs("host")
    master = ctx.sim.master_ref
    hosts.sort(key=lambda h: h != master)
    for memory in (True, False):
        fits = [h for h in hosts if can_run(ctx, vm, rec, h, memory=memory) is None]
        if fits:
            return max(fits, key=lambda h: (host_free_memory(ctx, h), h == master))
    raise ApiError("NO_HOSTS_AVAILABLE")

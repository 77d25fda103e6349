"""The guest agent's part of a first boot."""
from __future__ import annotations

import logging

from xhost.context import Context
from xhost.objects import Instance

LOG = logging.getLogger(__name__)


def first_boot(ctx: Context, instance: Instance, vm_ref: str) -> list[str]:
    """Run the agent's first-boot configuration; return (and report to
    extensions) its problems. Never raises: agent trouble does not fail a
    boot."""
    if "guest_agent" not in ctx.plugins.selected:
        return []
    try:
        faults = list(ctx.plugins.agent_configure_instance(ctx, instance, vm_ref) or [])
    except Exception as exc:  # a plugin bug must not fail the boot either
        LOG.exception("guest agent configuration of %s failed", instance.name)
        faults = [f"guest agent: {type(exc).__name__}: {exc}"]
    for fault in faults:
        ctx.plugins.instance_fault(ctx, instance, fault)
    return faults

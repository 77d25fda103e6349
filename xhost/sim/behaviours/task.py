"""task.*: create, cancel, destroy and the explicit setters."""
from __future__ import annotations

from ..dispatch import CallContext
from . import behaviour


@behaviour("task.create")
def create(ctx: CallContext, label: str, description: str) -> str:
    return ctx.sim.tasks.create(label, description, host=ctx.host_ref, cancellable=True)


@behaviour("task.cancel")
def cancel(ctx: CallContext, task: str) -> None:
    ctx.sim.tasks.cancel(task, by_task=ctx.task)


@behaviour("task.destroy")
def destroy(ctx: CallContext, task: str) -> None:
    ctx.sim.tasks.destroy(task)

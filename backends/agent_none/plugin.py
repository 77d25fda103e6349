"""The ``none`` guest agent plugin: instances are never configured through
an agent (use a config drive), and agent operations are refused clearly."""
from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from xhost import exception, hookimpl

if TYPE_CHECKING:
    from oslo_config import cfg

    from xhost.context import Context
    from xhost.objects import Instance


class AgentDisabled(exception.XhostError):
    msg_fmt = ("server {instance} cannot {what}: xhost talks to no guest agent "
               "([xenserver] guest_agent = none, or disable_agent = true); select the "
               "'xenstore' guest agent to use the agent of images that have one")


class NoAgent:
    """No guest agent."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf

    @staticmethod
    def _refuse(instance: Instance, what: str) -> NoReturn:
        raise AgentDisabled(instance=instance.name or instance.uuid, what=what)

    @hookimpl
    def xhost_agent_detect(self, ctx: Context, instance: Instance) -> bool:
        return False

    @hookimpl
    def xhost_agent_version(self, ctx: Context, instance: Instance) -> str:
        return ""

    @hookimpl
    def xhost_agent_set_password(self, ctx: Context, instance: Instance) -> bool:
        self._refuse(instance, "have its password set")

    @hookimpl
    def xhost_agent_inject_file(self, ctx: Context, instance: Instance) -> bool:
        self._refuse(instance, "have files injected")

    @hookimpl
    def xhost_agent_reset_network(self, ctx: Context, instance: Instance) -> bool:
        self._refuse(instance, "have its network reset")

    @hookimpl
    def xhost_agent_update(self, ctx: Context, instance: Instance) -> bool:
        self._refuse(instance, "have its agent updated")

    @hookimpl
    def xhost_agent_configure_instance(self, ctx: Context, instance: Instance) -> list[str]:
        return []

"""The ``xenstore`` guest agent plugin (the default).

Speaks the XenServer / Rackspace guest agent protocol (Nova's XenAPI agent)
through the ``xhost_agent`` and ``xhost_xenstore`` dom0 scripts: requests in
``/local/domain/<domid>/data/host/<id>``, answers in ``data/guest/<id>``.
Whether an instance has an agent is the image's ``img_use_agent`` (legacy
``xenapi_use_agent``) property, else ``[xenserver] use_agent_default``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from xhost import exception, hookimpl
from xhost.backends.agent_xenstore import boot, options
from xhost.backends.agent_xenstore.client import AgentClient

if TYPE_CHECKING:
    from oslo_config import cfg

    from xhost.context import Context
    from xhost.objects import Instance

list_opts = options.list_opts


class XenstoreAgent:
    """Guest agents spoken to over XenStore."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        options.register(conf)
        group = conf.agent_xenstore
        for opt in options.OPTS:  # refuse bad values now, not in the middle of a boot
            try:
                getattr(group, opt.dest)
            except ValueError as exc:
                raise exception.ConfigError(reason=f"[agent_xenstore] {opt.name}: {exc}") from None
        if group.build_version and not (group.build_url and group.build_md5):
            raise exception.ConfigError(
                reason="[agent_xenstore] build_version is set, so build_url and build_md5 "
                       "must be set too (where guests download the agent build, and its MD5)")
        self.conf = conf

    @hookimpl
    def xhost_agent_detect(self, ctx: Context, instance: Instance) -> bool:
        return boot.use_agent(ctx.conf, instance)

    @hookimpl
    def xhost_agent_version(self, ctx: Context, instance: Instance, vm_ref: str,
                            timeout: float) -> str:
        return AgentClient(ctx, instance, vm_ref).wait_for_version(timeout)

    @hookimpl
    def xhost_agent_set_password(self, ctx: Context, instance: Instance, vm_ref: str,
                                 password: str) -> bool:
        AgentClient(ctx, instance, vm_ref).set_password(password,
                                                        ctx.conf.agent_xenstore.password_digest)
        return True

    @hookimpl
    def xhost_agent_inject_file(self, ctx: Context, instance: Instance, vm_ref: str, path: str,
                                contents: bytes) -> bool:
        AgentClient(ctx, instance, vm_ref).inject_file(path, contents)
        return True

    @hookimpl
    def xhost_agent_reset_network(self, ctx: Context, instance: Instance, vm_ref: str) -> bool:
        AgentClient(ctx, instance, vm_ref).reset_network(refresh=True)
        return True

    @hookimpl
    def xhost_agent_update(self, ctx: Context, instance: Instance, vm_ref: str, url: str,
                           md5sum: str) -> bool:
        AgentClient(ctx, instance, vm_ref).update(url, md5sum)
        return True

    @hookimpl
    def xhost_agent_configure_instance(self, ctx: Context, instance: Instance,
                                       vm_ref: str) -> list[str]:
        return boot.configure_instance(ctx, instance, vm_ref)

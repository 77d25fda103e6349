"""An instance's first boot through its guest agent (Nova's
``_configure_new_instance_with_agent``), and the per-instance agent decision.

Order: wait for the agent's version (up to ``[xenserver]
agent_version_timeout``, across a guest reboot), inject the SSH key, inject
the files, set the admin password (generated when the instance has none),
reset the network, update the agent when a newer build is configured. A
step that fails is reported and the next one still runs; nothing here fails
the boot.
"""
from __future__ import annotations

import logging
import re
import secrets
import string
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from xhost import exception
from xhost.backends.agent_xenstore.client import AgentClient
from xhost.compute import vmrecord

if TYPE_CHECKING:
    from oslo_config import cfg

    from xhost.context import Context
    from xhost.objects import Instance

LOG = logging.getLogger(__name__)

AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"
#: ctx.extra key set when the admin password the agent set was generated
#: here (core then shows it once to whoever created the instance).
GENERATED_PASSWORD = "admin_password_generated"
_PASSWORD_ALPHABET = string.ascii_letters + string.digits


def image_properties(instance: Instance) -> dict[str, Any]:
    return dict(instance.image.properties) if instance.image is not None else {}


def use_agent(conf: cfg.ConfigOpts, instance: Instance) -> bool:
    """Image property ``img_use_agent`` (legacy ``xenapi_use_agent``), parsed
    strictly; missing or invalid: ``[xenserver] use_agent_default``."""
    if conf.xenserver.disable_agent:
        return False
    value = vmrecord.image_property(image_properties(instance), "img_use_agent",
                                    "xenapi_use_agent")
    if value is None:
        return bool(conf.xenserver.use_agent_default)
    parsed = vmrecord.strict_bool(value)
    if parsed is None:
        LOG.warning("instance %s: image property img_use_agent=%r is not a boolean; using "
                    "[xenserver] use_agent_default=%s", instance.name, value,
                    conf.xenserver.use_agent_default)
        return bool(conf.xenserver.use_agent_default)
    return parsed


def _skip(instance: Instance, name: str, legacy: str) -> bool:
    return vmrecord.strict_bool(vmrecord.image_property(image_properties(instance), name,
                                                        legacy)) is True


def is_windows(instance: Instance) -> bool:
    os_type = instance.os_type or vmrecord.image_property(image_properties(instance), "os_type")
    return str(os_type or "").lower() == "windows"


def generate_password(length: int) -> str:
    """A random password with at least one lower-case letter, upper-case
    letter and digit."""
    while True:
        password = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(length))
        if (re.search(r"[a-z]", password) and re.search(r"[A-Z]", password)
                and re.search(r"[0-9]", password)):
            return password


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Order agent versions like Nova's LooseVersion did: numbers numerically,
    other parts as text, numbers before text."""
    parts = re.findall(r"\d+|[A-Za-z]+", version)
    return tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in parts)


def newer_build(conf: cfg.ConfigOpts, instance: Instance, current: str) -> tuple[str, str] | None:
    """``(url, md5)`` of the configured agent build when it is newer than
    ``current`` and meant for this instance's OS."""
    group = conf.agent_xenstore
    if not group.build_version:
        return None
    wanted_os = (group.build_os_type or "").lower()
    if wanted_os and wanted_os != ("windows" if is_windows(instance) else
                                   str(instance.os_type or "linux").lower()):
        return None
    if version_key(group.build_version) <= version_key(current):
        return None
    return group.build_url, group.build_md5.lower()


def configure_instance(ctx: Context, instance: Instance, vm_ref: str) -> list[str]:
    """Configure a freshly booted instance; return its problems (no secrets)."""
    conf = ctx.conf
    if not use_agent(conf, instance):
        return []
    agent = AgentClient(ctx, instance, vm_ref)
    faults: list[str] = []
    wait = conf.xenserver.agent_version_timeout
    try:
        version = agent.wait_for_version(float(wait))
    except exception.XhostError as exc:
        return [f"guest agent: asking its version failed, so nothing was configured through "
                f"it: {exc}"]
    if not version:
        return [f"guest agent: no answer within {wait} s ([xenserver] agent_version_timeout), "
                f"so the SSH key, files, admin password and network were not configured "
                f"through it; does the image really run the agent (image property "
                f"img_use_agent)?"]
    LOG.info("guest agent of %s answered: version %s", instance.name, version)

    def step(what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except exception.XhostError as exc:
            LOG.warning("instance %s: %s failed: %s", instance.name, what, exc)
            faults.append(f"guest agent: {what} failed: {exc}")

    windows = is_windows(instance)
    if instance.key_data and not windows and not _skip(instance, "os_skip_agent_inject_ssh",
                                                       "xenapi_skip_agent_inject_ssh"):
        key = ("\n# The following ssh key was injected by xhost\n"
               + instance.key_data.strip() + "\n").encode()
        step("injecting the SSH key", lambda: agent.inject_file(AUTHORIZED_KEYS, key))
    if instance.files and not _skip(instance, "os_skip_agent_inject_files_at_boot",
                                    "xenapi_skip_agent_inject_files_at_boot"):
        for path, contents in sorted(instance.files.items()):
            step(f"injecting {path}",
                 lambda path=path, contents=contents: agent.inject_file(path, contents))

    generated = instance.admin_password is None
    password = (generate_password(conf.agent_xenstore.password_length) if generated
                else instance.admin_password)
    outcome: list[bool] = []
    step("setting the admin password",
         lambda: outcome.append(agent.set_password(password, conf.agent_xenstore.password_digest)
                                or True))
    if outcome and generated:
        instance.admin_password = password
        ctx.extra[GENERATED_PASSWORD] = True
    step("resetting the network", lambda: agent.reset_network(refresh=False))
    build = newer_build(conf, instance, version)
    if build is not None:
        step(f"updating the agent from {version} to {conf.agent_xenstore.build_version}",
             lambda: agent.update(*build))
    return faults

"""What plugins are installed: roles, their entry-point namespaces, and lookups.

This module only reads package metadata; it never imports a plugin, so it is
cheap enough for option registration and ``xhost plugins list``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import metadata

from xhost import exception

#: Restricts discovery to these distributions (comma-separated names), e.g.
#: ``XHOST_PLUGINS_FROM=xhost`` to see only the built-ins. Unset: everything.
PLUGINS_FROM_ENV = "XHOST_PLUGINS_FROM"

EXTENSION_NAMESPACE = "xhost.extensions"
COMMAND_NAMESPACE = "xhost.commands"


@dataclass(frozen=True)
class Role:
    """A plugin role: one active plugin, chosen by a configuration option."""

    key: str
    title: str
    namespace: str
    option: str
    default: str
    group: str = "xenserver"
    #: Deprecated values accepted for the option -> the plugin name they mean.
    aliases: dict[str, str] = field(default_factory=dict)


ROLES: tuple[Role, ...] = (
    Role(
        key="image_handler",
        title="image handler",
        namespace="xhost.image_handlers",
        option="image_handler",
        default="direct_vhd",
        aliases={
            # Nova's deprecated image_upload_handler class paths.
            "nova.virt.xenapi.image.glance.GlanceStore": "direct_vhd",
            "nova.virt.xenapi.image.vdi_through_dev.VdiThroughDevStore": "vdi_local_dev",
            "nova.virt.xenapi.image.vdi_stream.VdiStreamStore": "vdi_remote_stream",
        },
    ),
    Role(
        key="image_service",
        title="image service",
        namespace="xhost.image_services",
        option="image_service",
        default="local",
    ),
    Role(
        key="network_backend",
        title="network backend",
        namespace="xhost.network_backends",
        option="network_backend",
        default="openvswitch",
        aliases={
            # Nova's removed [xenserver] vif_driver class paths.
            "nova.virt.xenapi.vif.XenAPIOpenVswitchDriver": "openvswitch",
            "nova.virt.xenapi.vif.XenAPIBridgeDriver": "linux_bridge",
        },
    ),
    Role(
        key="storage_backend",
        title="storage backend",
        namespace="xhost.storage_backends",
        option="storage_backend",
        default="sr",
    ),
    Role(
        key="guest_agent",
        title="guest agent",
        namespace="xhost.guest_agents",
        option="guest_agent",
        default="xenstore",
    ),
)

ROLES_BY_KEY = {role.key: role for role in ROLES}
EXTENSION_ROLE = Role(
    key="extension",
    title="extension",
    namespace=EXTENSION_NAMESPACE,
    option="enabled_extensions",
    default="",
)


@dataclass(frozen=True)
class Installed:
    """One installed entry point."""

    namespace: str
    name: str
    #: ``module:attr`` (or ``module``).
    target: str
    distribution: str
    version: str

    @property
    def module(self) -> str:
        return self.target.split(":", 1)[0]


def _allowed_distributions() -> set[str] | None:
    value = os.environ.get(PLUGINS_FROM_ENV, "").strip()
    if not value:
        return None
    return {_normalise(d) for d in value.split(",") if d.strip()}


def _normalise(dist_name: str) -> str:
    return dist_name.strip().lower().replace("_", "-").replace(".", "-")


def installed(namespace: str) -> list[Installed]:
    """Entry points of a namespace, sorted by name, duplicates of the same
    distribution (seen twice on ``sys.path``) folded into one."""
    allowed = _allowed_distributions()
    seen: dict[tuple[str, str, str], Installed] = {}
    for ep in metadata.entry_points(group=namespace):
        dist = ep.dist
        dist_name = dist.metadata["Name"] if dist is not None else "?"
        if allowed is not None and _normalise(dist_name) not in allowed:
            continue
        item = Installed(
            namespace=namespace,
            name=ep.name,
            target=ep.value,
            distribution=dist_name,
            version=dist.version if dist is not None else "?",
        )
        seen.setdefault((item.name, item.target, _normalise(dist_name)), item)
    return sorted(seen.values(), key=lambda i: (i.name, i.distribution))


def names(namespace: str) -> list[str]:
    """The distinct plugin names installed in a namespace."""
    return sorted({item.name for item in installed(namespace)})


def find(role: Role, name: str) -> Installed:
    """The one entry point called ``name`` in the role's namespace.

    :raises NoSuchPlugin: if there is none.
    :raises PluginConflict: if several distributions register the name.
    """
    items = installed(role.namespace)
    matches = [item for item in items if item.name == name]
    if not matches:
        raise exception.NoSuchPlugin(
            role=role.title,
            name=name,
            installed=", ".join(sorted({i.name for i in items})) or "none",
            group=role.group,
            option=role.option,
            namespace=role.namespace,
        )
    if len(matches) > 1:
        raise exception.PluginConflict(
            role=role.title,
            name=name,
            namespace=role.namespace,
            providers="; ".join(f"{m.target} from {m.distribution} {m.version}" for m in matches),
        )
    return matches[0]


def conflicts(namespace: str) -> dict[str, list[Installed]]:
    """Names registered by more than one entry point in a namespace."""
    by_name: dict[str, list[Installed]] = {}
    for item in installed(namespace):
        by_name.setdefault(item.name, []).append(item)
    return {name: items for name, items in by_name.items() if len(items) > 1}

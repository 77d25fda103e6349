"""oslo.config value types of xhost's own."""
from __future__ import annotations

import collections
import logging
from typing import Any

from oslo_config import types

from xhost import registry

LOG = logging.getLogger(__name__)


class PluginName(types.String):
    """The name of a plugin of one role.

    ``choices`` (shown in the sample configuration, the docs and ``--help``)
    are read from the role's entry-point namespace when asked for, so they
    show what is installed. Deprecated aliases (Nova class paths) are
    translated to the plugin name they mean. Whether the name is installed is
    checked when plugins are loaded and by ``xhost config check``, with a
    message naming the role, the name, the installed plugins and the fix (a
    check here would run on the default before any plugin is installed).
    """

    def __init__(self, role: registry.Role, allow_empty: bool = False) -> None:
        self.role = role
        self.allow_empty = allow_empty
        super().__init__(type_name=f"{role.title} name")

    @property
    def choices(self) -> collections.OrderedDict[str, str]:
        choices = collections.OrderedDict(
            (item.name, f"provided by {item.distribution} ({item.target})")
            for item in registry.installed(self.role.namespace)
        )
        if self.allow_empty:
            choices[""] = "none"
        return choices

    @choices.setter
    def choices(self, value: Any) -> None:
        """Ignored: the choices are what is installed."""

    def __call__(self, value: Any) -> str:
        name = str(value).strip()
        if len(name) > 1 and name[0] == name[-1] and name[0] in "\"'":
            name = name[1:-1]
        if name in self.role.aliases:
            canonical = self.role.aliases[name]
            LOG.warning("%r is a deprecated %s class path; use %r", name, self.role.title, canonical)
            name = canonical
        return name

    def __repr__(self) -> str:
        return f"PluginName({self.role.key})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PluginName) and other.role == self.role

    __hash__ = None  # type: ignore[assignment]


class PluginNameList(types.List):
    """A comma-separated list of installed plugin names of one namespace."""

    def __init__(self, role: registry.Role) -> None:
        super().__init__(item_type=PluginName(role), bounds=False, type_name=f"list of {role.title} names")
        self.role = role

    def __repr__(self) -> str:
        return f"PluginNameList({self.role.key})"

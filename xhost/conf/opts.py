"""The ``oslo.config.opts`` entry point ``xhost``: every option xhost and its
installed plugins register, for ``oslo-config-generator --namespace xhost``,
the Sphinx configuration reference and ``xhost config check``.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any

from oslo_config import cfg

from xhost import registry
from xhost.conf import compute, xenserver

LOG = logging.getLogger(__name__)

OptList = list[tuple[Any, list[cfg.Opt]]]


def plugin_list_opts(item: registry.Installed) -> OptList:
    """The options a plugin publishes through its ``list_opts()``.

    ``list_opts`` is looked up on the entry point's target (a class or
    module), then on the module holding it. Plugins without options have
    none.
    """
    module_name, _, attr = item.target.partition(":")
    module = importlib.import_module(module_name)
    target: Any = module
    for part in filter(None, attr.split(".")):
        target = getattr(target, part)
    fn = getattr(target, "list_opts", None) or getattr(module, "list_opts", None)
    if fn is None:
        return []
    result = fn()
    if isinstance(result, dict):
        result = list(result.items())
    return list(result)


def plugin_namespaces() -> list[str]:
    return [role.namespace for role in registry.ROLES] + [registry.EXTENSION_NAMESPACE]


def all_plugin_opts(errors: list[str] | None = None) -> OptList:
    """Options of every installed plugin; plugins that fail to import are
    skipped (and reported in ``errors`` when given)."""
    result: OptList = []
    for namespace in plugin_namespaces():
        for item in registry.installed(namespace):
            try:
                result.extend(plugin_list_opts(item))
            except Exception as exc:
                msg = f"{item.name} ({item.target}): {type(exc).__name__}: {exc}"
                LOG.warning("cannot list the options of plugin %s", msg)
                if errors is not None:
                    errors.append(msg)
    return _merge(result)


def _merge(pairs: OptList) -> OptList:
    merged: dict[str, tuple[Any, list[cfg.Opt]]] = {}
    for group, opts in pairs:
        key = group.name if isinstance(group, cfg.OptGroup) else (group or "DEFAULT")
        if key not in merged:
            merged[key] = (group, [])
        elif isinstance(group, cfg.OptGroup):
            merged[key] = (group, merged[key][1])
        known = {o.dest for o in merged[key][1]}
        merged[key][1].extend(o for o in opts if o.dest not in known)
    return list(merged.values())


def list_opts() -> OptList:
    """Core options, then the options of each installed plugin."""
    return _merge(xenserver.list_opts() + compute.list_opts() + all_plugin_opts())


def register_plugin_opts(conf: cfg.ConfigOpts, errors: list[str] | None = None) -> None:
    """Register every installed plugin's options on ``conf`` (for checking a
    configuration without loading the plugins)."""
    for group, opts in all_plugin_opts(errors):
        if isinstance(group, cfg.OptGroup):
            conf.register_group(group)
        conf.register_opts(opts, group=group)

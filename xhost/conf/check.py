"""``xhost config check``: find everything wrong with a configuration.

Every problem names the option, its group and the file that sets it. Sections
and options that xhost does not own (the rest of a ``nova.conf``) are not
problems.
"""
from __future__ import annotations

import glob
import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from oslo_config import cfg

from xhost import conf as xconf
from xhost import exception, plugins, registry
from xhost.conf import opts as xopts
from xhost.conf import xenserver

ERROR = "error"
WARNING = "warning"
NOTICE = "notice"
DEFAULT_LOCATION = "(default)"
UNSET = "(not set)"


@dataclass(frozen=True)
class Problem:
    level: str
    group: str
    option: str
    file: str
    message: str

    def as_row(self) -> tuple[str, str, str, str, str]:
        return (self.level, self.group, self.option, self.file, self.message)


def _expand(config_files: Sequence[str], config_dirs: Sequence[str]) -> list[str]:
    files = list(config_files)
    for d in config_dirs:
        files.extend(sorted(glob.glob(os.path.join(d, "*.conf"))))
    return files


def _where_set(files: Sequence[str]) -> dict[tuple[str, str], str]:
    """(group, key) -> the last file that sets it."""
    where: dict[tuple[str, str], str] = {}
    for path in files:
        sections: dict[str, dict[str, list[str]]] = {}
        try:
            cfg.ConfigParser(path, sections).parse()
        except Exception:  # reported by the real load
            continue
        for section, keys in sections.items():
            for key in keys:
                where[(section, key)] = path
    return where


def _opt_names(opt: cfg.Opt, group: str) -> list[tuple[str, str]]:
    names = [(group, opt.name)]
    for d in opt.deprecated_opts:
        names.append((d.group or group, d.name or opt.name))
    return names


def check(config_files: Sequence[str], config_dirs: Sequence[str] = ()) -> list[Problem]:
    """Check a configuration; return its problems (empty when it is fine)."""
    problems: list[Problem] = []
    files = _expand(config_files, config_dirs)
    try:
        conf = xconf.load(config_files, config_dirs)
    except cfg.ConfigFilesNotFoundError as exc:
        for path in exc.config_files:
            problems.append(Problem(ERROR, "-", "-", path,
                                    "cannot read this file; check the path and permissions"))
        return problems
    except cfg.ConfigFileParseError as exc:
        return [Problem(ERROR, "-", "-", exc.config_file, f"not a valid INI file: {exc.msg}")]

    plugin_errors: list[str] = []
    xopts.register_plugin_opts(conf, plugin_errors)
    where = _where_set(files)

    def location(group: str, opt: cfg.Opt) -> str:
        for key in _opt_names(opt, group):
            if key in where:
                return where[key]
        return DEFAULT_LOCATION

    # 1. Every registered option's value: type, bounds, choices, plugin names.
    owned_groups: dict[str, dict[str, cfg.Opt]] = {}
    for group_name, group_opts in _registered(conf).items():
        owned_groups[group_name] = {}
        for opt in group_opts:
            for g, name in _opt_names(opt, group_name):
                owned_groups.setdefault(g, {})[name] = opt
            try:
                getattr(conf[group_name] if group_name != "DEFAULT" else conf, opt.dest)
            except (cfg.ConfigFileValueError, ValueError) as exc:
                problems.append(Problem(ERROR, group_name, opt.name, location(group_name, opt),
                                        _value_message(exc)))

    # 2. Unknown options in the groups xhost owns.
    for (section, key), path in sorted(where.items()):
        if section not in owned_groups or section == "DEFAULT":
            continue
        if key in owned_groups[section]:
            continue
        if section == "xenserver" and key in xenserver.REMOVED_NOVA_OPTS:
            problems.append(Problem(NOTICE, section, key, path,
                                    "option removed from Nova; xhost ignores it"))
            continue
        problems.append(Problem(ERROR, section, key, path,
                                f"unknown option in [{section}]; check the spelling "
                                f"(`xhost config sample` lists every option)"))

    # 3. Plugins: installed, unique, and importable.
    for namespace in xopts.plugin_namespaces():
        for name, items in registry.conflicts(namespace).items():
            problems.append(Problem(ERROR, "-", "-", "-", str(exception.PluginConflict(
                role=namespace, name=name, namespace=namespace,
                providers="; ".join(f"{i.target} from {i.distribution}" for i in items)))))
    if not any(p.level == ERROR and p.group == "xenserver" for p in problems):
        problems.extend(_check_plugins_load(conf, location))
    for msg in plugin_errors:
        problems.append(Problem(WARNING, "-", "-", "-", f"installed plugin cannot list its "
                                                        f"options: {msg}"))

    # 4. What is needed to reach a real host.
    problems.extend(_check_connection(conf, location))
    return problems


def _registered(conf: cfg.ConfigOpts) -> dict[str, list[cfg.Opt]]:
    """Registered options by group (oslo.config has no public API for this)."""
    internal = (cfg._ConfigFileOpt, cfg._ConfigDirOpt)
    groups = {"DEFAULT": [i["opt"] for i in conf._opts.values() if not isinstance(i["opt"], internal)]}
    for name, group in conf._groups.items():
        groups[name] = [i["opt"] for i in group._opts.values()]
    return {name: opts for name, opts in groups.items() if opts}


def _value_message(exc: Exception) -> str:
    text = str(exc)
    marker = " is not valid: "
    if marker in text:
        text = text.split(marker, 1)[1]
    return text


def _check_plugins_load(conf: cfg.ConfigOpts, location) -> list[Problem]:
    problems = []
    group = conf.xenserver
    selected = plugins.selected_names(conf)
    for role in registry.ROLES:
        name = selected[role.key]
        opt = conf._get_opt_info(role.option, "xenserver")["opt"]
        try:
            plugins.load_role_plugin(role, name, conf)
        except exception.XhostError as exc:
            problems.append(Problem(ERROR, "xenserver", role.option,
                                    location("xenserver", opt), str(exc)))
    try:
        plugins.load_extensions(list(group.enabled_extensions), conf)
    except exception.XhostError as exc:
        opt = conf._get_opt_info("enabled_extensions", "xenserver")["opt"]
        problems.append(Problem(ERROR, "xenserver", "enabled_extensions",
                                location("xenserver", opt), str(exc)))
    return problems


def _check_connection(conf: cfg.ConfigOpts, location) -> list[Problem]:
    problems = []
    group = conf.xenserver

    def opt(name: str) -> cfg.Opt:
        return conf._get_opt_info(name, "xenserver")["opt"]

    try:
        url = group.connection_url
    except (cfg.ConfigFileValueError, ValueError):
        return problems
    if url:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https", "unix") or (
                parsed.scheme != "unix" and not parsed.hostname):
            problems.append(Problem(
                ERROR, "xenserver", "connection_url", location("xenserver", opt("connection_url")),
                f"{url!r} is not a XAPI URL; use http://HOST or https://HOST (the host's "
                f"management address)"))
        if not group.connection_password:
            problems.append(Problem(
                ERROR, "xenserver", "connection_password",
                location("xenserver", opt("connection_password")).replace(DEFAULT_LOCATION, UNSET),
                "connection_url is set, so the password of connection_username is needed to "
                "log in to the host"))
        if group.independent_compute and group.check_host:
            problems.append(Problem(
                ERROR, "xenserver", "check_host", location("xenserver", opt("check_host")),
                "must be False when independent_compute is True (xhost does not run on the "
                "host)"))
    return problems

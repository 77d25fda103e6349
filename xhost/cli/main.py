"""The ``xhost`` application: global options, configuration loading, command discovery.

Commands are cliff ``Command`` classes registered in the ``xhost.commands``
entry-point namespace (the entry-point name is the command words, e.g.
``plugins list``), so third-party distributions add commands the same way the
built-ins are added.
"""
from __future__ import annotations

import os
import sys

from cliff import app, commandmanager

import xhost

COMMAND_NAMESPACE = "xhost.commands"
DEFAULT_CONFIG_FILE = "/etc/xhost/xhost.conf"
DEFAULT_CONFIG_DIR = "/etc/xhost/xhost.conf.d"


class XhostApp(app.App):
    """cliff application with OpenStack-style ``--config-file`` / ``--config-dir``."""

    def __init__(self, stdin=None, stdout=None, stderr=None):
        super().__init__(
            description=__doc__.splitlines()[0] if __doc__ else "xhost",
            version=xhost.__version__,
            command_manager=commandmanager.CommandManager(COMMAND_NAMESPACE),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            deferred_help=True,
        )
        self._conf = None
        self._plugins = {}
        self._compute = None

    def build_option_parser(self, description, version, argparse_kwargs=None):
        parser = super().build_option_parser(description, version, argparse_kwargs)
        parser.add_argument(
            "--config-file",
            action="append",
            dest="config_file",
            metavar="PATH",
            default=[],
            help=f"Configuration file to load; repeatable, later files win. "
            f"Default: {DEFAULT_CONFIG_FILE} if it exists. An existing "
            f"nova.conf works: its [xenserver] section is read unchanged.",
        )
        parser.add_argument(
            "--config-dir",
            action="append",
            dest="config_dir",
            metavar="DIR",
            default=[],
            help="Directory of *.conf files loaded after --config-file, in "
            "alphabetical order; repeatable.",
        )
        return parser

    def configure_logging(self):
        """Like cliff's, but the default console level is WARNING: INFO from
        plugins and the embedded simulator needs ``-v`` (DEBUG ``-vv``)."""
        super().configure_logging()
        import logging

        levels = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO}
        level = levels.get(self.options.verbose_level, logging.DEBUG)
        for handler in logging.getLogger("").handlers:
            if isinstance(handler, logging.StreamHandler) and \
                    getattr(handler, "stream", None) is self.stderr:
                handler.setLevel(level)

    def config_sources(self) -> tuple[list[str], list[str]]:
        """The configuration files and directories to read: the global
        options, else the defaults that exist."""
        files = list(self.options.config_file)
        dirs = list(self.options.config_dir)
        if not files and not dirs:
            if os.path.exists(DEFAULT_CONFIG_FILE):
                files = [DEFAULT_CONFIG_FILE]
            if os.path.isdir(DEFAULT_CONFIG_DIR):
                dirs = [DEFAULT_CONFIG_DIR]
        return files, dirs

    @property
    def conf(self):
        """The loaded configuration (an ``oslo_config.cfg.ConfigOpts``), built on first use."""
        if self._conf is None:
            from xhost import conf as xconf

            self._conf = xconf.load(*self.config_sources())
        return self._conf


    def plugin_host(self, roles):
        """The plugins of ``roles`` (and the enabled extensions), loaded once."""
        key = tuple(sorted(roles))
        if key not in self._plugins:
            from xhost import plugins

            self._plugins[key] = plugins.load(self.conf, roles=key)
        return self._plugins[key]

    def context(self, roles, **kwargs):
        """A :class:`xhost.context.Context` for one command."""
        from xhost.context import Context

        return Context(conf=self.conf, plugins=self.plugin_host(roles), **kwargs)


    def compute(self, progress=None):
        """The compute API (connecting to the host, or starting the embedded
        simulator), built once per command and closed when it ends."""
        if self._compute is None:
            from xhost.compute.api import Compute

            def notice(message):
                print(message, file=self.stderr)

            self._compute = Compute.open(self.conf, progress=progress, notice=notice)
        elif progress is not None:
            self._compute.progress = progress
        return self._compute

    def clean_up(self, cmd, result, err):
        if self._compute is not None:
            try:
                self._compute.close()
            finally:
                self._compute = None


def main(argv=None) -> int:
    return XhostApp().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

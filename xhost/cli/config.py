"""``xhost config ...`` commands."""
from __future__ import annotations

import sys

from cliff import command, lister
from oslo_config import cfg, generator

from xhost.conf import check as config_check


class CheckConfig(lister.Lister):
    """Validate a configuration: types, bounds, choices, plugin names, what is
    needed to reach a real host. Exits non-zero if anything is wrong.

    Check the files given with the global --config-file / --config-dir
    options (or /etc/xhost/xhost.conf). Sections and options xhost does not own
    (the rest of a nova.conf) are ignored.
    """

    def take_action(self, parsed_args):
        files, dirs = self.app.config_sources()
        self._problems = config_check.check(files, dirs)
        errors = [p for p in self._problems if p.level == config_check.ERROR]
        checked = ", ".join(files + dirs) or "defaults only (no configuration file)"
        summary = (f"{len(errors)} error(s) in {checked}" if errors
                   else f"configuration OK: {checked}")
        print(summary, file=self.app.stderr)
        return ("level", "group", "option", "file", "problem"), [p.as_row() for p in self._problems]

    def run(self, parsed_args):
        status = super().run(parsed_args)
        if any(p.level == config_check.ERROR for p in self._problems):
            return 1
        return status


class SampleConfig(command.Command):
    """Print a sample configuration file with every option of xhost and of its
    installed plugins, with their defaults and help."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--output-file", metavar="PATH", help="Write here instead of stdout.")
        parser.add_argument("--format", dest="fmt", default="ini",
                            choices=("ini", "yaml", "json", "rst"), help="Output format.")
        parser.add_argument("--wrap-width", type=int, default=79, help="Wrap help text.")
        return parser

    def take_action(self, parsed_args):
        conf = cfg.ConfigOpts()
        generator.register_cli_opts(conf)
        args = ["--namespace", "xhost", "--format", parsed_args.fmt,
                "--wrap-width", str(parsed_args.wrap_width)]
        if parsed_args.output_file:
            args += ["--output-file", parsed_args.output_file]
        conf(args, project="xhost-config-sample", default_config_files=[], default_config_dirs=[])
        if parsed_args.output_file:
            generator.generate(conf)
        else:
            generator.generate(conf, output_file=self.app.stdout or sys.stdout)

"""``xhost plugins ...`` commands."""
from __future__ import annotations

from cliff import lister

from xhost import registry


class ListPlugins(lister.Lister):
    """List installed plugins of every role, and extensions."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--role", choices=[r.key for r in registry.ROLES] + ["extension"],
                            help="Only plugins of this role.")
        return parser

    def take_action(self, parsed_args):
        rows = []
        for role in (*registry.ROLES, registry.EXTENSION_ROLE):
            if parsed_args.role and parsed_args.role != role.key:
                continue
            for item in registry.installed(role.namespace):
                rows.append((role.key, item.name, item.target, f"{item.distribution} {item.version}"))
        return ("role", "name", "module", "distribution"), rows

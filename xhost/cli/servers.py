"""``xhost server ...``, ``xhost flavor list`` and ``xhost reconcile``."""
from __future__ import annotations

import argparse

from cliff import command, lister, show

from xhost import exception
from xhost.cli import progress
from xhost.compute import flavors as flavor_mod
from xhost.compute import servers


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise exception.XhostError(f"{what} {path}: {exc.strerror}") from None


def _property(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--property takes KEY=VALUE, not {text!r}")
    return key.strip(), value


def _injected(text: str) -> tuple[str, str]:
    guest, sep, local = text.partition("=")
    if not sep or not guest.startswith("/") or not local:
        raise argparse.ArgumentTypeError(f"--file takes GUEST_PATH=LOCAL_FILE with an absolute guest path, "
                         f"not {text!r}")
    return guest, local


def _show(server: servers.Server):
    data = {c: getattr(server, c) for c in servers.LIST_COLUMNS}
    data["faults"] = list(server.faults)
    data["ports"] = server.ports
    data["disks"] = server.disks
    data.update(server.details)
    if server.admin_password:
        # Generated at creation; shown this once, stored nowhere.
        data["admin_password"] = server.admin_password
    return tuple(data), tuple(data.values())


class CreateServer(show.ShowOne):
    """Boot a server from an image."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", help="Server name (unique).")
        parser.add_argument("--image", required=True, metavar="IMAGE",
                            help="Image id or unique name.")
        parser.add_argument("--flavor", metavar="NAME", help="Flavor (`xhost flavor list`).")
        parser.add_argument("--vcpus", type=int, help="vCPUs (instead of --flavor).")
        parser.add_argument("--ram", type=int, metavar="MB", help="Memory (instead of --flavor).")
        parser.add_argument("--disk", type=int, metavar="GB", help="Root disk (instead of --flavor).")
        parser.add_argument("--ephemeral", type=int, metavar="GB", help="Ephemeral disk size.")
        parser.add_argument("--swap", type=int, metavar="MB", help="Swap disk size.")
        parser.add_argument("--network", action="append", default=[], metavar="NAME",
                            help="Attach a port on this network (repeatable).")
        parser.add_argument("--config-drive", action="store_true", help="Attach a config drive.")
        parser.add_argument("--user-data", metavar="FILE", help="User data for the config drive.")
        parser.add_argument("--key-file", metavar="FILE", help="SSH public key to inject.")
        parser.add_argument("--password", metavar="PASSWORD",
                            help="Administrator password the guest agent sets (generated and "
                                 "shown once when the image has an agent and none is given).")
        parser.add_argument("--file", action="append", default=[], type=_injected,
                            metavar="GUEST_PATH=LOCAL_FILE",
                            help="File the guest agent writes into the guest at first boot "
                                 "(repeatable).")
        parser.add_argument("--property", action="append", default=[], type=_property,
                            metavar="KEY=VALUE", help="Server metadata (repeatable).")
        parser.add_argument("--wait", action="store_true",
                            help="Wait until the server is active (creation always completes "
                                 "before the command returns; kept for compatibility).")
        return parser

    def take_action(self, args):
        if args.flavor and any(v is not None for v in (args.vcpus, args.ram, args.disk)):
            raise exception.XhostError("give either --flavor or --vcpus/--ram/--disk, not both")
        compute = self.app.compute()
        if args.flavor:
            flavor = flavor_mod.find(compute.conf, args.flavor)
            if args.ephemeral is not None or args.swap is not None:
                flavor = flavor_mod.parse(
                    f"{flavor.name}:{flavor.vcpus}:{flavor.ram_mb}:{flavor.root_gb}:"
                    f"{args.ephemeral if args.ephemeral is not None else flavor.ephemeral_gb}:"
                    f"{args.swap if args.swap is not None else flavor.swap_mb}")
        else:
            flavor = flavor_mod.custom(args.vcpus, args.ram, args.disk, args.ephemeral, args.swap)
        options = {"config_drive": args.config_drive, "metadata": dict(args.property)}
        if args.user_data:
            options["user_data"] = _read(args.user_data, "--user-data")
        if args.key_file:
            options["key_data"] = _read(args.key_file, "--key-file").decode().strip()
        if args.password is not None:
            options["admin_password"] = args.password
        if args.file:
            options["files"] = {guest: _read(local, "--file") for guest, local in args.file}
        callback = progress.steps(f"creating {args.name}", 100, stream=self.app.stderr)
        compute.progress = callback
        server = compute.create_server(args.name, args.image, flavor, args.network, **options)
        return _show(server)


class ListServers(lister.Lister):
    """List servers."""

    def take_action(self, args):
        compute = self.app.compute()
        return servers.LIST_COLUMNS, [s.row() for s in compute.list_servers()]


class ShowServer(show.ShowOne):
    """Show a server, its disks and ports."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME", help="Server name or id.")
        return parser

    def take_action(self, args):
        return _show(self.app.compute().show_server(args.name))


class DeleteServer(command.Command):
    """Delete servers and everything they own on the host (a missing server is
    not an error)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", nargs="+", metavar="NAME", help="Server name or id.")
        parser.add_argument("--wait", action="store_true",
                            help="Wait until deleted (deletion always completes before the "
                                 "command returns; kept for compatibility).")
        return parser

    def take_action(self, args):
        compute = self.app.compute()
        for name in args.name:
            if not compute.delete_server(name):
                print(f"no server {name!r}; nothing to delete", file=self.app.stderr)


class ListFlavors(lister.Lister):
    """List flavors (the classic m1.* set plus [compute] flavor entries)."""

    def take_action(self, args):
        columns = ("name", "vcpus", "ram_mb", "root_gb", "ephemeral_gb", "swap_mb")
        return columns, [tuple(getattr(f, c) for c in columns)
                         for f in flavor_mod.all_flavors(self.app.conf)]


class Reconcile(lister.Lister):
    """Finish the cleanup of operations an interrupted xhost left unfinished."""

    def take_action(self, args):
        from xhost import plugins
        from xhost.compute.api import Compute
        from xhost.compute.connection import connect

        compute = Compute(self.app.conf, connect(self.app.conf), plugins.load(self.app.conf))
        self.app._compute = compute
        return ("result",), [(line,) for line in compute.reconcile()]



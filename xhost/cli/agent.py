"""``xhost server set-password``, ``inject-file`` and ``reset-network``: the
guest agent of a running server."""
from __future__ import annotations

import getpass
import sys

from cliff import command

from xhost import exception
from xhost.cli.servers import _read


def _prompt_password(stderr) -> str:
    """Ask twice without echo; refuse when there is no terminal to ask on."""
    if not sys.stdin.isatty():
        raise exception.XhostError("no --password given and standard input is not a terminal "
                                   "to ask for one; give --password")
    first = getpass.getpass("New password: ", stream=stderr)
    if not first:
        raise exception.XhostError("the new password is empty; nothing was changed")
    if getpass.getpass("Repeat the password: ", stream=stderr) != first:
        raise exception.XhostError("the passwords do not match; nothing was changed")
    return first


class SetPassword(command.Command):
    """Set a running server's administrator password through its guest agent
    (asked for without echo when --password is not given)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME", help="Server name or id.")
        parser.add_argument("--password", metavar="PASSWORD",
                            help="The new password (visible to other local users in the "
                                 "process list; leave it out to be asked for it).")
        return parser

    def take_action(self, args):
        password = args.password if args.password is not None \
            else _prompt_password(self.app.stderr)
        self.app.compute().set_admin_password(args.name, password)
        print(f"password of {args.name} set", file=self.app.stdout)


class InjectFile(command.Command):
    """Write a local file into a running server through its guest agent."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME", help="Server name or id.")
        parser.add_argument("--path", required=True, metavar="GUEST_PATH",
                            help="Absolute path of the file inside the guest.")
        parser.add_argument("--file", required=True, metavar="LOCAL",
                            help="The local file to send.")
        return parser

    def take_action(self, args):
        contents = _read(args.file, "--file")
        self.app.compute().inject_file(args.name, args.path, contents)
        print(f"{args.file} written to {args.name}:{args.path}", file=self.app.stdout)


class ResetNetwork(command.Command):
    """Make a running server's guest agent apply its hostname and network
    configuration again."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME", help="Server name or id.")
        return parser

    def take_action(self, args):
        self.app.compute().reset_network(args.name)
        print(f"network of {args.name} reset", file=self.app.stdout)

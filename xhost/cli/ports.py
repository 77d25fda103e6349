"""``xhost server add-port`` and ``xhost server remove-port``: hot plug and
unplug of a server's network interfaces."""
from __future__ import annotations

from cliff import command, show


class AddPort(show.ShowOne):
    """Attach a new port to a server (hot-plugged if it runs)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME", help="Server name or id.")
        parser.add_argument("--network", required=True, metavar="NET",
                            help="Network of the port (a XAPI network name, bridge or uuid; "
                                 "with the openvswitch backend and an integration bridge, the "
                                 "network's label).")
        parser.add_argument("--vlan", type=int, metavar="TAG",
                            help="VLAN tag on NET (linux_bridge makes the VLAN network if "
                                 "needed).")
        parser.add_argument("--hybrid", action="store_true",
                            help="Use Nova's hybrid qbr/qvb/qvo plumbing for this port "
                                 "(iptables security groups).")
        return parser

    def take_action(self, args):
        port = self.app.compute().attach_interface(args.name, args.network, vlan=args.vlan,
                                                   hybrid_plug=args.hybrid)
        columns = ("id", "mac", "network", "device", "vlan", "hybrid_plug")
        return columns, tuple(port.get(c) for c in columns)


class RemovePort(command.Command):
    """Detach a port from a server (hot-unplugged if it runs) and remove what
    the network backend made for it."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME", help="Server name or id.")
        parser.add_argument("port", metavar="PORT", help="Port id or MAC address "
                                                         "(`xhost server show NAME`).")
        return parser

    def take_action(self, args):
        self.app.compute().detach_interface(args.name, args.port)

"""``xhost dom0 ...``: the scripts xhost needs on each host."""
from __future__ import annotations

import io
import os
import sys
import tarfile

from cliff import command, lister

import xhost.dom0
from xhost.xapi.dom0 import shipped_version


class ListDom0Scripts(lister.Lister):
    """List the dom0 scripts shipped with this xhost (install them in
    /etc/xapi.d/plugins on every host)."""

    def take_action(self, args):
        rows = [(name, os.path.join(xhost.dom0.DIRECTORY, name), shipped_version())
                for name in xhost.dom0.scripts()]
        return ("script", "path", "protocol version"), rows


class PackDom0Scripts(command.Command):
    """Write a gzipped tarball of the dom0 scripts, executable, for
    ``tar -xzf - -C /etc/xapi.d/plugins`` on a host."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--output", "-o", metavar="FILE",
                            help="Where to write it (default: standard output).")
        return parser

    def take_action(self, args):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name in xhost.dom0.scripts():
                path = os.path.join(xhost.dom0.DIRECTORY, name)
                info = tar.gettarinfo(path, arcname=name)
                info.mode = 0o755
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                with open(path, "rb") as f:
                    tar.addfile(info, f)
        data = buffer.getvalue()
        if args.output:
            with open(args.output, "wb") as f:
                f.write(data)
        else:
            out = getattr(self.app.stdout, "buffer", None) or sys.stdout.buffer
            out.write(data)
            out.flush()

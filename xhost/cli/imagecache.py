"""``xhost image cache list|clean``: the cached image VDIs on the host's SRs."""
from __future__ import annotations

import contextlib
import datetime

from cliff import lister

from xhost import imagecache

COLUMNS = ("sr", "image_id", "vdi", "status", "cached_time", "virtual_size",
           "physical_utilisation", "instances")


def _when(value: int | None) -> str:
    if value is None:
        return ""
    return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(item: imagecache.CachedImage) -> tuple:
    return (item.sr, item.image_id, item.vdi, item.status, _when(item.cached_time),
            item.virtual_size, item.physical_utilisation, item.instances)


class _CacheCommand(lister.Lister):
    @contextlib.contextmanager
    def context(self):
        """A context on a connection to the host (or the embedded simulator)."""
        from xhost.compute.connection import connect
        from xhost.context import Context

        connection = connect(self.app.conf, lambda m: print(m, file=self.app.stderr))
        try:
            ctx = Context(conf=self.app.conf, plugins=self.app.plugin_host(()),
                          xapi=connection.xapi, host_ref=connection.host_ref)
            ctx.extra["dom0"] = connection.dom0
            ctx.extra["connection"] = connection
            yield ctx
        finally:
            connection.close()


class ListCache(_CacheCommand):
    """List cached images (base VDIs instances are cloned from) and unfinished downloads."""

    def take_action(self, args):
        with self.context() as ctx:
            return COLUMNS, [_row(item) for item in imagecache.cached_images(ctx)]


class CleanCache(_CacheCommand):
    """Destroy cached images no instance uses, and unfinished downloads.

    Nova never purged its image cache; this does, on demand. Instances cloned
    from a cached image keep their data whatever is removed here.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--keep-days", type=float, default=0.0, metavar="N",
                            help="Keep images cached less than N days ago (default 0: none "
                                 "are kept for their age).")
        parser.add_argument("--include-used", action="store_true",
                            help="Also destroy cached images instances were cloned from (the "
                                 "next spawn downloads them again).")
        parser.add_argument("--dry-run", action="store_true",
                            help="Only list what would be destroyed.")
        return parser

    def take_action(self, args):
        if args.keep_days < 0:
            raise ValueError("--keep-days must be 0 or more")
        with self.context() as ctx:
            removed = imagecache.clean(ctx, keep_days=args.keep_days,
                                       include_used=args.include_used, dry_run=args.dry_run)
        return COLUMNS, [_row(item) for item in removed]

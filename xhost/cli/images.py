"""``xhost image ...``: the configured image service, from the command line."""
from __future__ import annotations

import contextlib
import os
import tempfile

from cliff import command, lister, show

from xhost import images
from xhost.cli import progress

LIST_COLUMNS = ("id", "name", "status", "disk_format", "container_format", "size", "checksum")
ROLES = ("image_service",)


def _row(image, columns=LIST_COLUMNS):
    return tuple(getattr(image, c) for c in columns)


def _show(image):
    data = {k: getattr(image, k) for k in images.ATTRIBUTES}
    data["properties"] = dict(image.properties)
    return tuple(data), tuple(data.values())


def _property(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--property takes KEY=VALUE, not {text!r}")
    return key.strip(), value


class CreateImage(show.ShowOne):
    """Create an image from a local file (uploaded with a progress bar)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", help="Image name.")
        parser.add_argument("--file", required=True, metavar="PATH", help="The image data.")
        parser.add_argument("--disk-format", required=True, choices=images.DISK_FORMATS)
        parser.add_argument("--container-format", required=True, choices=images.CONTAINER_FORMATS)
        parser.add_argument("--property", action="append", default=[], metavar="KEY=VALUE",
                            type=_property, help="Image property (repeatable).")
        return parser

    def take_action(self, args):
        if not os.path.isfile(args.file):
            raise images.ImageError(reason=f"--file {args.file}: no such file")
        ctx = self.app.context(ROLES)
        size = os.path.getsize(args.file)
        image = ctx.plugins.image_service_create(ctx, args.name, args.disk_format,
                                                 args.container_format, dict(args.property))
        try:
            with open(args.file, "rb") as data:
                chunks = progress.track(iter(lambda: data.read(1024 * 1024), b""),
                                        f"uploading {args.name}", size, stream=self.app.stderr)
                image = ctx.plugins.image_service_upload(ctx, image.id, chunks, size)
        except BaseException:
            # no half-created image: the record goes if its data did not arrive
            with contextlib.suppress(Exception):
                ctx.plugins.image_service_delete(ctx, image.id)
            raise
        ctx.plugins.image_uploaded(ctx, image, None)
        return _show(image)


class ListImages(lister.Lister):
    """List images."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--name", help="Only images with this name.")
        return parser

    def take_action(self, args):
        ctx = self.app.context(ROLES)
        filters = {"name": args.name} if args.name else {}
        return LIST_COLUMNS, [_row(i) for i in ctx.plugins.image_service_list(ctx, filters)]


class ShowImage(show.ShowOne):
    """Show an image (by id or unique name)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("image", metavar="IMAGE", help="Image id or name.")
        return parser

    def take_action(self, args):
        ctx = self.app.context(ROLES)
        return _show(images.resolve(ctx, args.image))


class DeleteImage(command.Command):
    """Delete images (by id or unique name)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("image", metavar="IMAGE", nargs="+", help="Image id or name.")
        return parser

    def take_action(self, args):
        ctx = self.app.context(ROLES)
        for ref in args.image:
            image = images.resolve(ctx, ref)
            ctx.plugins.image_service_delete(ctx, image.id)


class DownloadImage(command.Command):
    """Save an image's data to a file (verified against its checksums)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("image", metavar="IMAGE", help="Image id or name.")
        parser.add_argument("--file", required=True, metavar="PATH", help="Where to write it.")
        return parser

    def take_action(self, args):
        ctx = self.app.context(ROLES)
        image = images.resolve(ctx, args.image)
        target = os.path.abspath(args.file)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".xhost-download-")
        try:
            with os.fdopen(fd, "wb") as out:
                chunks = ctx.plugins.image_service_download(ctx, image.id)
                for chunk in progress.track(chunks, f"downloading {image.name or image.id}",
                                            image.size, stream=self.app.stderr):
                    out.write(chunk)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

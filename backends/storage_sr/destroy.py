"""Destroying an instance's disks: every VDI tagged with its uuid, never a
cached image or a volume, whatever is still attached."""
from __future__ import annotations

import logging

from xhost import exception
from xhost.compute.vmrecord import VDI_TAG_INSTANCE
from xhost.context import Context
from xhost.objects import Instance

from .errors import StorageError
from .rootdisk import imagecache
from .vdis import destroy_vdi

LOG = logging.getLogger(__name__)
#: other_config key of cached image VDIs (never destroyed here).
IMAGE_TAG = "image-id"


def destroy_disks(ctx: Context, instance: Instance, vm_ref: str | None) -> bool:
    failures = []
    # The dom0 kernel/ramdisk files are the image cache's: it knows where it
    # put them (the VM's PV_kernel/PV_ramdisk while the VM exists).
    try:
        imagecache().remove_instance_files(ctx, instance)
    except Exception as exc:
        LOG.warning("could not remove the dom0 kernel files of %s: %s", instance.name, exc)
        failures.append(f"dom0 kernel/ramdisk files: {exc}")
    records = ctx.xapi.call("VDI.get_all_records")
    for ref, rec in records.items():
        other = rec.get("other_config", {})
        if other.get(VDI_TAG_INSTANCE) != instance.uuid or IMAGE_TAG in other:
            continue
        try:
            destroy_vdi(ctx, ref, rec.get("VBDs"))
        except exception.XapiError as exc:
            LOG.warning("could not destroy disk %s of %s: %s", rec.get("uuid"), instance.name, exc)
            failures.append(f"{rec.get('name_label')!r} ({rec.get('uuid')}): {exc}")
    if failures:
        raise StorageError(reason=f"some disks of {instance.name or instance.uuid} could not "
                                  f"be destroyed: {'; '.join(failures)}")
    return True

#!/usr/bin/env python3
"""xhost dom0 plugin: the version handshake.

xhost calls ``get_version`` once per host before any other xhost dom0 script
and refuses to go on unless the major versions match and the host's minor
version is at least the one xhost was shipped with.

Version history (bump the minor for additions, the major for changes that
break older xhost releases):

1.0 - xhost_version, xhost_dom0lib (JSON arguments in ``args``).
1.1 - xhost_agent (guest agent requests over XenStore), xhost_xenstore
      (vm-data/ keys of running domains).
1.2 - xhost_network: plug_hybrid, unplug_hybrid (Nova's qbr/qvb/qvo plumbing in one call).
1.3 - xhost_disks: make_filesystem, grow_partition, release_device.
1.4 - xhost_images (download_vhd, upload_vhd, remove_vhds) and xhost_kernel
      (copy_vdi, remove_files) for the image handlers.
1.5 - xhost_images.remove_vhds waits for a download of the same files still running.
"""
import sys

import xhost_dom0lib

PLUGIN_VERSION = "1.5"


def get_version(session):
    return {
        "version": PLUGIN_VERSION,
        "protocol": xhost_dom0lib.PROTOCOL,
        "python": "%d.%d.%d" % sys.version_info[:3],
    }


if __name__ == "__main__":
    xhost_dom0lib.dispatch({"get_version": get_version})

"""``sr``: instance disks in a XAPI storage repository (the default storage
backend), made the way Nova's XenAPI driver made them.

The SR comes from ``[xenserver] sr_matching_filter``; the root disk from the
image cache (a copy-on-write clone of the cached image) grown to the flavor's
size, with its partition and filesystem grown too under auto disk config;
ephemeral and swap disks partitioned and formatted in dom0 by the real
``sfdisk``/``mkfs``/``mkswap`` (dom0 script ``xhost_disks``); the config
drive an ISO 9660 ``config-2`` image made with pycdlib and streamed in
through ``/import_raw_vdi``; volumes are existing VDIs.
"""

"""``vdi_local_dev``: disks attached to the VM xhost runs in and written as block devices."""

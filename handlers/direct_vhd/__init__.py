"""``direct_vhd``: dom0 moves VHD chains between the image service and file SRs."""

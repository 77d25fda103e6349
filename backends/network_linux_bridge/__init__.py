"""``linux_bridge``: VIFs on XAPI networks bound to Linux bridges (``xenbrN``),
VLAN networks made on demand, Nova's hybrid ``qbr``/``qvb``/``qvo`` plumbing
as an option."""

"""``openvswitch``: ports on the dom0 Open vSwitch, written over OVSDB for
Neutron's Open vSwitch agent (no dom0 script per VIF)."""

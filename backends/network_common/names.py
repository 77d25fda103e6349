"""Nova's names for a port's devices and interim network.

Linux interface names are limited to 15 characters; Nova cut every name it
derived from a port id to 14 (``NIC_NAME_LEN``), and so does xhost, so that
hosts plumbed by Nova and by xhost look the same.
"""
from __future__ import annotations

from dataclasses import dataclass

NIC_NAME_LEN = 14


def device_name(prefix: str, port_id: str) -> str:
    """``<prefix><port id>`` cut to 14 characters (``qbr1b2c3d4e-5f``)."""
    return (prefix + port_id)[:NIC_NAME_LEN]


def interim_network_name(port_id: str) -> str:
    """name_label of a port's interim network (Nova: ``net-<port id>`` cut to 14)."""
    return device_name("net-", port_id)


@dataclass(frozen=True)
class HybridNames:
    """The devices of Nova's hybrid plumbing for one port."""

    qbr: str
    qvb: str
    qvo: str
    #: The veth pair patching an Open vSwitch interim bridge to ``qbr``.
    tap: str
    patch: str

    @classmethod
    def for_port(cls, port_id: str) -> HybridNames:
        return cls(qbr=device_name("qbr", port_id), qvb=device_name("qvb", port_id),
                   qvo=device_name("qvo", port_id), tap=device_name("tap", port_id),
                   patch=device_name("vif", port_id))

"""Flavors: the classic ``m1.*`` set, plus any defined in the configuration."""
from __future__ import annotations

from oslo_config import cfg

from xhost import exception
from xhost.objects import Flavor

#: Nova's classic default flavors.
BUILTIN = (
    Flavor("m1.tiny", vcpus=1, ram_mb=512, root_gb=1),
    Flavor("m1.small", vcpus=1, ram_mb=2048, root_gb=20),
    Flavor("m1.medium", vcpus=2, ram_mb=4096, root_gb=40),
    Flavor("m1.large", vcpus=4, ram_mb=8192, root_gb=80),
    Flavor("m1.xlarge", vcpus=8, ram_mb=16384, root_gb=160),
)


class FlavorError(exception.XhostError):
    msg_fmt = "{reason}"


def parse(text: str) -> Flavor:
    """``NAME:VCPUS:RAM_MB:DISK_GB[:EPHEMERAL_GB[:SWAP_MB]]``."""
    parts = text.strip().split(":")
    if not 4 <= len(parts) <= 6 or not parts[0]:
        raise FlavorError(reason=f"[compute] flavor {text!r} is not "
                                 f"NAME:VCPUS:RAM_MB:DISK_GB[:EPHEMERAL_GB[:SWAP_MB]]")
    try:
        numbers = [int(p) for p in parts[1:]]
    except ValueError:
        raise FlavorError(reason=f"[compute] flavor {text!r}: sizes must be integers") from None
    numbers += [0] * (5 - len(numbers))
    vcpus, ram, disk, ephemeral, swap = numbers
    if vcpus < 1 or ram < 1 or disk < 0 or ephemeral < 0 or swap < 0:
        raise FlavorError(reason=f"[compute] flavor {text!r}: needs at least 1 vCPU and 1 MB "
                                 f"of RAM, and no negative sizes")
    return Flavor(parts[0], vcpus=vcpus, ram_mb=ram, root_gb=disk, ephemeral_gb=ephemeral,
                  swap_mb=swap)


def all_flavors(conf: cfg.ConfigOpts) -> list[Flavor]:
    flavors = {f.name: f for f in BUILTIN}
    for text in conf.compute.flavor:
        flavor = parse(text)
        flavors[flavor.name] = flavor
    return list(flavors.values())


def find(conf: cfg.ConfigOpts, name: str) -> Flavor:
    for flavor in all_flavors(conf):
        if flavor.name == name:
            return flavor
    names = ", ".join(f.name for f in all_flavors(conf))
    raise FlavorError(reason=f"no flavor {name!r} (flavors: {names}; define more with "
                             f"[compute] flavor, or give --vcpus/--ram/--disk)")


def custom(vcpus: int | None, ram_mb: int | None, disk_gb: int | None, ephemeral_gb: int | None,
           swap_mb: int | None) -> Flavor:
    if vcpus is None or ram_mb is None or disk_gb is None:
        raise FlavorError(reason="give --flavor NAME, or all of --vcpus, --ram and --disk")
    return parse(f"custom:{vcpus}:{ram_mb}:{disk_gb}:{ephemeral_gb or 0}:{swap_mb or 0}")

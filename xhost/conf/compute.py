"""Core options of the compute layer, the embedded simulator and the Nova
``[DEFAULT]`` options xhost honours."""
from __future__ import annotations

import os

from oslo_config import cfg


def _state_home() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    return os.path.join(base, "xhost")


COMPUTE = cfg.OptGroup("compute", title="Compute options",
                       help="How xhost creates and tracks instances.")
compute_opts = [
    cfg.StrOpt("state_dir", default=_state_home(), sample_default="$XDG_STATE_HOME/xhost",
               help="Where xhost keeps its journal of operations in flight (so an interrupted "
                    "operation is cleaned up by the next run or `xhost reconcile`)."),
    cfg.MultiStrOpt("flavor", default=[],
                    help="An extra flavor, NAME:VCPUS:RAM_MB:DISK_GB[:EPHEMERAL_GB[:SWAP_MB]] "
                         "(repeatable). The classic m1.tiny ... m1.xlarge are built in."),
    cfg.IntOpt("spawn_timeout", default=600, min=1,
               help="Seconds a spawn may take before it is rolled back."),
]

SIMULATOR = cfg.OptGroup("simulator", title="Embedded simulator options",
                         help="The simulated XAPI host xhost uses when [xenserver] "
                              "connection_url is not set.")
simulator_opts = [
    cfg.StrOpt("state_dir", default=os.path.join(_state_home(), "sim"),
               sample_default="$XDG_STATE_HOME/xhost/sim",
               help="Directory of the embedded simulator's state (its objects, disks and "
                    "dom0 files)."),
    cfg.FloatOpt("speed", default=0.0, min=0,
                 help="Latency of the embedded simulator: 0 answers at once, 1 behaves like a "
                      "real host."),
    cfg.StrOpt("real_network", default="off", choices=("off", "on", "auto"),
               help="Give the embedded simulator's dom0 real bridges and vif interfaces in a "
                    "network namespace, with a private Open vSwitch (root only; needs ip and "
                    "openvswitch-switch). 'auto': when that is possible."),
]

#: Nova [DEFAULT] options xhost reads (same names, types and defaults).
nova_default_opts = [
    cfg.StrOpt("default_ephemeral_format",
               help="Filesystem of new ephemeral disks (ext2, ext3, ext4, xfs, vfat...). "
                    "Unset: ext3, as Nova's XenAPI driver formatted them."),
    cfg.BoolOpt("use_cow_images", default=True,
                help="Clone cached images copy-on-write (on SRs that support it)."),
    cfg.BoolOpt("force_config_drive", default=False,
                help="Give every instance a config drive."),
    cfg.BoolOpt("flat_injected", default=False,
                help="Inject network configuration into the image's filesystem (not supported "
                     "by xhost; the guest agent or a config drive configure networking)."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(COMPUTE)
    conf.register_opts(compute_opts, group=COMPUTE)
    conf.register_group(SIMULATOR)
    conf.register_opts(simulator_opts, group=SIMULATOR)
    conf.register_opts(nova_default_opts)


def list_opts():
    return [("DEFAULT", nova_default_opts), (COMPUTE, compute_opts), (SIMULATOR, simulator_opts)]

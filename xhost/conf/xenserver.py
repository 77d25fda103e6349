"""The ``[xenserver]`` group: Nova's options, unchanged, plus xhost's selectors.

Every option of Nova's ``nova/conf/xenserver.py`` (as it was when the XenAPI
driver was removed) is registered here with Nova's name, type, default and
bounds, so an existing ``[xenserver]`` section of a ``nova.conf`` loads
unchanged. xhost adds the plugin selectors (``network_backend``,
``storage_backend``, ``guest_agent``, ``image_service``,
``enabled_extensions``) and makes ``image_handler``'s choices come from the
installed plugins.
"""
from __future__ import annotations

import socket

from oslo_config import cfg

from xhost import registry
from xhost.conf import types as xtypes

GROUP = cfg.OptGroup(
    "xenserver",
    title="XenServer / XCP-ng options",
    help="How xhost reaches the XAPI host and which plugins it uses. The "
    "option names, types and defaults of Nova's [xenserver] section are kept, "
    "so a nova.conf can be used as it is. Without connection_url xhost uses "
    "its embedded simulated host.",
)

MiB = 1024 * 1024

agent_opts = [
    cfg.IntOpt("agent_timeout", default=30, min=0,
               help="Seconds to wait for the guest agent's reply to one request."),
    cfg.IntOpt("agent_version_timeout", default=300, min=0,
               help="Seconds to keep asking the guest agent for its version while an instance "
                    "boots, i.e. how long the agent may take to come up. If it never answers, "
                    "the other agent steps are skipped."),
    cfg.IntOpt("agent_resetnetwork_timeout", default=60, min=0,
               help="Seconds to wait for the guest agent's reply to 'resetnetwork'."),
    cfg.StrOpt("agent_path", default="usr/sbin/xe-update-networking",
               help="Path, relative to the image's root, whose presence means the image's "
                    "agent configures networking itself (so network files are not injected "
                    "into the image)."),
    cfg.BoolOpt("disable_agent", default=False,
                help="Never talk to a guest agent, whatever the image properties say "
                     "(selects the 'none' guest agent)."),
    cfg.BoolOpt("use_agent_default", default=False,
                help="Use the guest agent when the image does not say (no valid "
                     "'img_use_agent' / 'xenapi_use_agent' property). Booting images without "
                     "an agent then waits agent_version_timeout."),
]

session_opts = [
    cfg.IntOpt("login_timeout", default=10, min=0,
               help="Seconds to wait for a XenAPI login to complete."),
    cfg.IntOpt("connection_concurrent", default=5, min=1,
               help="Maximum number of concurrent XenAPI sessions (the size of xhost's "
                    "session pool)."),
]

vm_utils_opts = [
    cfg.StrOpt("cache_images", default="all", choices=("all", "some", "none"),
               help="Cache images in the SR as base VDIs that instances clone copy-on-write. "
                    "'some' caches only images whose property 'cache_in_nova' "
                    "('img_cache_in_nova') is true. See 'xhost image cache clean' to purge."),
    cfg.IntOpt("image_compression_level", min=1, max=9,
               help="gzip level (1-9) of the tarballs uploaded as images. Unset: gzip's "
                    "default (6)."),
    cfg.StrOpt("default_os_type", default="linux",
               help="os_type property given to uploaded images when the instance has none."),
    cfg.IntOpt("block_device_creation_timeout", default=10, min=1,
               help="Seconds to wait for a block device to appear after attaching a VDI."),
    cfg.IntOpt("max_kernel_ramdisk_size", default=16 * MiB,
               help="Largest kernel or ramdisk image (bytes) copied to dom0's /boot/guest."),
    cfg.StrOpt("sr_matching_filter", default="default-sr:true",
               help="How to choose the SR for instance disks: 'default-sr:true' (the pool's "
                    "default SR) or 'other-config:<key>=<value>' (e.g. "
                    "other-config:i18n-key=local-storage), among SRs plugged on this host."),
    cfg.BoolOpt("sparse_copy", default=True,
                help="Skip zero blocks when copying a partition during a resize down."),
    cfg.IntOpt("num_vbd_unplug_retries", default=10, min=0,
               help="Retries of VBD.unplug (0: try once)."),
    cfg.StrOpt("ipxe_network_name", help="Network whose IPv4 settings are baked into iPXE ISOs."),
    cfg.StrOpt("ipxe_boot_menu_url", help="URL of the iPXE boot menu chained by iPXE ISOs."),
    cfg.StrOpt("ipxe_mkisofs_cmd", default="mkisofs",
               help="Name (or path) of the ISO builder run in dom0 for iPXE ISOs."),
]

xenapi_opts = [
    cfg.StrOpt("connection_url",
               help="URL of the XAPI host, e.g. https://192.0.2.10 (its management address). "
                    "Unset: xhost runs its embedded simulated host (state in a per-user "
                    "directory) and says so."),
    cfg.StrOpt("connection_username", default="root", help="XAPI user name."),
    cfg.StrOpt("connection_password", secret=True, help="XAPI password."),
    cfg.FloatOpt("vhd_coalesce_poll_interval", default=5.0, min=0,
                 help="Seconds between checks that a snapshot's VHD parent has coalesced."),
    cfg.BoolOpt("check_host", default=True,
                help="Check that xhost runs in a VM on the host given by connection_url. Must "
                     "be false with independent_compute."),
    cfg.IntOpt("vhd_coalesce_max_attempts", default=20, min=0,
               help="Checks for VHD coalescing before giving up."),
    cfg.StrOpt("sr_base_path", default="/var/run/sr-mount",
               help="Where file-based SRs are mounted in dom0, used when a PBD gives no path."),
    cfg.HostAddressOpt("target_host", help="iSCSI target host used when a volume's connection "
                                           "information has none."),
    cfg.PortOpt("target_port", default=3260, help="iSCSI target port used when a volume's "
                                                  "connection information has none."),
    cfg.BoolOpt("independent_compute", default=False,
                help="xhost does not run in a VM on the host, so nothing is attached to its "
                     "own VM: raw, AMI and ISO images through vdi_local_dev, auto disk config "
                     "and non-ext3 ephemeral formats are refused."),
]

vmops_opts = [
    cfg.IntOpt("running_timeout", default=60, min=0,
               help="Seconds to wait for an instance to reach the Running state after it is "
                    "unpaused; the instance goes to ERROR otherwise."),
    cfg.StrOpt("image_upload_handler", default="", deprecated_for_removal=True,
               deprecated_since="Nova 18.0.0",
               deprecated_reason="Use image_handler, which names the handler for both "
                                 "directions.",
               help="Nova class path (or xhost name) of the image handler used for uploads "
                    "only, overriding image_handler."),
    cfg.Opt("image_handler", type=xtypes.PluginName(registry.ROLES_BY_KEY["image_handler"]),
            default="direct_vhd",
            help="The image handler plugin (entry point in 'xhost.image_handlers'): moves "
                 "image bytes between the image service and the host's storage in both "
                 "directions. direct_vhd: dom0 processes VHD files in the SR itself "
                 "(file-based SRs: ext, nfs). vdi_local_dev: the VDI is attached to the "
                 "machine xhost runs in and written as a block device. vdi_remote_stream: "
                 "xhost streams through XAPI's /import_raw_vdi and /export_raw_vdi (any SR "
                 "type)."),
]

volume_utils_opts = [
    cfg.IntOpt("introduce_vdi_retry_wait", default=20, min=0,
               help="Seconds to wait for a newly introduced SR to show its VDI."),
]

ovs_opts = [
    cfg.StrOpt("ovs_integration_bridge",
               help="Open vSwitch integration bridge in dom0 (usually br-int)."),
]

pool_opts = [
    cfg.BoolOpt("use_join_force", default=True,
                help="Join hosts to a pool with pool.join_force (ignoring CPU differences)."),
]

console_opts = [
    cfg.StrOpt("console_public_hostname", default=socket.gethostname(),
               sample_default="<current_hostname>", deprecated_group="DEFAULT",
               help="Publicly visible name of this console host."),
]

#: Nova's 36 options, in Nova's order.
NOVA_OPTS = (agent_opts + session_opts + vm_utils_opts + xenapi_opts + vmops_opts
             + volume_utils_opts + ovs_opts + pool_opts + console_opts)


#: xhost's additions to the session options (Nova had no TLS or call timeout knobs).
xhost_session_opts = [
    cfg.StrOpt("connection_ca_file",
               help="CA bundle (PEM) to verify the host's TLS certificate with, for https "
                    "connection_url. Unset: the system's trusted CAs."),
    cfg.BoolOpt("connection_insecure", default=False,
                help="Do not verify the host's TLS certificate. Only for tests and "
                     "self-signed hosts you cannot give a CA for."),
    cfg.IntOpt("call_timeout", default=300, min=1,
               help="Seconds to wait for the answer to one XenAPI call (long operations run "
                    "as tasks and are waited for separately)."),
]


def _selector(key: str, help_text: str, **kwargs) -> cfg.Opt:
    role = registry.ROLES_BY_KEY[key]
    return cfg.Opt(role.option, type=xtypes.PluginName(role), default=role.default,
                   help=help_text, **kwargs)


def selector_opts() -> list[cfg.Opt]:
    """xhost's plugin selectors (choices read from the installed plugins)."""
    return [
        _selector("network_backend",
                  "The network backend plugin (entry point in 'xhost.network_backends'). "
                  "Nova's removed [xenserver] vif_driver class paths are accepted as "
                  "deprecated aliases.",
                  deprecated_name="vif_driver"),
        _selector("storage_backend",
                  "The storage backend plugin (entry point in 'xhost.storage_backends'): "
                  "chooses the SR and makes root, ephemeral, swap and config-drive disks."),
        _selector("guest_agent",
                  "The guest agent plugin (entry point in 'xhost.guest_agents'). "
                  "disable_agent = True overrides it with 'none'."),
        _selector("image_service",
                  "The image service plugin (entry point in 'xhost.image_services') that "
                  "stores images: 'local' (a directory, no set-up) or 'glance'."),
        cfg.Opt("enabled_extensions", type=xtypes.PluginNameList(registry.EXTENSION_ROLE),
                default=[],
                help="Extensions (entry points in 'xhost.extensions') to load, in order. "
                     "They receive lifecycle notifications (instance spawned, destroyed...)."),
    ]


_SELECTORS: list[cfg.Opt] | None = None


def all_opts() -> list[cfg.Opt]:
    # Built once per process so that registering twice (the same Opt objects)
    # is a no-op for oslo.config.
    global _SELECTORS
    if _SELECTORS is None:
        _SELECTORS = selector_opts()
    return list(NOVA_OPTS) + xhost_session_opts + _SELECTORS


#: Options Nova used to have in [xenserver] that xhost accepts silently.
REMOVED_NOVA_OPTS = frozenset({
    "torrent_images", "torrent_base_url", "torrent_seed_chance", "torrent_seed_duration",
    "torrent_max_last_accessed", "torrent_listen_port_start", "torrent_listen_port_end",
    "torrent_download_stall_cutoff", "torrent_max_seeder_processes_per_host",
    "remap_vbd_dev", "remap_vbd_dev_prefix", "iqn_prefix",
})


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(all_opts(), group=GROUP)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    return [(GROUP, all_opts())]

"""Hook specifications: the reference manual of what xhost plugins implement.

xhost has five plugin **roles**. For each role exactly one plugin is active,
chosen by name in the configuration, and loaded from the role's entry-point
namespace:

================  ===========================  ==============================
role              entry-point namespace        selected by
================  ===========================  ==============================
image handler     ``xhost.image_handlers``     ``[xenserver] image_handler``
image service     ``xhost.image_services``     ``[xenserver] image_service``
network backend   ``xhost.network_backends``   ``[xenserver] network_backend``
storage backend   ``xhost.storage_backends``   ``[xenserver] storage_backend``
guest agent       ``xhost.guest_agents``       ``[xenserver] guest_agent``
================  ===========================  ==============================

Role hooks are ``firstresult``: they are answered by the selected plugin of
their role only (xhost refuses to load an extension that implements another
role's hook). A role plugin may leave a hook unimplemented; calling it then
fails with a message naming the plugin and what it does not support.

Any number of **extensions** (``xhost.extensions``, enabled by
``[xenserver] enabled_extensions``) implement the *broadcast* hooks at the end
of this module; role plugins may implement them too. Broadcast hooks return
nothing; an exception raised by one is logged and does not stop the others or
the operation.

Every hook receives ``ctx``, a :class:`xhost.context.Context` for the current
operation (configuration, XAPI client, the loaded plugins, the undo log,
progress). Hooks are called with keyword arguments, and an implementation
may accept only the arguments it uses, so hooks gain arguments without
breaking existing plugins. Arguments are never removed or renamed.

A plugin is a class registered under an entry point, instantiated once with
the configuration (``cls(conf)``) and registered with the plugin manager, or a
module of functions. Implementations are marked with :data:`xhost.hookimpl`::

    from xhost import hookimpl

    class MyHandler:
        def __init__(self, conf):
            conf.register_opts(MY_OPTS, group="image_my_handler")
            self.conf = conf.image_my_handler

        @hookimpl
        def xhost_image_download(self, ctx, image, sr_ref, instance):
            ...
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import pluggy

from xhost import NAME

if TYPE_CHECKING:
    from oslo_config import cfg

    from xhost.context import Context
    from xhost.objects import (
        Disk,
        DownloadedImage,
        ImageHandlerCapabilities,
        ImageLocation,
        ImageMeta,
        Instance,
        Port,
        StorageCapabilities,
    )
    from xhost.plugins import PluginHost

_spec = pluggy.HookspecMarker(NAME)

#: hook name prefix -> role, for the hooks that belong to a role.
ROLE_PREFIXES = {
    "xhost_image_service_": "image_service",
    "xhost_image_": "image_handler",
    "xhost_network_": "network_backend",
    "xhost_storage_": "storage_backend",
    "xhost_agent_": "guest_agent",
}

#: Broadcast hooks whose name would otherwise look like a role hook.
BROADCAST_HOOKS = frozenset({"xhost_image_uploaded"})


def role_of(hook_name: str) -> str | None:
    """Return the role a hook belongs to, or ``None`` for broadcast hooks."""
    if hook_name in BROADCAST_HOOKS:
        return None
    for prefix, role in ROLE_PREFIXES.items():
        if hook_name.startswith(prefix):
            return role
    return None


# -----------------------------------------------------------------------------
# Image handler: moves image bytes between an image service and a host's SRs
# -----------------------------------------------------------------------------


@_spec(firstresult=True)
def xhost_image_capabilities(ctx: Context) -> ImageHandlerCapabilities:
    """Say which images the handler can download, into which SR types, and
    what it produces on upload.

    Core uses this to refuse early (before anything is created) an image or
    an SR the handler cannot deal with, with a message naming an alternative.

    :param ctx: the operation context.
    :returns: the handler's capabilities.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_image_download(
    ctx: Context, image: ImageMeta, sr_ref: str, instance: Instance | None
) -> DownloadedImage:
    """Bring an image into an SR as one or more VDIs.

    Called on an image-cache miss. The implementation fetches the bytes from
    the configured image service (``ctx.plugins.image_service_*``, or
    :func:`xhost_image_service_location` when dom0 fetches them itself),
    verifies them (checksum, VHD structure), and creates the VDIs. Every VDI
    it creates must be registered in ``ctx.undo`` as soon as it exists, and
    on failure it must leave nothing behind itself (no VDI, no staging file).

    :param ctx: the operation context.
    :param image: the image, as the image service describes it.
    :param sr_ref: XAPI ref of the SR to create the VDIs in.
    :param instance: the instance the image is fetched for, or ``None`` when
        warming the cache.
    :returns: the disks made, keyed by kind (``root``; ``kernel`` and
        ``ramdisk`` for AMI images; ``iso`` for ISO images).

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_image_upload(
    ctx: Context, image: ImageMeta, vdi_refs: list[str], instance: Instance | None
) -> ImageMeta:
    """Upload a disk (a VHD chain) as the data of an existing, queued image.

    :param ctx: the operation context.
    :param image: the image record to upload into (already created in the
        image service, status ``queued``); its ``properties`` are sent along.
    :param vdi_refs: the disk to upload as its VHD chain, leaf first (a
        snapshot VDI, then its parents).
    :param instance: the instance the disk belongs to, if any.
    :returns: the image as the image service describes it afterwards
        (status ``active``).

    Stops at first non-None result (firstresult).
    """


# -----------------------------------------------------------------------------
# Image service: stores images and their metadata (Glance, a local directory)
# -----------------------------------------------------------------------------


@_spec(firstresult=True)
def xhost_image_service_create(
    ctx: Context,
    name: str,
    disk_format: str,
    container_format: str,
    properties: dict[str, Any],
) -> ImageMeta:
    """Create an image record with no data yet (status ``queued``).

    :param ctx: the operation context.
    :param name: the image name (need not be unique).
    :param disk_format: ``vhd``, ``raw``, ``iso``, ``aki``, ``ari``, ``ami``...
    :param container_format: ``bare``, ``ovf``, ``tgz``, ``aki``, ``ari``...
    :param properties: extra image properties.
    :returns: the new image.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_image_service_show(ctx: Context, image_id: str) -> ImageMeta:
    """Describe one image.

    :param ctx: the operation context.
    :param image_id: the image id.
    :returns: the image; raises :class:`xhost.images.ImageNotFound` if there is
        no such image.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_image_service_list(ctx: Context, filters: dict[str, str]) -> list[ImageMeta]:
    """List images.

    :param ctx: the operation context.
    :param filters: attribute -> value equality filters (e.g. ``{"name": "x"}``).
    :returns: the matching images (possibly empty).

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_image_service_update(
    ctx: Context, image_id: str, changes: dict[str, Any], remove: list[str]
) -> ImageMeta:
    """Change an image's attributes or properties.

    :param ctx: the operation context.
    :param image_id: the image id.
    :param changes: attributes/properties to set.
    :param remove: property names to delete.
    :returns: the updated image.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_image_service_delete(ctx: Context, image_id: str) -> bool:
    """Delete an image and its data.

    :param ctx: the operation context.
    :param image_id: the image id.
    :returns: ``True``; raises :class:`xhost.images.ImageNotFound` if there is
        no such image.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_image_service_upload(
    ctx: Context, image_id: str, data: Iterable[bytes] | BinaryIO, size: int | None
) -> ImageMeta:
    """Store the data of a queued image, streaming (never all in memory).

    :param ctx: the operation context.
    :param image_id: the image id (status ``queued``).
    :param data: the bytes, as an iterable of chunks or a binary file object.
    :param size: the number of bytes if known in advance, else ``None``.
    :returns: the image afterwards (status ``active``, ``size`` and checksums
        set).

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_image_service_download(ctx: Context, image_id: str) -> Iterator[bytes]:
    """Stream an image's data.

    The iterator verifies the data as it goes (size, ``checksum`` and
    ``os_hash_value``) and raises when the stream ends if they do not match,
    so a consumer must not commit what it received before exhausting it.

    :param ctx: the operation context.
    :param image_id: the image id (status ``active``).
    :returns: an iterator of byte chunks.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_image_service_location(
    ctx: Context, image_id: str, for_upload: bool
) -> ImageLocation | None:
    """Say where something other than xhost (a dom0 script) can fetch or store
    an image's data over HTTP(S), with the headers to send.

    :param ctx: the operation context.
    :param image_id: the image id.
    :param for_upload: ``True`` for the URL to PUT data to, ``False`` to GET.
    :returns: the location, or ``None`` if the service cannot be reached that
        way (handlers that need it then refuse with a clear message). A
        location with ``revoke`` set must be revoked by its user once the
        transfer is over, whether it happened or not.

    Stops at first non-None result (firstresult).
    """


# -----------------------------------------------------------------------------
# Network backend: the host side of an instance's network interfaces
# -----------------------------------------------------------------------------


@_spec(firstresult=True)
def xhost_network_prepare(ctx: Context, instance: Instance, port: Port) -> str:
    """Create what a port needs on the host before its VIF exists (a XAPI
    network, a VLAN, a bridge...) and return the network to attach it to.

    Must be idempotent: called again for the same port it returns the same
    network. Everything created goes into ``ctx.undo``.

    :param ctx: the operation context.
    :param instance: the instance.
    :param port: the port.
    :returns: the XAPI ref of the network the VIF goes on.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_network_plug_vif(
    ctx: Context, instance: Instance, vm_ref: str, port: Port, network_ref: str, device: str
) -> str:
    """Create the VIF of a port on a VM (halted or running; on a running VM
    it is also hot-plugged through :func:`xhost_network_hot_plug`).

    :param ctx: the operation context.
    :param instance: the instance.
    :param vm_ref: XAPI ref of the instance's VM.
    :param port: the port.
    :param network_ref: the network from :func:`xhost_network_prepare`.
    :param device: the VIF device number (``"0"``, ``"1"``...).
    :returns: the XAPI ref of the VIF.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_network_post_start(
    ctx: Context, instance: Instance, vm_ref: str, port: Port, vif_ref: str
) -> bool:
    """Finish a port's plumbing once its VIF is attached to a running domain
    (the ``vif<domid>.<device>`` backend device exists only then): e.g. set
    the Open vSwitch ``external_ids`` the Neutron agent looks for, or build
    the hybrid ``qbr``/``qvb``/``qvo`` bridge.

    :param ctx: the operation context.
    :param instance: the instance.
    :param vm_ref: XAPI ref of the VM (paused or running).
    :param port: the port.
    :param vif_ref: XAPI ref of the port's VIF.
    :returns: ``True`` when done.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_network_hot_plug(
    ctx: Context, instance: Instance, vm_ref: str, port: Port, vif_ref: str
) -> bool:
    """Attach an existing VIF to a running VM (``VIF.plug``) and do the
    post-start work for it.

    :param ctx: the operation context.
    :param instance: the instance.
    :param vm_ref: XAPI ref of the running VM.
    :param port: the port.
    :param vif_ref: XAPI ref of the VIF.
    :returns: ``True`` when done.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_network_hot_unplug(
    ctx: Context, instance: Instance, vm_ref: str, port: Port, vif_ref: str
) -> bool:
    """Detach a VIF from a running VM (``VIF.unplug``) and undo the
    post-start work, keeping the VIF record.

    :param ctx: the operation context.
    :param instance: the instance.
    :param vm_ref: XAPI ref of the running VM.
    :param port: the port.
    :param vif_ref: XAPI ref of the VIF.
    :returns: ``True`` when done.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_network_unplug_vif(ctx: Context, instance: Instance, vm_ref: str, port: Port) -> bool:
    """Remove the VIF of a port from a VM (hot-unplugging it first if the VM
    runs). A missing VIF is not an error.

    :param ctx: the operation context.
    :param instance: the instance.
    :param vm_ref: XAPI ref of the VM.
    :param port: the port.
    :returns: ``True`` when done.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_network_cleanup(ctx: Context, instance: Instance, port: Port) -> bool:
    """Delete what :func:`xhost_network_prepare` and post-start created for a
    port (per-port networks, bridges, OVS ports, veth pairs), unless
    something else still uses it. Missing pieces are not an error.

    :param ctx: the operation context.
    :param instance: the instance.
    :param port: the port.
    :returns: ``True`` when done.

    Stops at first non-None result (firstresult).
    """


# -----------------------------------------------------------------------------
# Storage backend: where an instance's disks live and how they are made
# -----------------------------------------------------------------------------


@_spec(firstresult=True)
def xhost_storage_choose_sr(ctx: Context, instance: Instance | None) -> str:
    """Choose the SR for an instance's disks (e.g. by
    ``[xenserver] sr_matching_filter``, among SRs plugged on this host).

    :param ctx: the operation context.
    :param instance: the instance, or ``None`` for host-wide use (the image
        cache).
    :returns: the XAPI ref of the SR; raises if none matches, saying which
        filter matched nothing and what SRs exist.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_storage_capabilities(ctx: Context, sr_ref: str) -> StorageCapabilities:
    """Describe what can be done with an SR.

    :param ctx: the operation context.
    :param sr_ref: XAPI ref of the SR.
    :returns: the SR's capabilities.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_storage_create_root_disk(
    ctx: Context, instance: Instance, sr_ref: str, image: ImageMeta
) -> list[Disk]:
    """Make the instance's boot disk(s) from its image: through the image
    cache and the image handler, cloned copy-on-write where the SR allows,
    grown to the flavor's root size (and its filesystem too with auto disk
    config).

    :param ctx: the operation context.
    :param instance: the instance.
    :param sr_ref: the SR from :func:`xhost_storage_choose_sr`.
    :param image: the image to boot.
    :returns: the root disk, plus kernel/ramdisk disks for AMI images.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_storage_create_ephemeral_disks(
    ctx: Context, instance: Instance, sr_ref: str
) -> list[Disk]:
    """Make the flavor's ephemeral disks, partitioned and formatted.

    :param ctx: the operation context.
    :param instance: the instance.
    :param sr_ref: the SR.
    :returns: the disks (empty list when the flavor has none).

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_storage_create_swap_disk(ctx: Context, instance: Instance, sr_ref: str) -> list[Disk]:
    """Make the flavor's swap disk, formatted as swap.

    :param ctx: the operation context.
    :param instance: the instance.
    :param sr_ref: the SR.
    :returns: a list holding the swap disk, or an empty list when the flavor
        has no swap (``None`` would read as "not implemented").

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_storage_create_config_drive(
    ctx: Context, instance: Instance, sr_ref: str, files: dict[str, bytes]
) -> Disk:
    """Make a ``config-2`` config drive holding the given files.

    :param ctx: the operation context.
    :param instance: the instance.
    :param sr_ref: the SR.
    :param files: path inside the drive -> contents.
    :returns: the read-only disk.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_storage_attach_volume(
    ctx: Context, instance: Instance, vm_ref: str, connection_info: dict[str, Any], mountpoint: str
) -> str:
    """Attach a volume (an SR/VDI described by ``connection_info``) to a VM.

    :param ctx: the operation context.
    :param instance: the instance.
    :param vm_ref: XAPI ref of the VM.
    :param connection_info: how to reach the volume (driver specific).
    :param mountpoint: the guest device, e.g. ``/dev/xvdb``.
    :returns: the XAPI ref of the VBD.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_storage_detach_volume(ctx: Context, instance: Instance, vm_ref: str, mountpoint: str) -> bool:
    """Detach a volume from a VM; a volume that is not attached is not an
    error.

    :param ctx: the operation context.
    :param instance: the instance.
    :param vm_ref: XAPI ref of the VM.
    :param mountpoint: the guest device, e.g. ``/dev/xvdb``.
    :returns: ``True`` when done.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_storage_destroy_disks(ctx: Context, instance: Instance, vm_ref: str | None) -> bool:
    """Destroy an instance's disks (never cached images or volumes).

    :param ctx: the operation context.
    :param instance: the instance.
    :param vm_ref: XAPI ref of its VM, or ``None`` if the VM is already gone
        (then disks are found by their ``other_config`` tags).
    :returns: ``True`` when done.

    Stops at first non-None result (firstresult).
    """


# -----------------------------------------------------------------------------
# Guest agent: configuring a running guest from the host
# -----------------------------------------------------------------------------


@_spec(firstresult=True)
def xhost_agent_detect(ctx: Context, instance: Instance) -> bool:
    """Decide whether this instance has an agent to talk to (image property
    ``img_use_agent``/``xenapi_use_agent``, else
    ``[xenserver] use_agent_default``).

    :param ctx: the operation context.
    :param instance: the instance.
    :returns: ``True`` to use the agent, ``False`` not to.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_agent_version(ctx: Context, instance: Instance, vm_ref: str, timeout: float) -> str:
    """Ask the agent its version, waiting for it to come up (across a guest
    reboot) up to ``timeout`` seconds.

    :param ctx: the operation context.
    :param instance: the instance.
    :param vm_ref: XAPI ref of the running VM.
    :param timeout: seconds to keep trying.
    :returns: the version string; ``""`` when no agent answered.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_agent_set_password(ctx: Context, instance: Instance, vm_ref: str, password: str) -> bool:
    """Set the guest's administrator password (exchanged encrypted).

    :param ctx: the operation context.
    :param instance: the instance.
    :param vm_ref: XAPI ref of the running VM.
    :param password: the new password; never log it.
    :returns: ``True`` on success; raises on failure.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_agent_inject_file(
    ctx: Context, instance: Instance, vm_ref: str, path: str, contents: bytes
) -> bool:
    """Write a file into the guest.

    :param ctx: the operation context.
    :param instance: the instance.
    :param vm_ref: XAPI ref of the running VM.
    :param path: absolute path inside the guest.
    :param contents: the file's bytes.
    :returns: ``True`` on success; raises on failure.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_agent_reset_network(ctx: Context, instance: Instance, vm_ref: str) -> bool:
    """Make the guest re-read its network configuration (``vm-data/...``).

    :param ctx: the operation context.
    :param instance: the instance.
    :param vm_ref: XAPI ref of the running VM.
    :returns: ``True`` on success; raises on failure.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_agent_update(ctx: Context, instance: Instance, vm_ref: str, url: str, md5sum: str) -> bool:
    """Make the agent update itself from ``url``.

    :param ctx: the operation context.
    :param instance: the instance.
    :param vm_ref: XAPI ref of the running VM.
    :param url: where the new agent build is.
    :param md5sum: its MD5 checksum (hex).
    :returns: ``True`` on success; raises on failure.

    Stops at first non-None result (firstresult).
    """


@_spec(firstresult=True)
def xhost_agent_configure_instance(ctx: Context, instance: Instance, vm_ref: str) -> list[str]:
    """Configure a freshly booted instance through its agent: wait for the
    agent (up to ``[xenserver] agent_version_timeout``, across a guest
    reboot), inject the SSH key and files, set the admin password (generated
    when the instance has none), reset the network, update the agent when a
    newer build is configured. Agent failures never fail the boot: they are
    returned, and core records them on the instance.

    When it generated the admin password and the agent accepted it, the
    implementation leaves it in ``instance.admin_password`` and sets
    ``ctx.extra["admin_password_generated"] = True``; core then gives it
    once to whoever created the instance (it is stored nowhere).

    :param ctx: the operation context.
    :param instance: the instance (running).
    :param vm_ref: XAPI ref of its VM.
    :returns: the problems met, as messages without secrets (empty when all
        went well or when the instance has no agent).

    Stops at first non-None result (firstresult).
    """


# -----------------------------------------------------------------------------
# Broadcast hooks: called on every plugin and extension that implements them
# -----------------------------------------------------------------------------


@_spec
def xhost_plugins_loaded(plugins: PluginHost, conf: cfg.ConfigOpts) -> None:
    """All plugins are loaded and registered; called once per
    :func:`xhost.plugins.load`.

    :param plugins: the plugin host that was just built.
    :param conf: the configuration.
    :returns: nothing.
    """


@_spec
def xhost_instance_spawned(ctx: Context, instance: Instance) -> None:
    """An instance was created and is running.

    :param ctx: the operation context.
    :param instance: the instance (``vm_ref`` set, state ``active``).
    :returns: nothing.
    """


@_spec
def xhost_instance_spawn_failed(ctx: Context, instance: Instance, error: BaseException) -> None:
    """Creating an instance failed and everything it created was rolled back.

    :param ctx: the operation context.
    :param instance: the instance (state ``error``).
    :param error: what failed.
    :returns: nothing.
    """


@_spec
def xhost_instance_destroyed(ctx: Context, instance: Instance) -> None:
    """An instance and everything it owned on the host were deleted.

    :param ctx: the operation context.
    :param instance: the instance as it was.
    :returns: nothing.
    """


@_spec
def xhost_instance_state_changed(
    ctx: Context, instance: Instance, old_state: str, new_state: str
) -> None:
    """An instance moved from one state to another (``building`` ->
    ``active``, ``active`` -> ``shutoff``...).

    :param ctx: the operation context.
    :param instance: the instance.
    :param old_state: the previous state.
    :param new_state: the new state.
    :returns: nothing.
    """


@_spec
def xhost_instance_fault(ctx: Context, instance: Instance, message: str) -> None:
    """Something went wrong with an instance that did not fail the operation
    (e.g. the guest agent did not answer during boot). Also recorded in
    ``instance.faults``.

    :param ctx: the operation context.
    :param instance: the instance.
    :param message: what went wrong (never contains secrets).
    :returns: nothing.
    """


@_spec
def xhost_image_uploaded(ctx: Context, image: ImageMeta, instance: Instance | None) -> None:
    """An image's data was uploaded (a snapshot, or ``xhost image create``).

    :param ctx: the operation context.
    :param image: the image (status ``active``).
    :param instance: the instance it was taken from, if any.
    :returns: nothing.
    """

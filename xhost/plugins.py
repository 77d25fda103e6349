"""Loading plugins, and the typed facade core code calls them through.

stevedore decides *which* plugin loads (the name configured for each role);
pluggy defines *what* it implements (:mod:`xhost.hookspecs`). Nothing here
runs at import time: :func:`load` builds a fresh :class:`PluginHost` each
time it is called, so tests and tools get independent instances.
"""
from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import pluggy
from stevedore import driver, extension, named

from xhost import NAME, exception, hookspecs, registry

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

LOG = logging.getLogger(__name__)


def new_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager with xhost's hook specifications and nothing else."""
    pm = pluggy.PluginManager(NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def _fresh(namespace: str) -> None:
    # stevedore memoises entry points per namespace for the process; xhost's
    # registry reads metadata afresh, so let stevedore agree with it (plugins
    # installed while a long-lived process or a test session runs).
    extension.ExtensionManager.ENTRY_POINT_CACHE.pop(namespace, None)


def _instantiate(obj: Any, conf: cfg.ConfigOpts) -> Any:
    return obj(conf) if inspect.isclass(obj) else obj


def _raise_load_failure(role: registry.Role, item: registry.Installed):
    def callback(manager: Any, entrypoint: Any, exc: BaseException) -> None:
        raise exception.PluginLoadError(
            role=role.title,
            name=item.name,
            target=f"{item.target} from {item.distribution} {item.version}",
            cause=f"{type(exc).__name__}: {exc}",
        ) from exc

    return callback


def load_role_plugin(role: registry.Role, name: str, conf: cfg.ConfigOpts) -> Any:
    """Import and instantiate the plugin ``name`` of ``role``."""
    item = registry.find(role, name)  # clear errors for unknown/duplicate names
    _fresh(role.namespace)
    try:
        manager = driver.DriverManager(
            namespace=role.namespace,
            name=name,
            invoke_on_load=False,
            on_load_failure_callback=_raise_load_failure(role, item),
        )
        plugin = manager.driver
    except exception.XhostError:
        raise
    except Exception as exc:  # stevedore's own NoMatches / MultipleMatches
        raise exception.PluginLoadError(
            role=role.title, name=name, target=item.target, cause=f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        return _instantiate(plugin, conf)
    except exception.XhostError:
        raise
    except Exception as exc:
        raise exception.PluginLoadError(
            role=role.title, name=name, target=item.target, cause=f"{type(exc).__name__}: {exc}"
        ) from exc


def load_extensions(names: list[str], conf: cfg.ConfigOpts) -> list[tuple[str, Any]]:
    """Import and instantiate the enabled extensions, in the configured order."""
    if not names:
        return []
    role = registry.EXTENSION_ROLE
    for name in names:
        registry.find(role, name)
    _fresh(role.namespace)
    manager = named.NamedExtensionManager(
        namespace=role.namespace,
        names=names,
        name_order=True,
        invoke_on_load=False,
        on_load_failure_callback=lambda mgr, ep, exc: (_ for _ in ()).throw(
            exception.PluginLoadError(
                role=role.title, name=ep.name, target=ep.value, cause=f"{type(exc).__name__}: {exc}"
            )
        ),
    )
    loaded = []
    for ext in manager.extensions:
        try:
            loaded.append((ext.name, _instantiate(ext.plugin, conf)))
        except Exception as exc:
            raise exception.PluginLoadError(
                role=role.title, name=ext.name, target=ext.entry_point.value,
                cause=f"{type(exc).__name__}: {exc}",
            ) from exc
    return loaded


def selected_names(conf: cfg.ConfigOpts) -> dict[str, str]:
    """The plugin name configured for each role (after aliases and
    ``disable_agent``)."""
    group = conf.xenserver
    chosen = {role.key: getattr(group, role.option) for role in registry.ROLES}
    if group.disable_agent:
        chosen["guest_agent"] = "none"
    return chosen


class PluginHost:
    """The loaded plugins, behind one typed method per hook.

    Core code never touches ``pm.hook`` directly; it calls these methods,
    which forward keyword arguments and turn "no plugin answered" into a
    clear :class:`~xhost.exception.NotSupportedByPlugin`.
    """

    def __init__(self, pm: pluggy.PluginManager, conf: cfg.ConfigOpts, selected: dict[str, str],
                 extensions: list[str]) -> None:
        self.pm = pm
        self.conf = conf
        #: role key -> name of the active plugin.
        self.selected = selected
        #: names of the enabled extensions, in order.
        self.extensions = extensions
        self._upload_handler: PluginHost | None = None

    # -- plumbing ---------------------------------------------------------

    def plugin(self, role: str) -> Any:
        """The active plugin object of a role."""
        return self.pm.get_plugin(f"{role}:{self.selected[role]}")

    def _role_call(self, hook: str, what: str, **kwargs: Any) -> Any:
        result = getattr(self.pm.hook, hook)(**kwargs)
        if result is None:
            role = registry.ROLES_BY_KEY[hookspecs.role_of(hook)]
            raise exception.NotSupportedByPlugin(
                role=role.title, name=self.selected[role.key], what=what,
                hint=f" (it does not implement {hook})",
            )
        return result

    def _broadcast(self, hook: str, **kwargs: Any) -> None:
        caller = getattr(self.pm.hook, hook)
        for impl in reversed(caller.get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                continue
            try:
                impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception:
                LOG.exception("%s: %s failed; continuing", impl.plugin_name, hook)

    # -- image handler ----------------------------------------------------

    def image_capabilities(self, ctx: Context) -> ImageHandlerCapabilities:
        return self._role_call("xhost_image_capabilities", "reporting capabilities", ctx=ctx)

    def image_download(self, ctx: Context, image: ImageMeta, sr_ref: str,
                       instance: Instance | None) -> DownloadedImage:
        return self._role_call("xhost_image_download", "downloading images", ctx=ctx,
                               image=image, sr_ref=sr_ref, instance=instance)

    def image_upload(self, ctx: Context, image: ImageMeta, vdi_refs: list[str],
                     instance: Instance | None) -> ImageMeta:
        host = self._upload_handler or self
        return host._role_call("xhost_image_upload", "uploading images", ctx=ctx, image=image,
                               vdi_refs=vdi_refs, instance=instance)

    # -- image service ----------------------------------------------------

    def image_service_create(self, ctx: Context, name: str, disk_format: str,
                             container_format: str, properties: dict[str, Any]) -> ImageMeta:
        return self._role_call("xhost_image_service_create", "creating images", ctx=ctx,
                               name=name, disk_format=disk_format,
                               container_format=container_format, properties=properties)

    def image_service_show(self, ctx: Context, image_id: str) -> ImageMeta:
        return self._role_call("xhost_image_service_show", "showing images", ctx=ctx,
                               image_id=image_id)

    def image_service_list(self, ctx: Context, filters: dict[str, str] | None = None) -> list[ImageMeta]:
        return self._role_call("xhost_image_service_list", "listing images", ctx=ctx,
                               filters=filters or {})

    def image_service_update(self, ctx: Context, image_id: str, changes: dict[str, Any],
                             remove: list[str] | None = None) -> ImageMeta:
        return self._role_call("xhost_image_service_update", "updating images", ctx=ctx,
                               image_id=image_id, changes=changes, remove=remove or [])

    def image_service_delete(self, ctx: Context, image_id: str) -> bool:
        return self._role_call("xhost_image_service_delete", "deleting images", ctx=ctx,
                               image_id=image_id)

    def image_service_upload(self, ctx: Context, image_id: str, data: Iterable[bytes] | BinaryIO,
                             size: int | None) -> ImageMeta:
        return self._role_call("xhost_image_service_upload", "uploading image data", ctx=ctx,
                               image_id=image_id, data=data, size=size)

    def image_service_download(self, ctx: Context, image_id: str) -> Iterator[bytes]:
        return self._role_call("xhost_image_service_download", "downloading image data",
                               ctx=ctx, image_id=image_id)

    def image_service_location(self, ctx: Context, image_id: str,
                               for_upload: bool) -> ImageLocation | None:
        # None is a legitimate answer here ("not reachable that way").
        return self.pm.hook.xhost_image_service_location(ctx=ctx, image_id=image_id,
                                                          for_upload=for_upload)

    # -- network backend --------------------------------------------------

    def network_prepare(self, ctx: Context, instance: Instance, port: Port) -> str:
        return self._role_call("xhost_network_prepare", "preparing networks", ctx=ctx,
                               instance=instance, port=port)

    def network_plug_vif(self, ctx: Context, instance: Instance, vm_ref: str, port: Port,
                         network_ref: str, device: str) -> str:
        return self._role_call("xhost_network_plug_vif", "plugging VIFs", ctx=ctx,
                               instance=instance, vm_ref=vm_ref, port=port,
                               network_ref=network_ref, device=device)

    def network_post_start(self, ctx: Context, instance: Instance, vm_ref: str, port: Port,
                           vif_ref: str) -> bool:
        return self._role_call("xhost_network_post_start", "post-start network work", ctx=ctx,
                               instance=instance, vm_ref=vm_ref, port=port, vif_ref=vif_ref)

    def network_hot_plug(self, ctx: Context, instance: Instance, vm_ref: str, port: Port,
                         vif_ref: str) -> bool:
        return self._role_call("xhost_network_hot_plug", "hot-plugging VIFs", ctx=ctx,
                               instance=instance, vm_ref=vm_ref, port=port, vif_ref=vif_ref)

    def network_hot_unplug(self, ctx: Context, instance: Instance, vm_ref: str, port: Port,
                           vif_ref: str) -> bool:
        return self._role_call("xhost_network_hot_unplug", "hot-unplugging VIFs", ctx=ctx,
                               instance=instance, vm_ref=vm_ref, port=port, vif_ref=vif_ref)

    def network_unplug_vif(self, ctx: Context, instance: Instance, vm_ref: str, port: Port) -> bool:
        return self._role_call("xhost_network_unplug_vif", "unplugging VIFs", ctx=ctx,
                               instance=instance, vm_ref=vm_ref, port=port)

    def network_cleanup(self, ctx: Context, instance: Instance, port: Port) -> bool:
        return self._role_call("xhost_network_cleanup", "cleaning up networks", ctx=ctx,
                               instance=instance, port=port)

    # -- storage backend --------------------------------------------------

    def storage_choose_sr(self, ctx: Context, instance: Instance | None) -> str:
        return self._role_call("xhost_storage_choose_sr", "choosing an SR", ctx=ctx,
                               instance=instance)

    def storage_capabilities(self, ctx: Context, sr_ref: str) -> StorageCapabilities:
        return self._role_call("xhost_storage_capabilities", "reporting SR capabilities",
                               ctx=ctx, sr_ref=sr_ref)

    def storage_create_root_disk(self, ctx: Context, instance: Instance, sr_ref: str,
                                 image: ImageMeta) -> list[Disk]:
        return self._role_call("xhost_storage_create_root_disk", "creating root disks",
                               ctx=ctx, instance=instance, sr_ref=sr_ref, image=image)

    def storage_create_ephemeral_disks(self, ctx: Context, instance: Instance,
                                       sr_ref: str) -> list[Disk]:
        return self._role_call("xhost_storage_create_ephemeral_disks",
                               "creating ephemeral disks", ctx=ctx, instance=instance,
                               sr_ref=sr_ref)

    def storage_create_swap_disk(self, ctx: Context, instance: Instance, sr_ref: str) -> list[Disk]:
        return self._role_call("xhost_storage_create_swap_disk", "creating swap disks",
                               ctx=ctx, instance=instance, sr_ref=sr_ref)

    def storage_create_config_drive(self, ctx: Context, instance: Instance, sr_ref: str,
                                    files: dict[str, bytes]) -> Disk:
        return self._role_call("xhost_storage_create_config_drive", "creating config drives",
                               ctx=ctx, instance=instance, sr_ref=sr_ref, files=files)

    def storage_attach_volume(self, ctx: Context, instance: Instance, vm_ref: str,
                              connection_info: dict[str, Any], mountpoint: str) -> str:
        return self._role_call("xhost_storage_attach_volume", "attaching volumes", ctx=ctx,
                               instance=instance, vm_ref=vm_ref,
                               connection_info=connection_info, mountpoint=mountpoint)

    def storage_detach_volume(self, ctx: Context, instance: Instance, vm_ref: str,
                              mountpoint: str) -> bool:
        return self._role_call("xhost_storage_detach_volume", "detaching volumes", ctx=ctx,
                               instance=instance, vm_ref=vm_ref, mountpoint=mountpoint)

    def storage_destroy_disks(self, ctx: Context, instance: Instance, vm_ref: str | None) -> bool:
        return self._role_call("xhost_storage_destroy_disks", "destroying disks", ctx=ctx,
                               instance=instance, vm_ref=vm_ref)

    # -- guest agent ------------------------------------------------------

    def agent_detect(self, ctx: Context, instance: Instance) -> bool:
        return self._role_call("xhost_agent_detect", "detecting agents", ctx=ctx,
                               instance=instance)

    def agent_version(self, ctx: Context, instance: Instance, vm_ref: str, timeout: float) -> str:
        return self._role_call("xhost_agent_version", "querying the agent version", ctx=ctx,
                               instance=instance, vm_ref=vm_ref, timeout=timeout)

    def agent_set_password(self, ctx: Context, instance: Instance, vm_ref: str, password: str) -> bool:
        return self._role_call("xhost_agent_set_password", "setting passwords", ctx=ctx,
                               instance=instance, vm_ref=vm_ref, password=password)

    def agent_inject_file(self, ctx: Context, instance: Instance, vm_ref: str, path: str,
                          contents: bytes) -> bool:
        return self._role_call("xhost_agent_inject_file", "injecting files", ctx=ctx,
                               instance=instance, vm_ref=vm_ref, path=path, contents=contents)

    def agent_reset_network(self, ctx: Context, instance: Instance, vm_ref: str) -> bool:
        return self._role_call("xhost_agent_reset_network", "resetting the network", ctx=ctx,
                               instance=instance, vm_ref=vm_ref)

    def agent_update(self, ctx: Context, instance: Instance, vm_ref: str, url: str,
                     md5sum: str) -> bool:
        return self._role_call("xhost_agent_update", "updating agents", ctx=ctx,
                               instance=instance, vm_ref=vm_ref, url=url, md5sum=md5sum)

    def agent_configure_instance(self, ctx: Context, instance: Instance, vm_ref: str) -> list[str]:
        return self._role_call("xhost_agent_configure_instance", "configuring instances",
                               ctx=ctx, instance=instance, vm_ref=vm_ref)

    # -- broadcast ----------------------------------------------------------

    def plugins_loaded(self) -> None:
        self._broadcast("xhost_plugins_loaded", plugins=self, conf=self.conf)

    def instance_spawned(self, ctx: Context, instance: Instance) -> None:
        self._broadcast("xhost_instance_spawned", ctx=ctx, instance=instance)

    def instance_spawn_failed(self, ctx: Context, instance: Instance, error: BaseException) -> None:
        self._broadcast("xhost_instance_spawn_failed", ctx=ctx, instance=instance, error=error)

    def instance_destroyed(self, ctx: Context, instance: Instance) -> None:
        self._broadcast("xhost_instance_destroyed", ctx=ctx, instance=instance)

    def instance_state_changed(self, ctx: Context, instance: Instance, old_state: str,
                               new_state: str) -> None:
        self._broadcast("xhost_instance_state_changed", ctx=ctx, instance=instance,
                        old_state=old_state, new_state=new_state)

    def instance_fault(self, ctx: Context, instance: Instance, message: str) -> None:
        instance.faults.append(message)
        self._broadcast("xhost_instance_fault", ctx=ctx, instance=instance, message=message)

    def image_uploaded(self, ctx: Context, image: ImageMeta, instance: Instance | None) -> None:
        self._broadcast("xhost_image_uploaded", ctx=ctx, image=image, instance=instance)


def _check_role_hooks(pm: pluggy.PluginManager, plugin: Any, plugin_name: str,
                      allowed_role: str | None) -> None:
    """Refuse a plugin that implements another role's hooks."""
    for hookcaller in pm.get_hookcallers(plugin) or []:
        role = hookspecs.role_of(hookcaller.name)
        if role is not None and role != allowed_role:
            raise exception.PluginContractError(
                plugin=plugin_name,
                reason=(
                    f"implements {hookcaller.name}, a hook of the "
                    f"{registry.ROLES_BY_KEY[role].title} role; only the "
                    f"selected {registry.ROLES_BY_KEY[role].title} may "
                    f"implement it. Move it into a plugin of that role."
                ),
            )


def _register(pm: pluggy.PluginManager, plugin: Any, name: str, role: str | None) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise exception.PluginContractError(plugin=name, reason=str(exc)) from exc
    _check_role_hooks(pm, plugin, name, role)


def load(conf: cfg.ConfigOpts, roles: Iterable[str] | None = None) -> PluginHost:
    """Load the configured plugin of each role (or only of ``roles``) and the
    enabled extensions, and return the facade over them.

    :raises NoSuchPlugin: a configured name is not installed.
    :raises PluginConflict: a name is registered twice in a namespace.
    :raises PluginLoadError: a plugin failed to import or to initialise.
    :raises PluginContractError: a plugin implements hooks it must not, or
        with arguments its hook does not have.
    """
    pm = new_plugin_manager()
    chosen = selected_names(conf)
    wanted = set(roles) if roles is not None else set(chosen)
    selected = {}
    for role in registry.ROLES:
        if role.key not in wanted:
            continue
        name = chosen[role.key]
        plugin = load_role_plugin(role, name, conf)
        _register(pm, plugin, f"{role.key}:{name}", role.key)
        selected[role.key] = name
    ext_names = list(conf.xenserver.enabled_extensions)
    for name, ext in load_extensions(ext_names, conf):
        _register(pm, ext, f"extension:{name}", None)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise exception.PluginContractError(plugin=str(exc.plugin), reason=str(exc)) from exc
    host = PluginHost(pm, conf, selected, ext_names)

    handler_role = registry.ROLES_BY_KEY["image_handler"]
    upload = conf.xenserver.image_upload_handler
    upload = handler_role.aliases.get(upload, upload)
    if upload and "image_handler" in selected and upload != selected["image_handler"]:
        LOG.warning("[xenserver] image_upload_handler is deprecated; set image_handler "
                    "instead. Uploads use %r.", upload)
        upm = new_plugin_manager()
        _register(upm, load_role_plugin(handler_role, upload, conf), f"image_handler:{upload}",
                  "image_handler")
        host._upload_handler = PluginHost(upm, conf, {"image_handler": upload}, [])
    host.plugins_loaded()
    return host

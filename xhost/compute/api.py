"""The compute API: create, list, show and delete instances.

A Python facade the CLI, extensions and scripts share::

    with Compute.open(conf) as compute:
        server = compute.create_server("web1", image="cirros", flavor="m1.tiny",
                                       networks=["net1"])
        compute.delete_server("web1")

A spawn runs every step under an undo log: whatever fails, everything the
spawn created is removed (VM, disks other than the cached image, VIFs,
per-port networks, OVS ports, bridges, dom0 files) and the error names the
step that failed. Every operation is journalled first, so a process killed
mid-way is cleaned up by the next run (or ``xhost reconcile``).
"""
from __future__ import annotations

import json
import logging
import secrets
import threading
import uuid
from collections.abc import Callable
from typing import Any

from oslo_config import cfg

from xhost import exception, images, imagetransfer, plugins
from xhost.compute import flavors as flavor_mod
from xhost.compute import servers, vmrecord
from xhost.compute.connection import HostConnection, connect
from xhost.compute.journal import Journal
from xhost.compute.vmrecord import port_entry
from xhost.context import Context, replay
from xhost.objects import Disk, Flavor, ImageMeta, Instance, Port

LOG = logging.getLogger(__name__)
Progress = Callable[[str, float], None]


class ServerNotFound(exception.XhostError):
    msg_fmt = "no server {name!r} (`xhost server list` shows them)"


class ServerExists(exception.XhostError):
    msg_fmt = "a server named {name!r} already exists ({uuid}); choose another name"


class SpawnError(exception.XhostError):
    msg_fmt = ("could not create server {name!r}: {step} failed: {cause}. "
               "Everything the attempt had created was removed{leftover}.")


class DestroyError(exception.XhostError):
    msg_fmt = "could not delete server {name!r}: {step} failed: {cause}"


class NoGuestAgent(exception.XhostError):
    msg_fmt = "cannot {what} of server {name!r}: it has no guest agent: {reason}"


class ServerNotRunning(exception.XhostError):
    msg_fmt = "cannot {what} of server {name!r}: it is {state}; start it first"


class PortNotFound(exception.XhostError):
    msg_fmt = "server {name!r} has no port {port!r}; its ports: {ports}"


class AttachError(exception.XhostError):
    msg_fmt = ("could not attach a port on {network!r} to server {name!r}: {step} failed: "
               "{cause}. Everything the attempt had created was removed{leftover}.")


class DetachError(exception.XhostError):
    msg_fmt = "could not detach port {port} from server {name!r}: {step} failed: {cause}"


_vif_guard = threading.Lock()
_vif_locks: dict[str, threading.Lock] = {}


def _vif_lock(vm_ref: str) -> threading.Lock:
    """One VIF change at a time per VM in this process (Nova's xenapi-vif lock)."""
    with _vif_guard:
        return _vif_locks.setdefault(vm_ref, threading.Lock())


def random_mac() -> str:
    """A locally administered MAC in OpenStack's fa:16:3e prefix."""
    tail = secrets.token_bytes(3)
    return "fa:16:3e:" + ":".join(f"{b:02x}" for b in tail)


class Compute:
    """Instances on one host, through the configured plugins."""

    def __init__(self, conf: cfg.ConfigOpts, connection: HostConnection,
                 plugin_host: plugins.PluginHost, progress: Progress | None = None) -> None:
        self.conf = conf
        self.connection = connection
        self.xapi = connection.xapi
        self.plugins = plugin_host
        self.progress = progress
        self.journal = Journal(conf.compute.state_dir)

    @classmethod
    def open(cls, conf: cfg.ConfigOpts, progress: Progress | None = None,
             notice: Callable[[str], None] | None = None, reconcile: bool = True) -> Compute:
        """Load the plugins, connect to the host, and clean up after any
        operation a killed process left unfinished."""
        plugin_host = plugins.load(conf)
        connection = connect(conf, notice)
        compute = cls(conf, connection, plugin_host, progress)
        if reconcile:
            try:
                compute.reconcile()
            except Exception:
                connection.close()
                raise
        return compute

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Compute:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def context(self, progress: Progress | None = None) -> Context:
        ctx = Context(conf=self.conf, plugins=self.plugins, xapi=self.xapi,
                      host_ref=self.connection.host_ref)
        ctx.extra["dom0"] = self.connection.dom0
        ctx.extra["connection"] = self.connection
        if progress or self.progress:
            ctx.progress = progress or self.progress  # type: ignore[assignment]
        return ctx

    # -- queries ---------------------------------------------------------------

    def flavors(self) -> list[Flavor]:
        return flavor_mod.all_flavors(self.conf)

    def _instance_records(self) -> dict[str, dict[str, Any]]:
        records = self.xapi.call("VM.get_all_records_where", servers.INSTANCES_QUERY)
        return {ref: rec for ref, rec in records.items() if servers.is_instance(rec)}

    def list_servers(self) -> list[servers.Server]:
        """Every instance, in two XAPI calls whatever their number."""
        records = self._instance_records()
        metrics = self.xapi.call("VM_guest_metrics.get_all_records") if records else {}
        result = [servers.from_record(ref, rec, metrics.get(rec.get("guest_metrics")))
                  for ref, rec in records.items()]
        return sorted(result, key=lambda s: s.name)

    def _find(self, name: str, by_id: bool = True) -> tuple[str, dict[str, Any]] | None:
        """The instance named ``name`` (or, with ``by_id``, whose id it is)."""
        refs = self.xapi.call("VM.get_by_name_label", name)
        for ref in refs:
            rec = self.xapi.call("VM.get_record", ref)
            if servers.is_instance(rec):
                return ref, rec
        if not by_id:
            return None
        for ref, rec in self._instance_records().items():
            if rec["other_config"].get(vmrecord.TAG_UUID) == name:
                return ref, rec
        return None

    def show_server(self, name: str) -> servers.Server:
        """A server (by name or id) with its disks and ports, in a constant
        number of XAPI calls whatever the number of instances."""
        found = self._find(name)
        if found is None:
            raise ServerNotFound(name=name)
        ref, rec = found
        return self._server(ref, rec)

    def _server(self, ref: str, rec: dict[str, Any], metrics: bool = True) -> servers.Server:
        guest = None
        if metrics and rec.get("guest_metrics", "OpaqueRef:NULL") != "OpaqueRef:NULL":
            try:
                guest = self.xapi.call("VM_guest_metrics.get_record", rec["guest_metrics"])
            except exception.HandleInvalid:
                guest = None
        server = servers.from_record(ref, rec, guest)
        vbds = self.xapi.call("VBD.get_all_records_where", f'field "VM"="{ref}"')
        for vbd in sorted(vbds.values(), key=lambda v: int(v["userdevice"] or 0)):
            disk = {"userdevice": vbd["userdevice"], "device": vbd.get("device", ""),
                    "type": vbd["type"], "mode": vbd["mode"], "bootable": vbd["bootable"]}
            if vbd["VDI"] != "OpaqueRef:NULL":
                try:
                    vdi = self.xapi.call("VDI.get_record", vbd["VDI"])
                except exception.HandleInvalid:
                    vdi = None
                if vdi is not None:
                    disk.update(vdi=vdi["uuid"], name=vdi["name_label"],
                                size=int(vdi["virtual_size"]),
                                kind=vdi["other_config"].get(vmrecord.VDI_TAG_KIND, ""))
            server.disks.append(disk)
        server.details = {"vm_uuid": rec["uuid"], "domid": rec["domid"],
                          "memory_mb": int(rec["memory_static_max"]) // vmrecord.MiB,
                          "vcpus": int(rec["VCPUs_max"])}
        return server

    # -- create ----------------------------------------------------------------

    def _resolve_image(self, ctx: Context, image: str | ImageMeta) -> ImageMeta:
        meta = image if isinstance(image, ImageMeta) else images.resolve(ctx, image)
        if meta.status != "active":
            raise images.ImageError(reason=f"image {meta.name or meta.id} is {meta.status}; "
                                           f"only active images can be booted")
        return meta

    def build_instance(self, ctx: Context, name: str, image: str | ImageMeta, flavor: Flavor,
                       networks: list[str], **options: Any) -> Instance:
        if not name or len(name) > 255 or "/" in name:
            raise exception.XhostError(f"invalid server name {name!r}: 1-255 characters, no '/'")
        meta = self._resolve_image(ctx, image)
        props = meta.properties
        ports = [Port(id=str(uuid.uuid4()), mac=random_mac(), network=net, device=str(i))
                 for i, net in enumerate(networks)]
        auto = vmrecord.strict_bool(vmrecord.image_property(props, "hw_auto_disk_config",
                                                            "auto_disk_config"))
        return Instance(
            uuid=str(uuid.uuid4()), name=name, flavor=flavor, image=meta, ports=ports,
            os_type=vmrecord.image_property(props, "os_type") or self.conf.xenserver.default_os_type,
            vm_mode=options.get("vm_mode"),
            auto_disk_config=bool(auto),
            config_drive=bool(options.get("config_drive") or self.conf.force_config_drive),
            user_data=options.get("user_data"),
            key_data=options.get("key_data"),
            admin_password=options.get("admin_password"),
            metadata=dict(options.get("metadata") or {}),
            files=dict(options.get("files") or {}),
            hostname=options.get("hostname") or name,
        )

    def create_server(self, name: str, image: str | ImageMeta, flavor: Flavor | str,
                      networks: list[str] | None = None, **options: Any) -> servers.Server:
        """Boot an instance; on any failure everything it created is removed.

        Options: ``config_drive``, ``user_data`` (bytes), ``key_data`` (an SSH
        public key), ``admin_password``, ``metadata`` (dict), ``files`` (guest
        path -> bytes), ``hostname``, ``vm_mode``.

        When the guest agent set a password xhost generated (no
        ``admin_password`` given), the returned server's ``admin_password``
        holds it: the only time it is given (it is stored nowhere).
        """
        ctx = self.context()
        if isinstance(flavor, str):
            flavor = flavor_mod.find(self.conf, flavor)
        try:
            ctx.extra["step"] = "checking the server name"
            existing = self._find(name, by_id=False)
            if existing is not None:
                raise ServerExists(name=name,
                                   uuid=existing[1]["other_config"][vmrecord.TAG_UUID])
            ctx.extra["step"] = "reading the image"
            instance = self.build_instance(ctx, name, image, flavor, list(networks or []),
                                           **options)
        except exception.XapiError as exc:  # the host failed us before anything was made
            raise SpawnError(name=name, step=ctx.extra["step"], cause=_describe(exc),
                             leftover="") from exc
        entry = self.journal.begin("spawn", instance=instance.uuid, name=name,
                                   ports=[port_entry(p) for p in instance.ports],
                                   image=instance.image.id if instance.image else None,
                                   owner=imagetransfer.download_owner())
        ctx.undo.recorder = self.journal.recorder(entry)
        from xhost.compute.spawn import Spawner

        try:
            Spawner(self, ctx, instance).run()
        except BaseException as exc:
            if not self._after_failed_spawn(ctx, instance, exc):
                self.journal.end(entry)
            # else the entry stays: the next run (`xhost reconcile`) tries again
            if isinstance(exc, SpawnError):
                raise
            raise SpawnError(name=name, step=ctx.extra.get("step", "preparing"),
                             cause=_describe(exc), leftover=ctx.extra.get("leftover", "")) from exc
        self.journal.end(entry)
        server = self._created(instance)
        if ctx.extra.get("admin_password_generated"):
            server.admin_password = instance.admin_password
        return server

    def _created(self, instance: Instance) -> servers.Server:
        """The server a spawn made, read back; it exists even if reading it
        fails (then it is described from what the spawn knows)."""
        try:
            return self._server(instance.vm_ref, self.xapi.call("VM.get_record",
                                                                instance.vm_ref),
                                metrics=False)
        except exception.XapiError as exc:
            LOG.warning("server %s was created but could not be read back: %s",
                        instance.name, exc)
            return servers.Server(id=instance.uuid, name=instance.name, status="active",
                                  power_state="Running",
                                  image=(instance.image.name or instance.image.id)
                                  if instance.image else "",
                                  flavor=instance.flavor.name, addresses="",
                                  vm_ref=instance.vm_ref or "", faults=list(instance.faults),
                                  ports=[port_entry(p) for p in instance.ports])

    def _after_failed_spawn(self, ctx: Context, instance: Instance,
                            exc: BaseException) -> list[tuple[str, BaseException]]:
        """Roll back; returns what could not be removed."""
        LOG.warning("spawn of %s failed at %s: %s; rolling back", instance.name,
                    ctx.extra.get("step"), _describe(exc))
        failures = ctx.undo.rollback(LOG)
        # Belt and braces: whatever an undo could not remove, sweep by tags.
        sweep = self._cleanup_instance(ctx, instance, vm_ref=None)
        failures += sweep
        if failures:
            ctx.extra["leftover"] = (" except: " + "; ".join(f"{d} ({_describe(e)})"
                                                             for d, e in failures)
                                     + " (`xhost reconcile` tries again)")
        instance.state = "error"
        self.plugins.instance_spawn_failed(ctx, instance, exc)
        return failures

    # -- delete ----------------------------------------------------------------

    def delete_server(self, name: str) -> bool:
        """Delete an instance and everything it owns on the host; ``False``
        if there is no such instance (not an error)."""
        found = self._find(name)
        if found is None:
            return False
        ref, rec = found
        instance = instance_from_record(rec)
        ctx = self.context()
        entry = self.journal.begin("destroy", instance=instance.uuid, name=instance.name,
                                   ports=[port_entry(p) for p in instance.ports])
        failures = self._cleanup_instance(ctx, instance, vm_ref=ref, record=rec)
        if failures:
            description, error = failures[0]
            raise DestroyError(name=name, step=description, cause=_describe(error))
        self.journal.end(entry)
        instance.state = "deleted"
        self.plugins.instance_destroyed(ctx, instance)
        return True

    def _cleanup_instance(self, ctx: Context, instance: Instance, vm_ref: str | None,
                          record: dict[str, Any] | None = None) -> list[tuple[str, BaseException]]:
        """Remove everything of an instance (each step tolerant of missing
        pieces); returns the steps that failed."""
        failures: list[tuple[str, BaseException]] = []

        def step(description: str, fn: Callable[..., Any], *args: Any) -> Any:
            try:
                return fn(*args)
            except Exception as exc:
                failures.append((description, exc))
                LOG.warning("cleanup of %s: %s failed: %s", instance.name, description,
                            _describe(exc))
                return None

        if vm_ref is None:
            found = [(ref, rec) for ref, rec in self._instance_records().items()
                     if rec["other_config"].get(vmrecord.TAG_UUID) == instance.uuid]
            if found:
                vm_ref, record = found[0]
        if vm_ref is not None:
            if record is None:
                record = step("reading the VM", self.xapi.call, "VM.get_record", vm_ref)
            if record and record["power_state"] != "Halted":
                step("shutting the VM down", _ignore_bad_power, self.xapi, "VM.hard_shutdown",
                     vm_ref)
        for port in instance.ports:
            step(f"removing port {port.id}", self.plugins.network_cleanup, ctx, instance, port)
        step("destroying disks", self.plugins.storage_destroy_disks, ctx, instance, vm_ref)
        if vm_ref is not None:
            step("destroying the VM", _ignore_missing, self.xapi, "VM.destroy", vm_ref)
        return failures

    # -- the guest agent -------------------------------------------------------------

    def _agent_target(self, name: str, what: str) -> tuple[Context, Instance, str]:
        """The context, instance and VM of a running server that has a guest
        agent; clear errors otherwise."""
        found = self._find(name)
        if found is None:
            raise ServerNotFound(name=name)
        ref, rec = found
        instance = instance_from_record(rec)
        instance.vm_ref = ref
        ctx = self.context()
        selected = self.plugins.selected.get("guest_agent", "none")
        if selected == "none":
            raise NoGuestAgent(what=what, name=name, reason=(
                "xhost talks to no guest agent ([xenserver] guest_agent = none, or "
                "disable_agent = true)"))
        if not self.plugins.agent_detect(ctx, instance):
            props = instance.image.properties if instance.image else {}
            value = vmrecord.image_property(props, "img_use_agent", "xenapi_use_agent")
            image = (instance.image.name or instance.image.id) if instance.image else "unknown"
            raise NoGuestAgent(what=what, name=name, reason=(
                f"its image ({image}) has img_use_agent={value if value is not None else 'unset'}"
                f" and [xenserver] use_agent_default is "
                f"{str(self.conf.xenserver.use_agent_default).lower()}; set img_use_agent=true "
                f"on images that run the XenServer guest agent"))
        if rec["power_state"] != "Running":
            raise ServerNotRunning(what=what, name=name, state=rec["power_state"].lower())
        return ctx, instance, ref

    def set_admin_password(self, name: str, password: str) -> None:
        """Set the administrator password of a running server through its
        guest agent (exchanged encrypted; never logged)."""
        if not password:
            raise exception.XhostError("the new password is empty; give a non-empty password")
        ctx, instance, ref = self._agent_target(name, "set the password")
        self.plugins.agent_set_password(ctx, instance, ref, password)

    def inject_file(self, name: str, path: str, contents: bytes) -> None:
        """Write a file (at absolute ``path``) into a running server through
        its guest agent."""
        if not path.startswith("/"):
            raise exception.XhostError(f"the guest path {path!r} is not absolute; give the full "
                                       f"path of the file inside the guest, e.g. /etc/motd")
        ctx, instance, ref = self._agent_target(name, "inject a file")
        self.plugins.agent_inject_file(ctx, instance, ref, path, contents)

    def reset_network(self, name: str) -> None:
        """Make a running server's guest agent re-read its hostname and
        network configuration (from the VM's ``xenstore_data``)."""
        ctx, instance, ref = self._agent_target(name, "reset the network")
        self.plugins.agent_reset_network(ctx, instance, ref)

    # -- interfaces -------------------------------------------------------------

    def attach_interface(self, name: str, network: str, *, vlan: int | None = None,
                         hybrid_plug: bool = False) -> dict[str, Any]:
        """Give a server a new port on ``network`` (hot-plugged if it runs), at
        the first free VIF device; on failure everything is undone.

        :param vlan: VLAN tag (backends that make VLAN networks on demand).
        :param hybrid_plug: ask for Nova's hybrid qbr/qvb/qvo plumbing.
        :returns: the port (``id``, ``mac``, ``network``, ``device``...).
        """
        found = self._find(name)
        if found is None:
            raise ServerNotFound(name=name)
        vm, rec = found
        instance = instance_from_record(rec)
        ctx = self.context()
        with _vif_lock(vm):
            ctx.extra["step"] = "choosing a VIF device"
            devices = self.xapi.call("VM.get_allowed_VIF_devices", vm)
            if not devices:
                raise AttachError(name=name, network=network, step="choosing a VIF device",
                                  cause="every VIF device of the VM is in use", leftover="")
            port = Port(id=str(uuid.uuid4()), mac=random_mac(), network=network,
                        device=str(devices[0]), vlan=vlan, hybrid_plug=hybrid_plug)
            entry = self.journal.begin("attach", instance=instance.uuid, name=instance.name,
                                       vm=vm, ports=[port_entry(port)])
            try:
                self._attach(ctx, instance, vm, port)
            except BaseException as exc:
                failures = ctx.undo.rollback(LOG)
                try:
                    self.plugins.network_cleanup(ctx, instance, port)
                except Exception as cleanup_exc:
                    failures.append((f"removing port {port.id}", cleanup_exc))
                self.journal.end(entry)
                leftover = (" except: " + "; ".join(f"{d} ({_describe(e)})" for d, e in failures)
                            if failures else "")
                raise AttachError(name=name, network=network,
                                  step=ctx.extra.get("step", "attaching"),
                                  cause=_describe(exc), leftover=leftover) from exc
            ctx.undo.discard()
            self.journal.end(entry)
        return port_entry(port)

    def _attach(self, ctx: Context, instance: Instance, vm: str, port: Port) -> None:
        ctx.extra["step"] = "preparing the network"
        network = self.plugins.network_prepare(ctx, instance, port)
        ctx.extra["step"] = "plugging the VIF"
        self.plugins.network_plug_vif(ctx, instance, vm, port, network, port.device)
        ctx.extra["step"] = "recording the port"
        ports = [port_entry(p) for p in instance.ports] + [port_entry(port)]
        self._set_ports(vm, ports)
        ctx.undo.push(f"forget port {port.id}", self._set_ports, vm,
                      [port_entry(p) for p in instance.ports])
        key = f"vm-data/networking/{port.mac.replace(':', '').lower()}"
        self._set_xenstore_key(vm, key, vmrecord.networking_json(port))
        ctx.undo.push(f"remove {key}", self._set_xenstore_key, vm, key, None)
        instance.ports.append(port)

    def detach_interface(self, name: str, port_id: str) -> bool:
        """Remove a server's port (hot-unplugged if it runs) with everything
        the network backend made for it."""
        found = self._find(name)
        if found is None:
            raise ServerNotFound(name=name)
        vm, rec = found
        instance = instance_from_record(rec)
        port = next((p for p in instance.ports
                     if port_id == p.id or port_id.lower() == p.mac.lower()), None)
        if port is None:
            raise PortNotFound(name=name, port=port_id,
                               ports=", ".join(f"{p.id} ({p.network})" for p in instance.ports)
                               or "none")
        ctx = self.context()
        with _vif_lock(vm):
            entry = self.journal.begin("detach", instance=instance.uuid, name=instance.name,
                                       vm=vm, ports=[port_entry(port)])
            self._detach(ctx, instance, vm, port, name)
            self.journal.end(entry)
        return True

    def _detach(self, ctx: Context, instance: Instance, vm: str, port: Port, name: str) -> None:
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("unplugging the VIF",
             lambda: self.plugins.network_unplug_vif(ctx, instance, vm, port)),
            (f"removing port {port.id}",
             lambda: self.plugins.network_cleanup(ctx, instance, port)),
            ("forgetting the port",
             lambda: self._set_ports(vm, [port_entry(p) for p in instance.ports
                                          if p.id != port.id])),
            ("removing its network data",
             lambda: self._set_xenstore_key(
                 vm, f"vm-data/networking/{port.mac.replace(':', '').lower()}", None)),
        ]
        for step, fn in steps:
            try:
                fn()
            except Exception as exc:
                raise DetachError(name=name, port=port.id, step=step,
                                  cause=_describe(exc)) from exc
        instance.ports = [p for p in instance.ports if p.id != port.id]

    def _set_ports(self, vm: str, ports: list[dict[str, Any]]) -> None:
        try:
            self.xapi.call("VM.remove_from_other_config", vm, vmrecord.TAG_PORTS)
            self.xapi.call("VM.add_to_other_config", vm, vmrecord.TAG_PORTS, json.dumps(ports))
        except exception.HandleInvalid:
            pass

    def _set_xenstore_key(self, vm: str, key: str, value: str | None) -> None:
        try:
            self.xapi.call("VM.remove_from_xenstore_data", vm, key)
            if value is not None:
                self.xapi.call("VM.add_to_xenstore_data", vm, key, value)
        except exception.HandleInvalid:
            pass

    def _reconcile_port_op(self, entry: dict[str, Any]) -> list[tuple[str, BaseException]]:
        """Finish an interrupted attach (undo it unless it completed) or detach."""
        ports = [Port(**p) for p in entry.get("ports", [])]
        found = [(ref, rec) for ref, rec in self._instance_records().items()
                 if rec["other_config"].get(vmrecord.TAG_UUID) == entry["instance"]]
        ctx = self.context()
        failures: list[tuple[str, BaseException]] = []
        instance = (instance_from_record(found[0][1]) if found else
                    Instance(uuid=entry["instance"], name=entry.get("name", ""),
                             flavor=Flavor("unknown", 1, 1, 0)))
        recorded = {p.id for p in instance.ports}
        for port in ports:
            if entry["op"] == "attach" and port.id in recorded:
                continue  # the attach had completed
            try:
                if found:
                    self._detach(ctx, instance, found[0][0], port, instance.name)
                else:
                    self.plugins.network_cleanup(ctx, instance, port)
            except Exception as exc:
                failures.append((f"port {port.id}", exc))
        return failures

    # -- crash recovery -----------------------------------------------------------

    def reconcile(self) -> list[str]:
        """Finish the cleanup of operations whose process died: replay their
        journalled undo actions, remove whatever carries their instance's
        tags, and the image-cache leftovers they may have left."""
        done = []
        for entry in self.journal.orphans():
            instance = Instance(uuid=entry["instance"], name=entry.get("name", ""),
                                flavor=Flavor("unknown", 1, 1, 0),
                                ports=[Port(**p) for p in entry.get("ports", [])])
            ctx = self.context()
            failures = self._replay_undo(ctx, entry)
            if entry["op"] in ("attach", "detach"):
                failures += self._reconcile_port_op(entry)
            else:
                failures += self._cleanup_instance(ctx, instance, vm_ref=None)
            if entry["op"] == "spawn" and entry.get("image"):
                from xhost import imagecache

                try:
                    imagecache.remove_leftovers(ctx, entry["image"], entry.get("owner"))
                except Exception as exc:
                    failures.append(("image cache leftovers", exc))
            if failures:
                LOG.warning("reconcile of %s %s incomplete: %s", entry["op"], instance.name,
                            failures)
                continue
            self.journal.end(entry["id"])
            done.append(f"{entry['op']} of {instance.name or instance.uuid} cleaned up")
        return done

    @staticmethod
    def _replay_undo(ctx: Context, entry: dict[str, Any]) -> list[tuple[str, BaseException]]:
        failures: list[tuple[str, BaseException]] = []
        for action in reversed(entry.get("undo", [])):
            try:
                replay(action, ctx)
            except Exception as exc:
                LOG.warning("reconcile: %s failed: %s", action.get("description"), exc)
                failures.append((action.get("description", action["fn"]), exc))
        return failures


def instance_from_record(record: dict[str, Any]) -> Instance:
    other = record.get("other_config", {})
    try:
        flavor_data = json.loads(other.get(vmrecord.TAG_FLAVOR, "{}"))
        flavor = Flavor(**flavor_data)
    except (ValueError, TypeError):
        flavor = Flavor("unknown", int(record.get("VCPUs_max", 1)),
                        int(record.get("memory_static_max", 0)) // vmrecord.MiB, 0)
    try:
        ports = [Port(**p) for p in json.loads(other.get(vmrecord.TAG_PORTS, "[]"))]
    except (ValueError, TypeError):
        ports = []
    image_id = other.get(vmrecord.TAG_IMAGE)
    try:
        properties = json.loads(other.get(vmrecord.TAG_IMAGE_PROPERTIES, "{}"))
    except ValueError:
        properties = {}
    if not isinstance(properties, dict):
        properties = {}
    windows = record.get("platform", {}).get("viridian") == "true"
    os_type = vmrecord.image_property(properties, "os_type") or ("windows" if windows else None)
    return Instance(uuid=other.get(vmrecord.TAG_UUID, record.get("uuid", "")),
                    name=record.get("name_label", ""), flavor=flavor,
                    image=ImageMeta(id=image_id, name=other.get(vmrecord.TAG_IMAGE_NAME, ""),
                                    properties=properties)
                    if image_id else None,
                    ports=ports, state=servers.status_of(record), os_type=os_type)


def _ignore_bad_power(xapi: Any, method: str, ref: str) -> None:
    try:
        xapi.call(method, ref)
    except exception.VmBadPowerState:
        pass


def _ignore_missing(xapi: Any, method: str, ref: str) -> None:
    try:
        xapi.call(method, ref)
    except exception.HandleInvalid:
        pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, exception.XhostError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


__all__ = ["AttachError", "Compute", "DestroyError", "DetachError", "Disk", "NoGuestAgent",
           "PortNotFound", "ServerExists", "ServerNotFound", "ServerNotRunning", "SpawnError"]

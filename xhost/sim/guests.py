"""Simulated guests: one XenStore tree and one guest OS per running domain.

``sim.guests`` is a :class:`GuestManager`.  The VM behaviours call its
lifecycle hooks (``on_start``, ``on_stop``, ``on_pause``, ``on_unpause``);
for each new domain it builds the toolstack's XenStore tree
(:mod:`xhost.sim.guest_domains`), boots a :class:`~xhost.sim.guest_os.SimulatedGuest`
(at once at speed 0, after ~12 s x speed otherwise) and keeps
``VM_guest_metrics`` in step with what the guest writes
(:mod:`xhost.sim.guest_metrics`).

A VM whose ``other_config["xhost_sim_tools"]`` is ``"false"`` behaves as a
guest without PV tools: it boots and reads its configuration, but publishes
nothing, so no guest metrics ever appear, and clean shutdown/reboot fail with
``VM_MISSING_PV_DRIVERS``.

Guest agents register a factory, called once per boot of every guest::

    def factory(guest):                     # a SimulatedGuest
        if guest.preference("agent") != "nova":
            return None                     # this guest has no such agent
        return MyAgent(guest)               # watches guest.xenstore, has stop()

    unregister = sim.guests.register_agent(factory)
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import guest_domains
from .errors import ApiError
from .guest_metrics import WATCHED, GuestMetricsPublisher, collect
from .guest_os import GuestState, SimulatedGuest, lease_for
from .xenstore import Watch, XenStore, XenStoreError, domain_path

if TYPE_CHECKING:
    from .simulator import Simulator

LOG = logging.getLogger(__name__)

TOOLS_KEY = "xhost_sim_tools"
#: Seconds from domain creation to published guest metrics at speed 1.
GUEST_BOOT_SECONDS = 12.0

AgentFactory = Callable[[SimulatedGuest], Any]

__all__ = ["TOOLS_KEY", "GuestManager", "GuestState", "SimulatedGuest", "has_tools",
           "lease_for"]


def has_tools(vm: dict) -> bool:
    """Whether the VM's guest has PV tools (``other_config:xhost_sim_tools``)."""
    return vm["other_config"].get(TOOLS_KEY, "true").lower() not in ("false", "0", "no")


class GuestManager:
    """The guests of the simulated host (``sim.guests``)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self._guests: dict[str, SimulatedGuest] = {}
        self._states: dict[str, GuestState] = {}
        self._watches: dict[str, Watch] = {}
        self._factories: list[AgentFactory] = []
        self._lock = threading.RLock()
        self.metrics = GuestMetricsPublisher(sim, self.xenstore)
        sim.db.on_destroy(self._record_destroyed)
        from . import guest_agent, guest_http

        guest_http.install()
        # The XenServer guest agent, in the guests that have one.
        guest_agent.install(self)

    @property
    def xenstore(self) -> XenStore:
        return self.sim.dom0.xenstore

    # -- agents ------------------------------------------------------------------
    def register_agent(self, factory: AgentFactory) -> Callable[[], None]:
        """Call ``factory(guest)`` whenever a guest has booted (also for guests
        already running); it returns an agent object (``stop()`` is called when
        the domain goes) or None.  Returns a function that unregisters it."""
        with self._lock:
            self._factories.append(factory)
            running = [g for g in self._guests.values() if g.booted.is_set()]
        for guest in running:
            self._attach(guest, factory)

        def unregister() -> None:
            with self._lock:
                if factory in self._factories:
                    self._factories.remove(factory)
        return unregister

    def _attach(self, guest: SimulatedGuest, factory: AgentFactory) -> None:
        try:
            agent = factory(guest)
        except Exception:
            LOG.exception("guest agent factory failed for VM %s", guest.uuid)
            return
        if agent is not None:
            guest.agents.append(agent)

    def _guest_booted(self, guest: SimulatedGuest) -> None:
        if guest.tools:
            self.metrics.refresh(guest.vm, guest.domid)
        with self._lock:
            factories = list(self._factories)
        for factory in factories:
            if guest.alive.is_set():
                self._attach(guest, factory)

    # -- lookups -----------------------------------------------------------------
    def get(self, vm: str) -> SimulatedGuest | None:
        """The running guest of ``vm`` (a reference or a UUID), if any."""
        with self._lock:
            guest = self._guests.get(vm)
            if guest is None:
                guest = next((g for g in self._guests.values() if g.uuid == vm), None)
            return guest

    def state(self, vm: str) -> GuestState:
        """What the guest of ``vm`` (a reference) has received so far."""
        with self._lock:
            return self._states.setdefault(vm, GuestState())

    def running(self) -> list[SimulatedGuest]:
        with self._lock:
            return list(self._guests.values())

    # -- lifecycle hooks -----------------------------------------------------------
    def start(self) -> None:
        """The simulator starts: dom0's own tree, then the domains that were
        running when it stopped (their guests boot again)."""
        guest_domains.build_dom0(self.xenstore, self.sim.db)
        for ref, rec in self.sim.db.all("VM").items():
            if rec["power_state"] in ("Running", "Paused") and rec["domid"] > 0 \
                    and not rec["is_control_domain"]:
                self.on_start(ref)

    def stop(self) -> None:
        """The simulator stops: guests stop (nothing is written to the database)."""
        with self._lock:
            guests = list(self._guests.values())
            self._guests.clear()
            watches = list(self._watches.values())
            self._watches.clear()
        for watch in watches:
            watch.cancel()
        for guest in guests:
            guest.teardown()
        self.xenstore.close()

    def on_start(self, vm: str) -> None:
        """A domain of ``vm`` was created (start, resume, reboot)."""
        db = self.sim.db
        rec = db.get("VM", vm)
        if rec["is_control_domain"]:
            return
        domid = rec["domid"]
        self.on_stop(vm)
        guest_domains.build_domain(self.xenstore, db, vm, domid)
        guest = SimulatedGuest(self, vm, domid, self.state(vm), tools=has_tools(rec),
                               paused=rec["power_state"] == "Paused")
        home = domain_path(domid)

        def changed(path: str, _token: str) -> None:
            rel = path[len(home) + 1:] if path.startswith(home + "/") else ""
            if rel and any(rel == p or rel.startswith(p + "/") for p in WATCHED):
                self.metrics.changed(vm, domid)

        watch = self.xenstore.watch(home, changed)
        with self._lock:
            self._guests[vm] = guest
            self._watches[vm] = watch
        guest.boot(GUEST_BOOT_SECONDS * self.sim.controls.speed)

    def on_stop(self, vm: str) -> None:
        """The domain of ``vm`` is going away (shutdown, reboot, suspend...)."""
        with self._lock:
            guest = self._guests.pop(vm, None)
            watch = self._watches.pop(vm, None)
        if watch is not None:
            watch.cancel()
        if guest is not None:
            guest.teardown()
            rec = self.sim.db.find("VM", vm)
            guest_domains.destroy_domain(self.xenstore, guest.domid,
                                         rec["uuid"] if rec else guest.uuid)
        self.metrics.drop(vm, guest.domid if guest else None)

    def on_devices_changed(self, vm: str) -> None:
        """A VIF or VBD of ``vm`` was plugged or unplugged while it runs."""
        guest = self.get(vm)
        if guest is None:
            return
        guest_domains.sync_devices(self.xenstore, self.sim.db, vm, guest.domid)
        guest.devices_changed()

    def on_migrate(self, vm: str, old_domid: int | str) -> None:
        """A running ``vm`` moved to another host with a new domid: its old
        domain goes, a new one (same guest state) comes up."""
        self.on_start(vm)

    def on_pause(self, vm: str) -> None:
        guest = self.get(vm)
        if guest is not None:
            guest.running.clear()

    def on_unpause(self, vm: str) -> None:
        guest = self.get(vm)
        if guest is not None:
            guest.running.set()

    def _record_destroyed(self, cls: str, ref: str, rec: dict[str, Any]) -> None:
        if cls == "VM":
            with self._lock:
                self._states.pop(ref, None)

    # -- the guest acting on its own domain --------------------------------------------
    def _context(self, method: str):
        from .dispatch import CallContext

        host = self.sim.hosts[0] if self.sim.hosts else None
        return CallContext(self.sim, host, None, method)

    def _settled(self, vm: str, domid: int, timeout: float = 30.0) -> bool:
        """Whether domain ``domid`` still runs ``vm`` once no API operation
        (e.g. the VM.start that booted it) is in progress on the VM."""
        deadline = time.monotonic() + timeout
        while True:
            rec = self.sim.db.find("VM", vm)
            if rec is None or rec["domid"] != domid or rec["power_state"] not in (
                    "Running", "Paused"):
                return False
            if not rec["current_operations"] and rec["power_state"] == "Running":
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def guest_reboot(self, vm: str, domid: int) -> bool:
        """Domain ``domid`` of ``vm`` rebooted itself: a new domain boots."""
        from .behaviours.vm import _reboot

        if not self._settled(vm, domid):
            return False
        _reboot(self._context("VM.hard_reboot"), vm)
        return True

    def guest_shutdown(self, vm: str, domid: int) -> bool:
        """Domain ``domid`` of ``vm`` powered itself off: the VM halts."""
        from .behaviours.vm import domain_gone

        if not self._settled(vm, domid):
            return False
        domain_gone(self._context("VM.hard_shutdown"), vm)
        return True

    # -- the debug view ------------------------------------------------------------------
    def describe(self, vm_uuid: str) -> dict[str, Any] | None:
        """The JSON of ``GET /sim/guests/<vm uuid>`` (None: no such VM)."""
        db = self.sim.db
        try:
            ref = db.by_uuid("VM", vm_uuid)
        except ApiError:
            return None
        rec = db.get("VM", ref)
        guest = self.get(ref)
        doc: dict[str, Any] = {
            "vm": {"uuid": rec["uuid"], "ref": ref, "name_label": rec["name_label"],
                   "power_state": rec["power_state"]},
            "tools": has_tools(rec),
            "domain": guest.describe() if guest is not None else None,
        }
        doc.update(self.state(ref).to_json())
        if guest is not None:
            doc["vm_data"] = guest.vm_data()
            home = domain_path(guest.domid)

            def lookup(key: str) -> str | None:
                try:
                    return self.xenstore.read(f"{home}/{key}")
                except XenStoreError:
                    return None

            def listdir(key: str) -> list[str]:
                try:
                    return self.xenstore.directory(f"{home}/{key}")
                except XenStoreError:
                    return []
            doc["metrics"] = collect(lookup, listdir)
        else:
            doc["vm_data"] = {}
            doc["metrics"] = None
        return doc

    def summary(self) -> list[dict[str, Any]]:
        """One line per running guest (``GET /sim/guests``)."""
        return [{"uuid": g.uuid, "domid": g.domid, "booted": g.booted.is_set(),
                 "tools": g.tools, "hostname": g.state.hostname} for g in self.running()]

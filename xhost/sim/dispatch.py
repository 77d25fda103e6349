"""Call dispatch: from ``(method name, wire params)`` to a result or an ApiError.

The checks run in xapi's order: unknown method, arity, parameter types,
session, async support, injected faults, then the implementation.  Every
message of the datamodel gets an :class:`Entry` with everything precomputed;
its implementation is, in order of preference, a registered behaviour
(:mod:`xhost.sim.behaviours`), the generic implementation of an implicit
message, a generic field operation for explicit ``set_x``/``add_to_x``-style
messages, or ``NOT_IMPLEMENTED [Class.name]``.

Calls of messages that have an ``Async`` form get a real task record for
their duration, even when called synchronously, as in xapi; that task is the
key of the ``current_operations`` entries the call creates.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import latency as latency_model
from .errors import ApiError
from .query import compile_query
from .schema import ClassSpec, MessageSpec, fresh
from .xapi_types import Encoder

if TYPE_CHECKING:
    from .simulator import SimHost, Simulator

LOG = logging.getLogger(__name__)

Impl = Callable[..., Any]

#: Seconds between two progress/cancellation ticks of long work.
TICK = 0.05

#: What a pool member answers itself instead of HOST_IS_SLAVE: the emergency
#: calls an administrator makes on a member whose master is gone.
MEMBER_LOCAL_CALLS = frozenset({
    "session.slave_local_login_with_password", "session.local_logout",
    "pool.emergency_transition_to_master", "pool.emergency_reset_master"})


class CallContext:
    """What an implementation knows about the call it serves."""

    __slots__ = ("sim", "host", "session", "task", "method", "is_async")

    def __init__(self, sim: Simulator, host: SimHost | None, session: str | None,
                 method: str, task: str | None = None, is_async: bool = False) -> None:
        self.sim = sim
        self.host = host
        self.session = session
        self.method = method
        self.task = task
        self.is_async = is_async

    @property
    def db(self):
        return self.sim.db

    @property
    def host_ref(self) -> str:
        return self.host.host_ref if self.host is not None else self.sim.master_ref

    @property
    def op_key(self) -> str:
        """The key of this call's ``current_operations`` entries."""
        return self.task or ("OpaqueRef:" + str(id(self)))

    def check_cancel(self) -> None:
        if self.task is not None:
            st = self.sim.tasks.states.get(self.task)
            if st is not None:
                st.check()

    def progress(self, value: float) -> None:
        if self.task is not None:
            self.sim.tasks.progress(self.task, value)

    def cancellable(self, flag: bool = True) -> None:
        if self.task is not None and self.is_async:
            self.sim.tasks.set_cancellable(self.task, flag)

    def latency(self, method: str | None = None, scale: float = 1.0) -> float:
        """Seconds the current method (or ``method``) should take."""
        return self.sim.dispatcher.delay_for(method or self.method, scale)

    def work(self, seconds: float | None = None, start: float = 0.0, end: float = 1.0) -> None:
        """Spend ``seconds`` (default: this method's latency) of simulated
        work, ticking progress from ``start`` to ``end`` and honouring
        cancellation."""
        if seconds is None:
            seconds = self.latency()
        self.check_cancel()
        if seconds <= 0:
            self.progress(end)
            return
        t0 = time.monotonic()
        while True:
            elapsed = time.monotonic() - t0
            if elapsed >= seconds:
                break
            time.sleep(min(TICK, seconds - elapsed))
            self.check_cancel()
            self.progress(start + (end - start) * min(1.0, (time.monotonic() - t0) / seconds))
        self.progress(end)


class Entry:
    __slots__ = ("spec", "wire", "impl", "decoders", "n_mandatory", "n_params",
                 "defaults", "has_defaults", "session", "encode", "async_ok",
                 "task_sync", "handles_latency", "cancellable", "result_void",
                 "implemented")

    def __init__(self, spec: MessageSpec, impl: Impl, encode: Encoder, *,
                 handles_latency: bool = False, cancellable: bool = False,
                 implemented: bool = True) -> None:
        self.spec = spec
        self.wire = spec.wire
        self.impl = impl
        self.decoders = tuple(p.decode for p in spec.params)
        self.n_mandatory = spec.n_mandatory
        self.n_params = len(spec.params)
        self.defaults = tuple(p.default for p in spec.params[spec.n_mandatory:])
        self.has_defaults = spec.has_defaults
        self.session = spec.session
        self.encode = encode
        self.async_ok = spec.async_ok
        # xapi makes a database task for every call that has an Async form.
        self.task_sync = spec.async_ok
        self.handles_latency = handles_latency
        self.cancellable = cancellable
        self.result_void = spec.result.kind == "void"
        self.implemented = implemented


class Dispatcher:
    def __init__(self, sim: Simulator) -> None:
        from .behaviours import registry  # late import: behaviours import us

        self.sim = sim
        self.schema = sim.schema
        self.entries: dict[str, Entry] = {}
        behaviours = registry()
        for cls in self.schema.classes.values():
            for spec in cls.messages.values():
                self.entries[spec.wire] = self._make_entry(cls, spec, behaviours.get(spec.wire))
        self.list_methods = sorted(self.entries)
        self._string_set = self.schema.types.xml_encoder(self.schema.types.parse("string set"))
        self._task_ref = self.schema.types.xml_encoder(self.schema.types.parse("task ref"))

    # -- building --------------------------------------------------------------
    def _make_entry(self, cls: ClassSpec, spec: MessageSpec, behaviour: Any) -> Entry:
        encode = self.schema.types.xml_encoder(spec.result)
        if behaviour is not None:
            return Entry(spec, behaviour.fn, encode, handles_latency=behaviour.latency,
                         cancellable=behaviour.cancellable)
        impl = self._generic(cls, spec)
        if impl is not None:
            return Entry(spec, impl, encode)

        def not_implemented(ctx: CallContext, *args: Any) -> Any:
            raise ApiError("NOT_IMPLEMENTED", spec.wire)
        return Entry(spec, not_implemented, encode, implemented=False)

    def override(self, wire: str, fn: Impl, *, handles_latency: bool = False,
                 cancellable: bool = False) -> None:
        """Replace the implementation of ``wire`` for this simulator only
        (the hook later parts use, e.g. SR drivers with real files)."""
        old = self.entries[wire]
        self.entries[wire] = Entry(old.spec, fn, old.encode, handles_latency=handles_latency,
                                   cancellable=cancellable)

    def generic(self, wire: str) -> Impl:
        """The generic (schema-derived) implementation of a message."""
        cls_name, _, _name = wire.partition(".")
        cls = self.schema.classes[cls_name]
        spec = self.schema.message(wire)
        assert spec is not None
        impl = self._generic(cls, spec)
        if impl is None:
            raise KeyError(f"{wire} has no generic implementation")
        return impl

    def _generic(self, cls: ClassSpec, spec: MessageSpec) -> Impl | None:
        kind, fld = spec.kind, spec.field
        if kind is None and spec.name in ("get_record", "get_all", "get_all_records",
                                          "get_all_records_where", "get_by_uuid", "destroy"):
            kind = spec.name
        if kind is None:
            # Explicit messages shaped like field operations work on the field.
            pnames = [p.name for p in spec.params]
            for prefix, k, shape in (("set_", "set", 2), ("add_to_", "map_add", 3),
                                     ("remove_from_", "map_remove", 2), ("add_", "set_add", 2),
                                     ("remove_", "set_remove", 2)):
                if spec.name.startswith(prefix) and spec.name[len(prefix):] in cls.fields \
                        and len(pnames) == shape:
                    f = cls.fields[spec.name[len(prefix):]]
                    if k.startswith("map") and f.type.kind != "map":
                        continue
                    if k.startswith("set_") and k != "set" and f.type.kind != "set":
                        continue
                    kind, fld = k, f.name
                    break
            else:
                return None
        db = self.sim.db
        name = cls.name
        types = self.schema.types
        if kind == "get_record":
            return lambda ctx, ref: db.get(name, ref)
        if kind == "get_all":
            return lambda ctx: db.refs(name)
        if kind == "get_all_records":
            return lambda ctx: db.all(name)
        if kind == "get_all_records_where":
            known = set(cls.fields)
            ftypes = {f.name: f.type for f in cls.fields.values()}

            def where(ctx: CallContext, expr: str) -> Any:
                pred = compile_query(expr, known)
                out = {}
                for ref, rec in db.all(name).items():
                    if pred(lambda f, rec=rec: types.db_string(ftypes[f], rec[f])):
                        out[ref] = rec
                return out
            return where
        if kind == "get_by_uuid":
            return lambda ctx, uuid: db.by_uuid(name, uuid)
        if kind == "get_by_name_label":
            return lambda ctx, label: [r for r, rec in db.all(name).items()
                                       if rec.get("name_label") == label]
        if kind == "create":
            return lambda ctx, record: db.add(name, cls.new_record(record))
        if kind == "destroy":
            def destroy(ctx: CallContext, ref: str) -> None:
                db.remove(name, ref)
            return destroy
        assert fld is not None
        if kind == "get":
            def getter(ctx: CallContext, ref: str, _f=fld) -> Any:
                rec = db.tables[name].get(ref)
                if rec is None:
                    raise ApiError("HANDLE_INVALID", name, ref)
                return rec[_f]
            return getter
        if kind == "set":
            def setter(ctx: CallContext, ref: str, value: Any, _f=fld) -> None:
                db.update(name, ref, **{_f: value})
            return setter
        if kind == "map_add":
            def map_add(ctx: CallContext, ref: str, key: str, value: Any, _f=fld) -> None:
                with db.lock:
                    rec = db.get(name, ref)
                    if key in rec[_f]:
                        raise ApiError("MAP_DUPLICATE_KEY", name, _f, ref, key)
                    new = dict(rec[_f])
                    new[key] = value
                    db.update(name, ref, **{_f: new})
            return map_add
        if kind == "map_remove":
            def map_remove(ctx: CallContext, ref: str, key: str, _f=fld) -> None:
                with db.lock:
                    rec = db.get(name, ref)
                    if key in rec[_f]:
                        new = dict(rec[_f])
                        del new[key]
                        db.update(name, ref, **{_f: new})
            return map_remove
        if kind == "set_add":
            def set_add(ctx: CallContext, ref: str, value: Any, _f=fld) -> None:
                with db.lock:
                    rec = db.get(name, ref)
                    if value not in rec[_f]:
                        db.update(name, ref, **{_f: rec[_f] + [value]})
            return set_add
        if kind == "set_remove":
            def set_remove(ctx: CallContext, ref: str, value: Any, _f=fld) -> None:
                with db.lock:
                    rec = db.get(name, ref)
                    if value in rec[_f]:
                        db.update(name, ref, **{_f: [v for v in rec[_f] if v != value]})
            return set_remove
        return None

    # -- latency ---------------------------------------------------------------
    def delay_for(self, wire: str, scale: float = 1.0) -> float:
        controls = self.sim.controls
        overrides = controls.latency_overrides
        fixed = overrides.get(wire, overrides.get("*"))
        if fixed is not None:
            return fixed
        if controls.speed <= 0:
            return 0.0
        entry = self.entries.get(wire)
        kind = entry.spec.kind if entry else None
        return latency_model.default_latency(wire, kind) * controls.speed * scale

    # -- calling ---------------------------------------------------------------
    def call(self, name: str, params: list[Any], host: SimHost | None) -> tuple[Any, Encoder]:
        """Run one call; returns ``(value, xml encoder)`` or raises ApiError."""
        sim = self.sim
        controls = sim.controls
        controls.count(name)
        if host is not None and host.master_address is not None \
                and name not in MEMBER_LOCAL_CALLS:
            raise ApiError("HOST_IS_SLAVE", host.master_address)
        is_async = False
        base = name
        if name.startswith("Async."):
            is_async, base = True, name[6:]
        elif name.startswith("InternalAsync."):
            is_async, base = True, name[14:]
        entry = self.entries.get(base)
        if entry is None:
            if base == "system.listMethods":
                return self.list_methods, self._string_set
            if params and isinstance(params[0], str):
                # xapi treats an unknown call with arguments as a possible
                # extension: the session is checked first.
                sim.sessions.check(params[0])
            raise ApiError("MESSAGE_METHOD_UNKNOWN", base)
        session = None
        if entry.session:
            nargs = len(params) - 1
        else:
            nargs = len(params)
        n_mandatory = entry.n_mandatory
        if nargs != n_mandatory and not (entry.has_defaults and nargs > n_mandatory):
            raise ApiError("MESSAGE_PARAMETER_COUNT_MISMATCH", base, n_mandatory, nargs)
        offset = 1 if entry.session else 0
        decoders = entry.decoders
        args = [decoders[i](params[i + offset]) for i in range(min(nargs, entry.n_params))]
        if len(args) < entry.n_params:
            args.extend(fresh(d) for d in entry.defaults[len(args) - n_mandatory:])
        if entry.session:
            session = params[0]
            if not isinstance(session, str):
                raise ApiError("FIELD_TYPE_ERROR", "session_id")
            sim.sessions.check(session)
        if is_async and not entry.async_ok:
            raise ApiError("Fault", f"No async mode for this operation (rpc: {base})")
        if is_async:
            return self._start_async(entry, name, base, args, session, host), self._task_ref
        ctx = CallContext(sim, host, session, base)
        if entry.task_sync:
            ctx.task = sim.tasks.create(base, host=ctx.host_ref, worker=True)
            try:
                value = self._run(entry, ctx, args)
            finally:
                try:
                    sim.tasks.destroy_now(ctx.task)
                except ApiError:
                    pass
        else:
            value = self._run(entry, ctx, args)
        return value, entry.encode

    def _run(self, entry: Entry, ctx: CallContext, args: list[Any]) -> Any:
        controls = self.sim.controls
        if ctx.session is not None and entry.spec.roles:
            role = self.sim.sessions.role(ctx.session)
            if role != "pool-admin" and role not in entry.spec.roles:
                raise ApiError(
                    "RBAC_PERMISSION_DENIED", entry.wire.lower(),
                    "No permission in user session. (Roles with this permission: "
                    + ", ".join(r for r in entry.spec.roles if r != "client-cert") + ")")
        if controls.faults:
            # Injected faults fail the work itself: inside the task for Async calls.
            if entry.wire == "host.call_plugin" and len(args) >= 3:
                controls.check_fault(entry.wire, plugin=args[1], fn=args[2])
            else:
                controls.check_fault(entry.wire)
        if not entry.handles_latency:
            if controls.speed > 0 or controls.latency_overrides:
                delay = self.delay_for(entry.wire)
                kind = entry.spec.kind
                if kind in ("get_all_records", "get_all_records_where") and controls.speed > 0 \
                        and entry.wire not in controls.latency_overrides:
                    delay += latency_model.PER_RECORD * controls.speed * len(
                        self.sim.db.tables.get(entry.spec.cls, ()))
                if delay > 0:
                    ctx.work(delay)
        return entry.impl(ctx, *args)

    def _start_async(self, entry: Entry, label: str, base: str, args: list[Any],
                     session: str | None, host: SimHost | None) -> str:
        sim = self.sim
        ctx = CallContext(sim, host, session, base, is_async=True)
        task = sim.tasks.create(label, host=ctx.host_ref, worker=True,
                                cancellable=entry.cancellable)
        ctx.task = task

        def run() -> None:
            try:
                value = self._run(entry, ctx, args)
                xml = "" if entry.result_void else entry.encode(value)
                sim.tasks.complete(task, xml)
            except ApiError as exc:
                sim.tasks.fail(task, exc)
            except Exception as exc:
                LOG.exception("async %s failed", base)
                sim.tasks.fail(task, ApiError("INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"))

        threading.Thread(target=run, name=f"task-{base}", daemon=True).start()
        return task

"""Conformance sweep generated from the datamodel the simulator ships.

For every implicit message of every modelled class, through the real XenAPI
client over HTTP: values round-trip with the declared types, RW setters
change the field, map/set helpers behave (MAP_DUPLICATE_KEY included), RO
fields have no setter (MESSAGE_METHOD_UNKNOWN), wrong arities give the exact
MESSAGE_PARAMETER_COUNT_MISMATCH parameters and bad values FIELD_TYPE_ERROR.
"""
from __future__ import annotations

import xmlrpc.client
from typing import Any

import pytest
import XenAPI

from xhost.sim.schema import MODELLED_CLASSES, load_schema
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER

SCHEMA = load_schema()
TABLE_CLASSES = [c for c in MODELLED_CLASSES if SCHEMA.classes[c].is_table]
IMPLICIT = [(c, m.name) for c in MODELLED_CLASSES for m in SCHEMA.classes[c].messages.values()
            if m.implicit]
RO_FIELDS = [(c, f.name) for c in TABLE_CLASSES for f in SCHEMA.classes[c].fields.values()
             if not f.rw and f"set_{f.name}" not in SCHEMA.classes[c].messages]


def failure(fn, *args) -> list[str]:
    with pytest.raises(XenAPI.Failure) as info:
        fn(*args)
    return info.value.details


def check_type(ty, value: Any) -> None:
    """Assert a value as the XML-RPC client sees it matches the API type."""
    kind = ty.kind
    if kind == "string":
        assert isinstance(value, str), value
    elif kind == "ref":
        assert isinstance(value, str) and value.startswith("OpaqueRef:"), value
    elif kind == "enum":
        assert value in ty.values, (value, ty.values)
    elif kind == "int":
        assert isinstance(value, str) and value.lstrip("-").isdigit(), value
    elif kind == "float":
        assert isinstance(value, float), value
    elif kind == "bool":
        assert isinstance(value, bool), value
    elif kind == "datetime":
        assert isinstance(value, xmlrpc.client.DateTime), value
        assert value.value.endswith("Z") and len(value.value) == 18
    elif kind == "set":
        assert isinstance(value, list), value
        for item in value:
            check_type(ty.of, item)
    elif kind == "map":
        assert isinstance(value, dict), value
        for k, v in value.items():
            assert isinstance(k, str)
            if ty.key.kind == "enum":
                assert k in ty.key.values
            check_type(ty.value, v)
    else:
        raise AssertionError(f"unexpected type {ty.text}")


@pytest.fixture(scope="module")
def world(shared_simulator):
    """One object of every modelled class, created through the API."""
    session = XenAPI.Session(shared_simulator.url)
    session.xenapi.login_with_password(SIM_USER, SIM_PASSWORD, "1.0", "conformance")
    x = session.xenapi
    tpl = x.VM.get_by_name_label("Debian Bookworm 12")[0]
    vm = x.VM.clone(tpl, "conformance vm")
    x.VM.provision(vm)
    x.VM.set_is_a_template(vm, False)
    net = x.network.get_by_name_label("Pool-wide network associated with eth0")[0]
    x.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                  "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    x.VM.start(vm, False, False)
    x.VM.clone(tpl, "conformance halted vm")
    host = x.host.get_all()[0]
    eth1 = [p for p in x.PIF.get_all() if x.PIF.get_device(p) == "eth1"][0]
    vlan_net = x.network.create({"name_label": "vlan net", "name_description": "",
                                 "MTU": "1500", "other_config": {}})
    x.VLAN.create(eth1, "42", vlan_net)
    bond_net = x.network.create({"name_label": "bond net", "name_description": "",
                                 "MTU": "1500", "other_config": {}})
    pifs = [p for p in x.PIF.get_all() if x.PIF.get_physical(p)]
    x.Bond.create(bond_net, pifs, "", "active-backup", {})
    x.message.create("CONFORMANCE", "3", "VM", x.VM.get_uuid(vm), "body")
    x.blob.create("text/plain", False)
    x.secret.create({"value": "s3cret", "other_config": {}})
    x.task.create("conformance", "task")
    assert x.host.compute_free_memory(host)
    yield session
    session.xenapi.session.logout()


def some_object(session, cls: str) -> str:
    if cls == "VM":
        return session.xenapi.VM.get_by_name_label("conformance halted vm")[0]
    refs = (getattr(session.xenapi, cls).get_all() if cls != "session"
            else [session._session])
    assert refs, f"no {cls} object to test"
    return refs[0]


@pytest.mark.parametrize("cls,name", IMPLICIT, ids=[f"{c}.{n}" for c, n in IMPLICIT])
def test_implicit_message(world, cls, name):
    x = world.xenapi
    spec = SCHEMA.classes[cls]
    msg = spec.messages[name]
    api = getattr(x, cls)
    call = getattr(api, name)
    kind, fld = msg.kind, msg.field

    # Arity: one argument too many always fails with the exact parameters.
    n = len(msg.params)
    details = failure(world.xenapi_request, f"{cls}.{name}", tuple(["x"] * (n + 1)))
    assert details == ["MESSAGE_PARAMETER_COUNT_MISMATCH", f"{cls}.{name}", str(n), str(n + 1)]
    if n:
        details = failure(world.xenapi_request, f"{cls}.{name}", tuple(["x"] * (n - 1)))
        assert details == ["MESSAGE_PARAMETER_COUNT_MISMATCH", f"{cls}.{name}", str(n),
                           str(n - 1)]

    if kind == "create":
        required = [f.name for f in spec.ctor_fields if not f.has_default]
        if required:
            details = failure(call, {})
            assert details[0] == "INTERNAL_ERROR" and required[0] in details[1]
        return
    if kind == "destroy":
        details = failure(call, "OpaqueRef:00000000-0000-0000-0000-000000000000")
        assert details == ["HANDLE_INVALID", cls,
                           "OpaqueRef:00000000-0000-0000-0000-000000000000"]
        return
    if kind == "get_all":
        refs = call()
        assert isinstance(refs, list) and all(r.startswith("OpaqueRef:") for r in refs)
        return
    if kind in ("get_all_records", "get_all_records_where"):
        records = call() if kind == "get_all_records" else call("true")
        assert records, f"no {cls} records"
        for ref, rec in records.items():
            assert ref.startswith("OpaqueRef:")
            assert set(rec) == set(spec.fields)
        if kind == "get_all_records_where":
            assert call("false") == {}
            assert failure(call, "field \"nope\" = = \"x\"")[0] == "INVALID_VALUE"
        return
    if kind == "get_by_uuid":
        ref = some_object(world, cls)
        assert call(api.get_uuid(ref)) == ref
        assert failure(call, "no-such-uuid") == ["UUID_INVALID", cls, "no-such-uuid"]
        return
    if kind == "get_by_name_label":
        ref = some_object(world, cls)
        assert ref in call(api.get_name_label(ref))
        assert call("no object has this name") == []
        return
    if kind == "get_record":
        ref = some_object(world, cls)
        rec = call(ref)
        assert set(rec) == set(spec.fields)
        for f in spec.fields.values():
            check_type(f.type, rec[f.name])
        bad = "OpaqueRef:11111111-1111-1111-1111-111111111111"
        assert failure(call, bad) == ["HANDLE_INVALID", cls, bad]
        assert failure(call, 42) == ["FIELD_TYPE_ERROR", "self"]
        return

    ref = some_object(world, cls)
    field = spec.fields[fld]
    if kind == "get":
        value = call(ref)
        check_type(field.type, value)
        assert api.get_record(ref)[fld] == value
        return
    if kind == "set":
        original = getattr(api, f"get_{fld}")(ref)
        new = sample_value(field.type, original)
        call(ref, new)
        assert getattr(api, f"get_{fld}")(ref) == new
        call(ref, original)
        assert getattr(api, f"get_{fld}")(ref) == original
        return
    if kind == "map_add":
        key = "conformance-key"
        if field.type.key.kind == "enum":
            key = field.type.key.values[-1]
        value = sample_value(field.type.value, None)
        getattr(api, f"remove_from_{fld}")(ref, key)
        call(ref, key, value)
        assert getattr(api, f"get_{fld}")(ref)[key] == value
        details = failure(call, ref, key, value)
        assert details == ["MAP_DUPLICATE_KEY", cls, fld, ref, key]
        getattr(api, f"remove_from_{fld}")(ref, key)
        return
    if kind == "map_remove":
        key = "conformance-remove"
        if field.type.key.kind == "enum":
            key = field.type.key.values[0]
        getattr(api, f"add_to_{fld}")(ref, key, sample_value(field.type.value, None))
        call(ref, key)
        assert key not in getattr(api, f"get_{fld}")(ref)
        call(ref, key)  # removing an absent key is not an error
        return
    if kind in ("set_add", "set_remove"):
        item = sample_value(field.type.of, None)
        getattr(api, f"add_{fld}")(ref, item)
        getattr(api, f"add_{fld}")(ref, item)
        assert getattr(api, f"get_{fld}")(ref).count(item) == 1
        getattr(api, f"remove_{fld}")(ref, item)
        assert item not in getattr(api, f"get_{fld}")(ref)
        return
    raise AssertionError(f"untested kind {kind}")


def sample_value(ty, original: Any) -> Any:
    """A valid value of ``ty`` different from ``original`` where easy."""
    kind = ty.kind
    if kind == "string":
        return "conformance \u00e9<&>" if original != "conformance \u00e9<&>" else "other"
    if kind == "int":
        return "12345" if original != "12345" else "54321"
    if kind == "float":
        return 2.5
    if kind == "bool":
        return not original if original is not None else True
    if kind == "enum":
        others = [v for v in ty.values if v != original]
        return others[0] if others else original
    if kind == "ref":
        return original if original is not None else "OpaqueRef:NULL"
    if kind == "datetime":
        return xmlrpc.client.DateTime("20240102T03:04:05Z")
    if kind == "set":
        if ty.of.kind in ("string",):
            return ["a", "b"]
        return original if original is not None else []
    if kind == "map":
        if ty.key.kind == "string" and ty.value.kind == "string":
            return {"conformance": "1", "x<y": "a&b"}
        if ty.key.kind == "enum" and ty.value.kind == "string":
            return {ty.key.values[-1]: "blocked by conformance test"}
        return original if original is not None else {}
    raise AssertionError(ty.text)


@pytest.mark.parametrize("cls,field", RO_FIELDS, ids=[f"{c}.{f}" for c, f in RO_FIELDS])
def test_read_only_fields_have_no_setter(world, cls, field):
    x = world.xenapi
    ref = some_object(world, cls)
    details = failure(getattr(getattr(x, cls), f"set_{field}"), ref, "x")
    assert details == ["MESSAGE_METHOD_UNKNOWN", f"{cls}.set_{field}"]


@pytest.mark.parametrize("name", ["VM.no_such_call", "no_such_class.get_all", "VM",
                                  "Async.VM.no_such_call"])
def test_unknown_names(world, name):
    details = failure(world.xenapi_request, name, ())
    expected = name[6:] if name.startswith("Async.") else name
    assert details == ["MESSAGE_METHOD_UNKNOWN", expected]


def test_every_modelled_class_has_a_table_and_records(world):
    x = world.xenapi
    for cls in TABLE_CLASSES:
        if cls == "session":
            continue
        assert getattr(x, cls).get_all(), f"{cls} has no objects"


def test_schema_covers_the_whole_datamodel():
    assert len(SCHEMA.classes) == 67
    assert sum(len(c.messages) for c in SCHEMA.classes.values()) >= 1828
    for cls in MODELLED_CLASSES:
        assert cls in SCHEMA.classes


EXPLICIT = [(c, m.name) for c in MODELLED_CLASSES for m in SCHEMA.classes[c].messages.values()
            if not m.implicit and m.session]


@pytest.mark.parametrize("cls,name", EXPLICIT, ids=[f"{c}.{n}" for c, n in EXPLICIT])
def test_explicit_message_arity(world, shared_simulator, cls, name):
    # A bare proxy: the XenAPI client intercepts session.logout and login calls.
    raw = xmlrpc.client.ServerProxy(shared_simulator.url)
    session = world._session
    msg = SCHEMA.classes[cls].messages[name]
    wire = f"{cls}.{name}"
    mandatory = msg.n_mandatory

    def details(method, count):
        reply = getattr(raw, method)(session, *(["x"] * count))
        assert reply["Status"] == "Failure", reply
        return reply["ErrorDescription"]

    if mandatory:
        assert details(wire, mandatory - 1) == ["MESSAGE_PARAMETER_COUNT_MISMATCH", wire,
                                                str(mandatory), str(mandatory - 1)]
    if not msg.has_defaults:
        assert details(wire, mandatory + 1) == ["MESSAGE_PARAMETER_COUNT_MISMATCH", wire,
                                                str(mandatory), str(mandatory + 1)]
    if msg.async_ok and mandatory:
        assert details("Async." + wire, mandatory - 1)[0] == "MESSAGE_PARAMETER_COUNT_MISMATCH"

"""The simulator's built-in guest agent: which guests have one, how it is
configured, and how it answers malformed or unknown requests (the protocol
itself is exercised end to end in tests/agent)."""
from __future__ import annotations

import json
import time

import pytest

from xhost.sim import guest_agent
from xhost.testing.waiting import wait_for


@pytest.mark.parametrize("spec,present", [
    ("yes", True), ("xenstore", True), ("no", False), ("none", False), ("", False),
    ("toy", False),  # another agent's spec
    ("slow=2,old", True), ("version=2.1,sha256,crlf,reset500", True),
    ("reboot=password+keyinit,code=*:42", True), ("slow=later", False), ("code=42", False),
])
def test_specs(spec, present):
    assert (guest_agent.parse(spec) is not None) is present


def test_spec_details():
    b = guest_agent.parse("version=2.1,sha256,slow=1.5,reboot=password+keyinit,"
                          "garbage=*,code=resetnetwork:42,old")
    assert (b.version, b.digest, b.slow, b.old) == ("2.1", "sha256", 1.5, True)
    assert b.reboot == {"password", "keyinit"} and b.codes == {"resetnetwork": "42"}
    assert guest_agent.Behaviour.hits(b.garbage, "anything")


def test_where_the_spec_comes_from():
    def vm(other):
        return {"other_config": other}
    props = json.dumps({"img_use_agent": "true", "xhost_sim_agent": "old"})
    assert guest_agent.spec_of(vm({"xhost_sim_agent": "no",
                                   "xhost_image_properties": props})) == "no"
    assert guest_agent.spec_of(vm({"xhost_image_properties": props})) == "old"
    assert guest_agent.spec_of(vm({"xhost_image_properties": '{"xenapi_use_agent": "True"}'})) \
        == "yes"
    assert guest_agent.spec_of(vm({"xhost_image_properties": '{"img_use_agent": "false"}'})) \
        == "no"
    assert guest_agent.spec_of(vm({"xhost_image_properties": "not json"})) is None
    assert guest_agent.spec_of(vm({})) is None


def test_malformed_and_unknown_requests(simulator, x, new_vm):
    vm = new_vm("agent")
    x.VM.add_to_other_config(vm, "xhost_sim_agent", "yes")
    x.VM.start(vm, False, False)
    home = f"/local/domain/{x.VM.get_domid(vm)}/data"
    xs = simulator.xenstore

    def ask(request_id, raw):
        xs.write(f"{home}/host/{request_id}", raw)
        path = f"{home}/guest/{request_id}"
        return json.loads(wait_for(lambda: xs.read(path) if xs.exists(path) else None))

    assert ask("a", '{"name": "reboot-the-world", "value": ""}') == \
        {"returncode": "404", "message": "unknown command reboot-the-world"}
    assert ask("b", "not json")["returncode"] == "500"
    assert ask("c", '{"name": "password", "value": "AAAA"}') == \
        {"returncode": "500", "message": "no key exchange yet: send keyinit first"}
    assert ask("d", '{"name": "keyinit", "value": "1"}')["returncode"] == "500"
    assert ask("e", '{"name": "features", "value": ""}')["message"] == \
        "version,features,keyinit,password,file_inject,injectfile,resetnetwork,agentupdate"
    state = simulator.guests.get(vm).state
    assert state.agent["version"] == "1.0.0.0"
    assert state.agent["received"] == ["reboot-the-world", "password", "keyinit", "features"]


def test_guests_without_the_setting_have_no_agent(simulator, x, new_vm):
    vm = new_vm("plain")
    x.VM.start(vm, False, False)
    home = f"/local/domain/{x.VM.get_domid(vm)}/data"
    simulator.xenstore.write(f"{home}/host/q", '{"name": "version", "value": "agent"}')
    time.sleep(0.3)
    assert not simulator.xenstore.exists(f"{home}/guest/q")
    assert simulator.guests.get(vm).state.agent == {}

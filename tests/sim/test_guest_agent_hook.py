"""The hook point for guest agents: factories, XenStore watches as the guest,
guest-initiated reboots, paused domains, and a dom0 script talking to an agent.

The agent here is a toy written for these tests (the real agent protocol is
the guest-agent issue's); the dom0 side is a purpose-written plugin using the
xenstore commands, as the real agent plugin does.
"""
from __future__ import annotations

import base64
import json
import textwrap
import threading

import pytest

from xhost.testing.waiting import wait_for


class ToyAgent:
    """Answers ``data/host/<id>`` requests in ``data/guest/<id>``."""

    def __init__(self, guest):
        self.guest = guest
        self.stopped = threading.Event()
        self.requests: list[dict] = []
        guest.xenstore.watch("data/host", self.on_change)

    def on_change(self, path: str, token: str) -> None:
        parts = path.split("/")
        if len(parts) != 3:
            return
        raw = self.guest.xenstore.get(path)
        if raw is None:
            return
        request = json.loads(raw)
        self.requests.append(request)
        name, value = request["name"], request.get("value", "")
        if name == "reboot":
            self.guest.reboot()
            return
        if name == "hostname":
            self.guest.set_hostname(value)
        elif name == "password":
            self.guest.set_password(value)
        elif name == "file":
            self.guest.inject_file(value["path"], base64.b64decode(value["b64"]))
        self.guest.set_agent_info(version="toy-1.0")
        self.guest.xenstore.write(f"data/guest/{parts[2]}",
                                  json.dumps({"returncode": "0", "message": f"did {name}"}))

    def stop(self) -> None:
        self.stopped.set()


@pytest.fixture
def agents(simulator):
    made: list[ToyAgent] = []

    def factory(guest):
        if guest.preference("agent") != "toy":
            return None
        agent = ToyAgent(guest)
        made.append(agent)
        return agent

    unregister = simulator.guests.register_agent(factory)
    yield made
    unregister()


@pytest.fixture
def agent_vm(x, new_vm):
    vm = new_vm("agent-vm")
    x.VM.add_to_other_config(vm, "xhost_sim_agent", "toy")
    return vm


def ask(simulator, domid, request_id: str, request: dict, timeout: float = 5.0) -> str | None:
    """The dom0 side, from Python: write a request, wait for the answer."""
    xs = simulator.xenstore
    xs.write(f"/local/domain/{domid}/data/host/{request_id}", json.dumps(request))
    path = f"/local/domain/{domid}/data/guest/{request_id}"
    return wait_for(lambda: xs.read(path) if xs.exists(path) else None, timeout)


def test_factory_runs_per_boot_and_agents_stop_with_the_domain(simulator, x, agents, agent_vm,
                                                                new_vm):
    plain = new_vm("no-agent")
    x.VM.start(plain, False, False)
    x.VM.start(agent_vm, False, False)
    assert len(agents) == 1
    first = agents[0]
    assert first.guest.domid == int(x.VM.get_domid(agent_vm))
    assert first.guest.vm == agent_vm and first.guest.booted.is_set()
    x.VM.clean_reboot(agent_vm)
    assert first.stopped.is_set()
    assert len(agents) == 2 and agents[1].guest.domid == int(x.VM.get_domid(agent_vm))
    x.VM.hard_shutdown(agent_vm)
    assert agents[1].stopped.is_set()


def test_agents_registered_later_attach_to_running_guests(simulator, x, agent_vm):
    x.VM.start(agent_vm, False, False)
    made = []
    unregister = simulator.guests.register_agent(lambda g: made.append(g) or None)
    running = {ref for ref in x.VM.get_all()
               if x.VM.get_power_state(ref) == "Running" and not x.VM.get_is_control_domain(ref)}
    # every running guest (the seeded compute VM too) gets the agent
    assert {g.vm for g in made} == running and agent_vm in running
    unregister()
    x.VM.clean_reboot(agent_vm)
    assert [g.vm for g in made].count(agent_vm) == 1


def test_request_and_answer_through_xenstore(simulator, x, agents, agent_vm):
    x.VM.start(agent_vm, False, False)
    domid = x.VM.get_domid(agent_vm)
    answer = ask(simulator, domid, "r1", {"name": "hostname", "value": "renamed"})
    assert json.loads(answer) == {"returncode": "0", "message": "did hostname"}
    assert simulator.guests.get(agent_vm).state.hostname == "renamed"


def test_paused_guests_do_not_answer_until_unpaused(simulator, x, agents, agent_vm):
    x.VM.start(agent_vm, False, False)
    domid = x.VM.get_domid(agent_vm)
    x.VM.pause(agent_vm)
    assert ask(simulator, domid, "p1", {"name": "hostname", "value": "later"},
               timeout=0.4) is None
    x.VM.unpause(agent_vm)
    path = f"/local/domain/{domid}/data/guest/p1"
    assert wait_for(lambda: simulator.xenstore.exists(path))


def test_guest_initiated_reboot_and_poweroff(simulator, x, agents, agent_vm):
    x.VM.start(agent_vm, False, False)
    domid = x.VM.get_domid(agent_vm)
    simulator.xenstore.write(f"/local/domain/{domid}/data/host/rb", '{"name": "reboot"}')
    assert wait_for(lambda: x.VM.get_domid(agent_vm) != domid)
    assert x.VM.get_power_state(agent_vm) == "Running"
    assert not simulator.xenstore.exists(f"/local/domain/{domid}")
    assert wait_for(lambda: x.VM.get_guest_metrics(agent_vm) != "OpaqueRef:NULL")
    assert simulator.guests.get(agent_vm).state.boots == 2
    simulator.guests.get(agent_vm).shutdown()
    assert wait_for(lambda: x.VM.get_power_state(agent_vm) == "Halted")
    assert str(domid) not in simulator.xenstore.directory("/local/domain")
    assert x.VM.get_domid(agent_vm) == "-1"


AGENT_PLUGIN = """
    import json, subprocess, time, XenAPIPlugin

    def sh(*argv):
        p = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, _ = p.communicate()
        return p.returncode, out.decode().rstrip("\\n")

    def call(session, args):
        home = "/local/domain/%s" % args["dom_id"]
        req = home + "/data/host/" + args["id"]
        reply = home + "/data/guest/" + args["id"]
        sh("xenstore-write", req, args["request"])
        deadline = time.time() + float(args["timeout"])
        try:
            while time.time() < deadline:
                time.sleep(0.05)
                code, out = sh("xenstore-read", reply)
                if code == 0:
                    sh("xenstore-rm", reply)
                    return out
                if sh("xenstore-exists", home + "/name")[0] != 0:
                    raise XenAPIPlugin.Failure("AGENT_REBOOT", [args["id"]])
            raise XenAPIPlugin.Failure("AGENT_TIMEOUT", [args["id"]])
        finally:
            sh("xenstore-rm", req)

    if __name__ == "__main__":
        XenAPIPlugin.dispatch({"call": call})
"""


def test_dom0_script_talks_to_the_agent(simulator, x, agents, agent_vm, fail):
    simulator.dom0.install_plugin("toy_agent.py",
                                  "#!/usr/bin/env python3\n" + textwrap.dedent(AGENT_PLUGIN))
    host = x.host.get_all()[0]
    x.VM.start(agent_vm, False, False)
    domid = x.VM.get_domid(agent_vm)

    def call(request_id, request, timeout="5"):
        return x.host.call_plugin(host, "toy_agent.py", "call", {
            "dom_id": domid, "id": request_id, "request": json.dumps(request),
            "timeout": timeout})

    assert json.loads(call("1", {"name": "password", "value": "s3cret!"}))["returncode"] == "0"
    # Base64, as agents do: xenstore-write would turn a JSON "\\n" into a newline.
    files = {"path": "/etc/motd", "b64": base64.b64encode(b"hello\n").decode()}
    assert json.loads(call("2", {"name": "file", "value": files}))["message"] == "did file"
    guest = simulator.guests.get(agent_vm)
    assert guest.state.password == "s3cret!"
    assert guest.state.files == {"/etc/motd": b"hello\n"}
    # Requests and replies are cleaned up by the dom0 side.
    assert simulator.xenstore.directory(f"/local/domain/{domid}/data/host") == []
    assert simulator.xenstore.directory(f"/local/domain/{domid}/data/guest") == []
    # The guest reboots in the middle of a request: the script sees its domain vanish.
    assert fail(x.host.call_plugin, host, "toy_agent.py", "call", {
        "dom_id": domid, "id": "3", "request": '{"name": "reboot"}', "timeout": "5"}) == \
        ["AGENT_REBOOT", "3"]
    x.VM.hard_shutdown(agent_vm)
    x.VM.remove_from_other_config(agent_vm, "xhost_sim_agent")
    x.VM.start(agent_vm, False, False)
    domid = x.VM.get_domid(agent_vm)
    assert fail(call, "4", {"name": "hostname"}, "0.3") == ["AGENT_TIMEOUT", "4"]


def test_a_reboot_asked_during_boot_waits_for_the_start_to_finish(simulator, x, agent_vm):
    rebooted = []

    def factory(guest):
        if guest.state.boots == 1:
            guest.reboot()          # e.g. cloud-init rebooting at first boot
            rebooted.append(guest.domid)
        return None

    unregister = simulator.guests.register_agent(factory)
    try:
        x.VM.start(agent_vm, False, False)
        assert wait_for(lambda: int(x.VM.get_domid(agent_vm)) not in (rebooted[0], -1))
        assert wait_for(lambda: (g := simulator.guests.get(agent_vm)) is not None
                        and g.booted.is_set())
        assert simulator.guests.get(agent_vm).state.boots == 2
        assert x.VM.get_power_state(agent_vm) == "Running"
    finally:
        unregister()

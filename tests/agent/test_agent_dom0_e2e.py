"""The dom0 scripts end to end: run by the simulator's ``host.call_plugin``
under dom0's Python 3.6, with the simulator's real ``xenstore-*`` commands,
talking to the simulated guest agent (which decrypts with ``openssl``)."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from xhost import exception
from xhost.backends.agent_xenstore import crypto
from xhost.testing.pythons import pyenv_python
from xhost.testing.realfixtures import component_guard
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER
from xhost.xapi.client import XapiClient
from xhost.xapi.dom0 import Dom0


@pytest.fixture
def client(simulator):
    with component_guard():
        simulator.dom0.interpreter = pyenv_python()
    c = XapiClient(simulator.url, SIM_USER, SIM_PASSWORD)
    yield c
    c.close()


@pytest.fixture
def guest_vm(client):
    """``guest_vm(agent_spec)``: a running VM whose guest runs the agent."""

    def make(spec: str = "yes") -> tuple[str, int]:
        tpl = client.call("VM.get_by_name_label", "Debian Bookworm 12")[0]
        vm = client.call("VM.clone", tpl, f"agent-{spec}")
        client.call("VM.provision", vm)
        client.call("VM.set_is_a_template", vm, False)
        client.call("VM.add_to_other_config", vm, "xhost_sim_agent", spec)
        client.call("VM.start", vm, False, False)
        return vm, int(client.call("VM.get_domid", vm))
    return make


@pytest.fixture
def agent(client):
    dom0 = Dom0(client)
    host = client.call("host.get_all")[0]

    def call(fn: str, plugin: str = "xhost_agent", **args):
        if plugin == "xhost_agent":
            args.setdefault("request_id", str(uuid.uuid4()))
        return dom0.call(host, plugin, fn, **args)
    return call


def reply(answer) -> dict:
    return json.loads(answer["reply"])


def requests_left(simulator, domid: int) -> list[str]:
    home = f"/local/domain/{domid}/data"
    return [f"{side}/{name}" for side in ("host", "guest")
            if simulator.xenstore.exists(f"{home}/{side}")
            for name in simulator.xenstore.directory(f"{home}/{side}")]


@pytest.mark.parametrize("digest", crypto.DIGESTS)
def test_key_exchange_and_password_under_python36(simulator, guest_vm, agent, digest):
    vm, domid = guest_vm("yes" if digest == "md5" else "sha256")
    assert reply(agent("version", dom_id=domid)) == {"returncode": "0", "message": "1.0.0.0"}
    dh = crypto.DiffieHellman()
    answer = reply(agent("key_init", dom_id=domid, pub=dh.public))
    assert answer["returncode"] == "D0"
    secret = dh.shared_secret(answer["message"])
    password = "pässwörd with spaces, 'quotes' & \\backslashes\\"
    sealed = crypto.encrypt(secret, (password + "\n").encode(), digest)
    assert reply(agent("password", dom_id=domid, enc_pass=sealed))["returncode"] == "0"
    assert simulator.guests.get(vm).state.password == password
    assert requests_left(simulator, domid) == []


def test_the_wrong_digest_is_refused_by_the_agent(simulator, guest_vm, agent):
    vm, domid = guest_vm("sha256")
    dh = crypto.DiffieHellman()
    secret = dh.shared_secret(reply(agent("key_init", dom_id=domid, pub=dh.public))["message"])
    sealed = crypto.encrypt(secret, b"secret\n", "md5")
    answer = reply(agent("password", dom_id=domid, enc_pass=sealed))
    assert answer == {"returncode": "500", "message": "could not decrypt the password"}
    assert simulator.guests.get(vm).state.password is None


def test_files_old_agents_and_resetnetwork(simulator, guest_vm, agent):
    vm, domid = guest_vm("old,reset500")
    answer = agent("inject_file", dom_id=domid, b64_path="L2V0Yy9h",  # /etc/a
                   b64_contents="eCx5AA==")  # x,y\0
    assert answer["command"] == "injectfile" and reply(answer)["returncode"] == "0"
    assert simulator.guests.get(vm).state.files == {"/etc/a": b"x,y\x00"}
    # "<path>,<contents>" cannot carry a path with a comma.
    with pytest.raises(exception.XapiFailure) as err:
        agent("inject_file", dom_id=domid, b64_path="L2V0Yy9hLGI=", b64_contents="")  # /etc/a,b
    assert err.value.details[:2] == ["XHOST_AGENT_NOT_IMPLEMENTED",
                                     "file injection of a path containing ','"]
    agent("write_record", plugin="xhost_xenstore", dom_id=domid, path="vm-data/hostname",
          value="renamed")
    assert reply(agent("resetnetwork", dom_id=domid))["returncode"] == "500"
    assert simulator.guests.get(vm).state.hostname == "renamed"
    assert requests_left(simulator, domid) == []


def test_vm_data_records_round_trip_through_the_real_commands(simulator, guest_vm, agent):
    _vm, domid = guest_vm()
    value = json.dumps({"label": "net\\1", "ips": [{"ip": "192.0.2.5"}], "note": "tab\there é"})
    agent("write_record", plugin="xhost_xenstore", dom_id=domid,
          path="vm-data/networking/fa163e000001", value=value)
    assert simulator.xenstore.read(f"/local/domain/{domid}/vm-data/networking/fa163e000001") \
        == value
    assert agent("read_record", plugin="xhost_xenstore", dom_id=domid,
                 path="vm-data/networking/fa163e000001") == value
    listed = agent("list_records", plugin="xhost_xenstore", dom_id=domid,
                   path="vm-data/networking")
    assert listed == {"fa163e000001": value}
    agent("delete_record", plugin="xhost_xenstore", dom_id=domid,
          path="vm-data/networking/fa163e000001")
    assert agent("list_records", plugin="xhost_xenstore", dom_id=domid,
                 path="vm-data/networking") == {}
    with pytest.raises(exception.XapiFailure) as err:
        agent("write_record", plugin="xhost_xenstore", dom_id=domid, path="data/host/x",
              value="forged")
    assert err.value.code == "XHOST_XENSTORE_BAD_PATH"


def test_timeout_and_reboot_are_detected_and_cleaned_up(simulator, client, guest_vm, agent):
    vm, domid = guest_vm("silent=version,reboot=features")
    started = time.monotonic()
    with pytest.raises(exception.XapiFailure) as err:
        agent("version", dom_id=domid, reply_timeout=0.5)
    assert err.value.code == "XHOST_AGENT_TIMEOUT"
    assert err.value.params == ["version", str(domid), "0.5"]
    assert time.monotonic() - started < 5
    assert requests_left(simulator, domid) == []
    with pytest.raises(exception.XapiFailure) as err:
        agent("features", dom_id=domid, reply_timeout=10)
    assert err.value.code == "XHOST_AGENT_REBOOT"
    new = int(client.call("VM.get_domid", vm))
    assert new not in (domid, -1)
    # Nothing of the old domain was re-created by the request.
    assert str(domid) not in simulator.xenstore.directory("/local/domain")
    with pytest.raises(exception.XapiFailure) as err:
        agent("version", dom_id=domid)
    assert err.value.code == "XHOST_AGENT_NO_DOMAIN"

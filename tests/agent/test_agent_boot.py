"""First boot through the guest agent, driven through the compute layer; what
arrived is read back from the simulated guest (``GET /sim/guests/<uuid>``)."""
from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import json
import threading

import pytest

from xhost.backends.agent_xenstore.errors import AgentError
from xhost.compute.api import instance_from_record

NETWORK = "Pool-wide network associated with eth0"
#: What the in-test IPAM of conftest.py gives the first port.
FIXED_IP = {"ip": "192.0.2.10", "netmask": "255.255.255.0", "gateway": "192.0.2.1"}

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly0123456789abcdefghijk test@xhost"
FILES = {"/etc/motd": b"Welcome\n",
         "/var/lib/app/blob.bin": bytes(range(256)) * 4,
         "/etc/app/conf d/x.ini": "ünïcode = yes\n".encode()}


def received(view) -> list[str]:
    return view["agent"].get("received", [])


def files_of(view) -> dict[str, bytes]:
    return {path: base64.b64decode(f["base64"]) for path, f in view["files"].items()}


def test_boot_with_an_agent_configures_key_files_password_and_network(
        make_compute, images, guest_view):
    images.add("agent-img", img_use_agent="true")
    # The configured build is the agent's own version: no update.
    compute = make_compute(text="[agent_xenstore]\nbuild_version = 1.0.0.0\n"
                                "build_url = http://192.0.2.1/agent.tgz\n"
                                f"build_md5 = {'a' * 32}\n")
    server = compute.create_server("web1", "agent-img", "m1.tiny", [NETWORK], key_data=KEY,
                                   admin_password="Corr3ct horse, battery!", files=FILES)
    assert (server.status, server.faults) == ("active", [])
    assert server.admin_password is None  # the user gave it
    view = guest_view(server.details["vm_uuid"])
    assert view["password"] == "Corr3ct horse, battery!"
    assert view["ssh_keys"] == [KEY]
    files = files_of(view)
    assert files.pop("/root/.ssh/authorized_keys") == \
        f"\n# The following ssh key was injected by xhost\n{KEY}\n".encode()
    assert files == FILES
    nic = view["network"]["0"]
    assert nic["source"] == "vm-data/networking"
    assert (nic["ipv4"], nic["netmask"], nic["gateway"], nic["dns"]) == (
        [FIXED_IP["ip"]], FIXED_IP["netmask"], FIXED_IP["gateway"], ["192.0.2.53"])
    assert nic["mac"] == server.ports[0]["mac"]
    assert (view["hostname"], view["hostname_source"]) == ("web1", "vm-data/hostname")
    # Nova's order; features asked once for the three files.
    assert received(view) == ["version", "features", "file_inject", "file_inject",
                              "file_inject", "file_inject", "keyinit", "password",
                              "resetnetwork"]
    # The image properties the agent decision rests on are kept on the VM.
    record = compute.xapi.call("VM.get_record", server.vm_ref)
    assert json.loads(record["other_config"]["xhost_image_properties"])["img_use_agent"] == "true"


def test_a_generated_password_is_given_once_and_stored_nowhere(make_compute, images,
                                                               guest_view, simulator):
    images.add("agent-img", xenapi_use_agent="True")  # the legacy name
    compute = make_compute(text="[agent_xenstore]\npassword_length = 16\n")
    server = compute.create_server("gen", "agent-img", "m1.tiny", [NETWORK])
    password = server.admin_password
    assert password and len(password) == 16 and server.faults == []
    assert guest_view(server.details["vm_uuid"])["password"] == password
    assert compute.show_server("gen").admin_password is None
    record = compute.xapi.call("VM.get_record", server.vm_ref)
    assert password not in json.dumps(record, default=str)
    simulator.flush()
    for path in simulator.state_dir.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path


def test_instances_without_an_agent_are_not_asked(make_compute, images, guest_view,
                                                  simulator):
    images.add("plain")
    images.add("no-agent", img_use_agent="false")
    compute = make_compute()
    simulator.controls.read_counters(reset=True)
    for name, image in (("p1", "plain"), ("p2", "no-agent")):
        server = compute.create_server(name, image, "m1.tiny", [NETWORK], key_data=KEY)
        assert server.faults == [] and server.admin_password is None
        view = guest_view(server.details["vm_uuid"])
        assert view["agent"] == {} and view["password"] is None
    assert simulator.controls.read_counters().get("host.call_plugin", 0) == 0


def test_use_agent_default_decides_when_the_image_does_not(make_compute, images, guest_view,
                                                           caplog):
    images.add("silent-about-it", xhost_sim_agent="yes")
    images.add("unparsable", img_use_agent="maybe", xhost_sim_agent="yes")
    compute = make_compute({"use_agent_default": True})
    for name, image in (("d1", "silent-about-it"), ("d2", "unparsable")):
        server = compute.create_server(name, image, "m1.tiny", [NETWORK],
                                       admin_password="Default-1")
        assert server.faults == []
        assert guest_view(server.details["vm_uuid"])["password"] == "Default-1"
    assert "img_use_agent='maybe' is not a boolean" in caplog.text
    off = make_compute({"use_agent_default": False})
    server = off.create_server("d3", "unparsable", "m1.tiny", [NETWORK],
                               admin_password="Default-1")
    assert guest_view(server.details["vm_uuid"])["password"] is None


@pytest.mark.parametrize("config,spec", [("", "old"), ("sha256", "sha256")])
def test_old_agents_and_the_sha256_digest(make_compute, images, guest_view, config, spec):
    images.add("img", img_use_agent="1", xhost_sim_agent=spec)
    text = f"[agent_xenstore]\npassword_digest = {config}\n" if config else ""
    compute = make_compute(text=text)
    server = compute.create_server("o1", "img", "m1.tiny", [NETWORK], key_data=KEY,
                                   admin_password="S3cret!", files={"/etc/motd": b"hi\n"})
    assert server.faults == []
    view = guest_view(server.details["vm_uuid"])
    assert view["password"] == "S3cret!" and view["ssh_keys"] == [KEY]
    assert files_of(view)["/etc/motd"] == b"hi\n"
    inject = "injectfile" if spec == "old" else "file_inject"
    assert received(view).count(inject) == 2


def test_windows_and_skip_properties(make_compute, images, guest_view):
    images.add("win", img_use_agent="true", os_type="windows", xhost_sim_agent="crlf")
    images.add("skip", img_use_agent="true", os_skip_agent_inject_ssh="true",
               xenapi_skip_agent_inject_files_at_boot="yes")
    compute = make_compute()
    for name, image in (("w1", "win"), ("s1", "skip")):
        server = compute.create_server(name, image, "m1.tiny", [NETWORK], key_data=KEY,
                                       files={"/etc/motd": b"x"}, admin_password="Pa55word")
        assert server.faults == []
        view = guest_view(server.details["vm_uuid"])
        assert view["ssh_keys"] == [] and view["password"] == "Pa55word"
        if name == "w1":
            assert files_of(view) == {"/etc/motd": b"x"}  # Windows: files, no SSH key
        else:
            assert files_of(view) == {}


@pytest.fixture
def build_server(tmp_path):
    """A real HTTP server offering agent builds from a directory."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def publish(name: str, version: str) -> tuple[str, str]:
        data = f"#!xhost-sim-agent {version}\n".encode() + b"\0" * 1000
        (tmp_path / name).write_bytes(data)
        return f"http://127.0.0.1:{server.server_port}/{name}", hashlib.md5(data).hexdigest()
    yield publish
    server.shutdown()


def test_the_agent_is_updated_when_a_newer_build_is_configured(make_compute, images,
                                                               guest_view, build_server):
    images.add("img", img_use_agent="true")
    url, md5 = build_server("agent-2.tgz", "2.0.1.0")
    compute = make_compute(text=f"[agent_xenstore]\nbuild_version = 2.0.1.0\n"
                                f"build_url = {url}\nbuild_md5 = {md5}\n")
    server = compute.create_server("u1", "img", "m1.tiny", [NETWORK], admin_password="x-Y-z-1")
    assert server.faults == []
    view = guest_view(server.details["vm_uuid"])
    assert received(view)[-1] == "agentupdate"
    assert view["agent"]["updates"] == [{"url": url, "md5": md5}]
    assert view["agent"]["version"] == "2.0.1.0"
    # A build whose checksum does not match is refused by the agent.
    instance = instance_from_record(compute.xapi.call("VM.get_record", server.vm_ref))
    with pytest.raises(AgentError, match=r"agentupdate failed: .*MD5 mismatch"):
        compute.plugins.agent_update(compute.context(), instance, server.vm_ref, url, "0" * 32)
    assert guest_view(server.details["vm_uuid"])["agent"]["updates"] == [{"url": url,
                                                                          "md5": md5}]


def test_an_agent_slow_to_come_up_or_rebooting_at_boot_is_waited_for(make_compute, images,
                                                                     guest_view):
    images.add("late", img_use_agent="true", xhost_sim_agent="start-delay=1.5")
    images.add("reboots", img_use_agent="true", xhost_sim_agent="reboot=version")
    compute = make_compute({"agent_timeout": 1, "agent_version_timeout": 20})
    late = compute.create_server("late", "late", "m1.tiny", [NETWORK], admin_password="L8-er!")
    assert late.faults == []
    assert guest_view(late.details["vm_uuid"])["password"] == "L8-er!"
    server = compute.create_server("rb", "reboots", "m1.tiny", [NETWORK],
                                   admin_password="R3boot!")
    assert server.faults == []
    view = guest_view(server.details["vm_uuid"])
    assert view["boots"] == 2 and view["password"] == "R3boot!"
    assert view["agent"]["rebooted_on"] == ["version"]

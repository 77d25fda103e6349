"""``GET /sim/guests[/<vm uuid>]``: what the simulated guests received and applied."""
from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.request

from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER

AUTH = "Basic " + base64.b64encode(f"{SIM_USER}:{SIM_PASSWORD}".encode()).decode()


def get(simulator, path: str, auth: bool = True) -> tuple[int, dict | list]:
    req = urllib.request.Request(simulator.url + path,
                                 headers={"Authorization": AUTH} if auth else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_guest_view(simulator, x, new_vm):
    vm = new_vm("shown")
    uuid = x.VM.get_uuid(vm)
    mac = x.VIF.get_MAC(x.VM.get_VIFs(vm)[0])
    x.VM.add_to_xenstore_data(vm, "vm-data/hostname", "shown-host")
    x.VM.add_to_xenstore_data(vm, f"vm-data/networking/{mac.replace(':', '')}", json.dumps({
        "mac": mac, "ips": [{"ip": "203.0.113.5", "netmask": "255.255.255.0",
                             "gateway": "203.0.113.1", "enabled": "1"}],
        "dns": ["203.0.113.53"]}))
    status, doc = get(simulator, f"/sim/guests/{uuid}")
    assert status == 200 and doc["domain"] is None and doc["vm"]["power_state"] == "Halted"

    x.VM.start(vm, False, False)
    status, doc = get(simulator, f"/sim/guests/{uuid}")
    assert status == 200
    assert doc["vm"] == {"uuid": uuid, "ref": vm, "name_label": "shown", "power_state": "Running"}
    assert doc["domain"]["domid"] == int(x.VM.get_domid(vm)) and doc["domain"]["booted"]
    assert doc["hostname"] == "shown-host" and doc["hostname_source"] == "vm-data/hostname"
    assert doc["network"]["0"] == {"mac": mac, "source": "vm-data/networking",
                                   "ipv4": ["203.0.113.5"], "netmask": "255.255.255.0",
                                   "gateway": "203.0.113.1", "ipv6": [],
                                   "dns": ["203.0.113.53"], "routes": []}
    assert doc["vm_data"]["vm-data/hostname"] == "shown-host"
    assert doc["metrics"]["networks"]["0/ip"] == "203.0.113.5"
    assert doc["metrics"]["netbios_name"] == {"host_name": "shown-host"}
    assert doc["password"] is None and doc["files"] == {} and doc["boots"] == 1

    # What an agent applies shows up too.
    guest = simulator.guests.get(vm)
    guest.set_password("pa55word")
    guest.inject_file("/root/.ssh/authorized_keys", b"ssh-ed25519 AAAA test\n")
    guest.set_agent_info(version="2.0.0", features=["file_inject"])
    _, doc = get(simulator, f"/sim/guests/{uuid}")
    assert doc["password"] == "pa55word"
    data = b"ssh-ed25519 AAAA test\n"
    assert doc["files"]["/root/.ssh/authorized_keys"] == {
        "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "base64": base64.b64encode(data).decode()}
    assert doc["agent"] == {"version": "2.0.0", "features": ["file_inject"]}
    assert [e["event"] for e in doc["events"]][-2:] == ["password set", "file injected"]
    assert "pa55word" not in json.dumps(doc["events"])

    # State lives on the guest's "disk": it survives a shutdown and a reboot.
    x.VM.clean_shutdown(vm)
    _, doc = get(simulator, f"/sim/guests/{uuid}")
    assert doc["domain"] is None and doc["password"] == "pa55word" and doc["boots"] == 1
    x.VM.start(vm, False, False)
    _, doc = get(simulator, f"/sim/guests/{uuid}")
    assert doc["boots"] == 2 and doc["domain"]["domid"] == int(x.VM.get_domid(vm))


def test_no_tools_guest_view(simulator, x, new_vm):
    vm = new_vm("bare")
    x.VM.add_to_other_config(vm, "xhost_sim_tools", "false")
    x.VM.start(vm, False, False)
    _, doc = get(simulator, f"/sim/guests/{x.VM.get_uuid(vm)}")
    assert doc["tools"] is False and doc["domain"]["booted"] is True
    assert doc["network"]["0"]["source"] == "dhcp"
    assert doc["metrics"]["networks"] == {} and doc["metrics"]["os_version"] == {}


def test_listing_and_errors(simulator, x, new_vm):
    vm = new_vm("listed")
    x.VM.start(vm, False, False)
    status, listing = get(simulator, "/sim/guests")
    assert status == 200
    before = [g for g in listing if g["hostname"] != "listed"]  # the seeded compute VM
    assert [g for g in listing if g["hostname"] == "listed"] == [
        {"uuid": x.VM.get_uuid(vm), "domid": int(x.VM.get_domid(vm)), "booted": True,
         "tools": True, "hostname": "listed"}]
    status, doc = get(simulator, "/sim/guests/00000000-0000-0000-0000-000000000000")
    assert status == 404 and "no VM with UUID" in doc["error"]
    status, _ = get(simulator, f"/sim/guests/{x.VM.get_uuid(vm)}", auth=False)
    assert status == 401
    x.VM.hard_shutdown(vm)
    x.VM.destroy(vm)
    assert get(simulator, "/sim/guests")[1] == before


def test_unknown_paths(simulator):
    assert get(simulator, "/sim/guests/a/b")[0] == 404

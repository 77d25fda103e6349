"""The network-namespace harness: real bridges and veth pairs, isolated and cleaned up."""
import os
import signal
import subprocess
import sys

import pytest

from xhost.testing.errors import HarnessError
from xhost.testing.netns import (
    NetNamespace,
    host_link_names,
    list_namespaces,
    reap_stale_namespaces,
)
from xhost.testing.realfixtures import require_root_or_skip

pytestmark = pytest.mark.real


@pytest.fixture(autouse=True)
def _root():
    require_root_or_skip("network namespace tests")



def _ping(ns: NetNamespace, address: str) -> bool:
    """One ICMP-free reachability probe: a TCP connect answered by a RST or accept.

    The image has no ping; a connect to a closed port still needs the
    packets to cross the bridge and back (ECONNREFUSED), while an
    unreachable address times out.
    """
    probe = (
        "import socket,sys\n"
        "s=socket.socket(); s.settimeout(1)\n"
        f"try: s.connect(({address!r}, 9))\n"
        "except ConnectionRefusedError: sys.exit(0)\n"
        "except OSError: sys.exit(1)\n"
        "sys.exit(0)\n"
    )
    return ns.run([sys.executable, "-c", probe], check=False).returncode == 0


@pytest.mark.parametrize("backend", ["pyroute2", "iproute2"])
def test_bridge_with_veth_works_and_is_invisible_from_host(backend):
    with NetNamespace(backend=backend) as dom0, NetNamespace(backend=backend) as guest:
        dom0.add_bridge("xenbr0")
        dom0.add_veth("vif1.0", "vif1.0-p")
        dom0.attach("vif1.0", "xenbr0")

        assert dom0.bridges() == {"xenbr0": ["vif1.0"]}
        assert dom0.ports("xenbr0") == ["vif1.0"]
        vif = dom0.link("vif1.0")
        assert (vif.kind, vif.master, vif.up) == ("veth", "xenbr0", True)
        assert dom0.link("xenbr0").kind == "bridge"
        # An independent view of the same fact, from iproute2's bridge tool.
        bridge_view = dom0.run(["bridge", "link", "show"]).stdout
        assert "vif1.0" in bridge_view and "master xenbr0" in bridge_view

        host = host_link_names()
        assert not {"xenbr0", "vif1.0", "vif1.0-p"} & host

        # Traffic really crosses the bridge: the guest end of the pair lives
        # in a second namespace and reaches an address held by the bridge.
        dom0.run(["ip", "link", "set", "vif1.0-p", "netns", guest.name])
        dom0.run(["ip", "addr", "add", "192.0.2.1/24", "dev", "xenbr0"])
        guest.run(["ip", "addr", "add", "192.0.2.2/24", "dev", "vif1.0-p"])
        guest.set_up("vif1.0-p")
        assert _ping(guest, "192.0.2.1")
        # Without the bridge port the same probe fails: the check can fail.
        dom0.run(["ip", "link", "set", "vif1.0", "nomaster"])
        assert not _ping(guest, "192.0.2.1")


def test_fixture_gives_a_fresh_namespace(netns):
    assert netns.exists and netns.name in list_namespaces()
    assert netns.link_names() == {"lo"}
    assert netns.link("lo").up
    assert netns.bridges() == {}


def test_run_reports_failures_with_stderr(netns):
    assert "lo" in netns.run(["ip", "-br", "link"]).stdout
    with pytest.raises(HarnessError, match="nosuchdev"):
        netns.run(["ip", "link", "set", "nosuchdev", "up"])
    assert netns.run(["false"], check=False).returncode == 1
    with pytest.raises(KeyError, match="no Linux bridge 'xenbr9'"):
        netns.ports("xenbr9")


def test_duplicate_name_is_refused_without_harm(netns):
    with pytest.raises(HarnessError, match="exists already"):
        NetNamespace(netns.name).create()
    assert netns.exists


def test_destroy_removes_namespace_links_host_peers_and_processes():
    ns = NetNamespace().create()
    ns.add_bridge("xenbr0")
    ns.add_veth("vif2.0", "hostpeer-xh")
    # One end in the host namespace: removing the namespace alone would leave it.
    ns.run(["ip", "link", "set", "hostpeer-xh", "netns", "1"])
    assert "hostpeer-xh" in host_link_names()
    sleeper = ns.popen(["sleep", "300"])
    ns.destroy()
    assert ns.name not in list_namespaces()
    assert not os.path.exists(f"/run/netns/{ns.name}")
    assert "hostpeer-xh" not in host_link_names()
    assert sleeper.poll() is not None
    ns.destroy()  # idempotent


def test_namespace_removed_at_interpreter_exit():
    code = (
        "from xhost.testing.netns import NetNamespace\n"
        "ns = NetNamespace().create(); ns.add_bridge('xenbr0'); print(ns.name, flush=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out.startswith("xhtest-")
    assert out not in list_namespaces()


def test_namespace_of_a_killed_process_is_reaped():
    code = (
        "import time\n"
        "from xhost.testing.netns import NetNamespace\n"
        "ns = NetNamespace().create(); print(ns.name, flush=True); time.sleep(300)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    name = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert name in list_namespaces()  # SIGKILL runs no cleanup...
    assert name in reap_stale_namespaces()  # ...the next run removes it
    assert name not in list_namespaces()


def test_namespaces_of_live_owners_are_not_reaped(netns):
    assert netns.name not in reap_stale_namespaces()
    assert netns.exists


def test_not_root_gives_a_clear_message(monkeypatch):
    from xhost.testing.errors import ComponentUnavailable

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    before = list_namespaces()
    with pytest.raises(ComponentUnavailable, match="needs root"):
        NetNamespace().create()
    assert list_namespaces() == before

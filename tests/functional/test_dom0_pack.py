"""``xhost dom0 pack``: what an operator copies to each host."""
from __future__ import annotations

import io
import pathlib
import shutil
import subprocess
import sys
import tarfile

import xhost.dom0
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER
from xhost.xapi.client import XapiClient
from xhost.xapi.dom0 import Dom0

XHOST = shutil.which("xhost") or str(pathlib.Path(sys.executable).parent / "xhost")


def test_pack_holds_every_script_executable_and_installs_on_a_host(simulator):
    data = subprocess.run([XHOST, "dom0", "pack"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == xhost.dom0.scripts()
        assert {"xhost_version.py", "xhost_vhd.py", "xhost_dom0lib.py"} <= set(members)
        for m in members.values():
            assert m.isfile() and m.mode == 0o755 and m.uid == 0
        # what `ssh root@HOST tar -xzf - -C /etc/xapi.d/plugins` does, on the simulated host
        plugins = pathlib.Path(simulator.dom0.plugins_dir)
        for path in plugins.glob("xhost_*.py"):
            path.unlink()
        tar.extractall(plugins, filter="tar")
    with XapiClient(simulator.url, SIM_USER, SIM_PASSWORD) as client:
        host = client.call("host.get_all")[0]
        assert Dom0(client).check_version(host) == Dom0(client).required


def test_list_shows_the_protocol_version():
    out = subprocess.run([XHOST, "dom0", "list", "-f", "value", "-c", "script"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == xhost.dom0.scripts()

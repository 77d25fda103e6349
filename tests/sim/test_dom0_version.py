"""xhost's dom0 client (:class:`xhost.xapi.dom0.Dom0`) against the simulator's real
dom0 scripts, over HTTP with the PyPI XenAPI client underneath."""
from __future__ import annotations

from pathlib import Path

import pytest

from xhost import exception
from xhost.testing.pythons import pyenv_python
from xhost.testing.realfixtures import component_guard
from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER
from xhost.xapi.client import XapiClient
from xhost.xapi.dom0 import Dom0, Dom0Error, shipped_version

SHIPPED = (Path(__file__).parents[2] / "dom0" / "xhost_version.py").read_text()


@pytest.fixture
def client(simulator):
    with XapiClient(simulator.url, SIM_USER, SIM_PASSWORD) as c:
        yield c


@pytest.fixture
def host(client) -> str:
    return client.call("host.get_all")[0]


def with_version(version: str) -> str:
    old = f'PLUGIN_VERSION = "{shipped_version()}"'
    assert old in SHIPPED
    return SHIPPED.replace(old, f'PLUGIN_VERSION = "{version}"')


def test_handshake_with_the_shipped_script(client, host):
    dom0 = Dom0(client)
    assert dom0.check_version(host) == shipped_version() == "1.1"
    answer = dom0.call(host, "xhost_version", "get_version")
    assert answer["protocol"] == "xhost-dom0/1"
    # Checked once per host: the second call ran get_version only once more.
    assert client.counters["host.call_plugin"] == 2


def test_handshake_under_python36(simulator, client, host):
    with component_guard():
        simulator.dom0.interpreter = pyenv_python()
    dom0 = Dom0(client)
    dom0.check_version(host)
    assert dom0.call(host, "xhost_version", "get_version")["python"] == "3.6.15"


def test_older_script_is_refused_with_a_clear_message(simulator, client, host):
    simulator.dom0.install_plugin("xhost_version.py", with_version("0.9"))
    with pytest.raises(exception.Dom0VersionMismatch) as info:
        Dom0(client).check_version(host)
    message = str(info.value)
    assert "the host has 0.9" in message and "needs dom0 plugins 1.1" in message
    assert "/etc/xapi.d/plugins" in message


def test_older_minor_and_other_major_are_refused(simulator, client, host):
    simulator.dom0.install_plugin("xhost_version.py", with_version("2.0"))
    with pytest.raises(exception.Dom0VersionMismatch, match="the host has 2.0"):
        Dom0(client).check_version(host)
    simulator.dom0.install_plugin("xhost_version.py", with_version("1.7"))
    assert Dom0(client).check_version(host) == "1.7"
    with pytest.raises(exception.Dom0VersionMismatch, match="the host has 1.7"):
        Dom0(client, required="1.8").check_version(host)


def test_missing_script_is_refused_with_a_clear_message(simulator, client, host):
    simulator.dom0.remove_plugin("xhost_version.py")
    with pytest.raises(exception.Dom0VersionMismatch) as info:
        Dom0(client).check_version(host)
    assert "none (xhost_version.py is not installed)" in str(info.value)
    # Any other call is refused before it reaches the host.
    with pytest.raises(exception.Dom0VersionMismatch):
        Dom0(client).call(host, "xhost_vhd", "anything")


def test_restart_reinstalls_the_shipped_scripts(simulator, client, host):
    simulator.dom0.install_plugin("xhost_version.py", with_version("0.1"))
    simulator.dom0.install_xhost_scripts()
    assert Dom0(client).check_version(host) == "1.1"


def test_bad_arguments_reach_the_caller_as_a_typed_error(client, host):
    dom0 = Dom0(client)
    with pytest.raises(Dom0Error, match="bad arguments: get_version unknown argument"):
        dom0.call(host, "xhost_version", "get_version", bogus=True)

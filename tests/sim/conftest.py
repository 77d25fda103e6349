"""Helpers for the simulator tests: a tiny JSON-RPC client, failure capture,
VM factories -- all driving the simulator over real HTTP."""
from __future__ import annotations

import itertools
import json
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import XenAPI

from xhost.testing.simfixtures import SIM_PASSWORD, SIM_USER


class JsonRpc:
    """Minimal JSON-RPC client (v1 or v2) as XenCenter / Xen Orchestra talk it."""

    def __init__(self, url: str, version: str = "2.0") -> None:
        self.url = url.rstrip("/") + "/jsonrpc"
        self.version = version
        self.ids = itertools.count(1)
        self.session: str | None = None

    def raw(self, method: str, params: list[Any]) -> tuple[dict[str, Any], str]:
        doc: dict[str, Any] = {"method": method, "params": params, "id": next(self.ids)}
        if self.version == "2.0":
            doc["jsonrpc"] = "2.0"
        req = urllib.request.Request(self.url, data=json.dumps(doc).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read()), resp.headers.get("Content-Type", "")

    def call(self, method: str, *params: Any) -> Any:
        reply, _ = self.raw(method, list(params))
        if self.version == "2.0":
            if "error" in reply:
                raise XenAPI.Failure([reply["error"]["message"], *reply["error"]["data"]])
            return reply["result"]
        if reply["error"] is not None:
            raise XenAPI.Failure(reply["error"])
        return reply["result"]

    def login(self) -> str:
        self.session = self.call("session.login_with_password", SIM_USER, SIM_PASSWORD,
                                 "1.0", "jsonrpc-test")
        return self.session

    def __call__(self, method: str, *params: Any) -> Any:
        return self.call(method, self.session, *params)


@pytest.fixture
def jsonrpc(simulator) -> Callable[..., JsonRpc]:
    def make(version: str = "2.0", login: bool = True) -> JsonRpc:
        client = JsonRpc(simulator.url, version)
        if login:
            client.login()
        return client
    return make


@pytest.fixture
def x(xapi_session):
    """``session.xenapi`` of the logged-in real client."""
    return xapi_session.xenapi


def failure(fn: Callable[..., Any], *args: Any) -> list[str]:
    """The ErrorDescription of a call that must fail."""
    with pytest.raises(XenAPI.Failure) as info:
        fn(*args)
    return info.value.details


@pytest.fixture
def fail():
    return failure


@pytest.fixture
def new_vm(x):
    """Factory: an installed (provisioned, non-template) VM with one NIC."""
    def make(name: str = "vm", template: str = "Debian Bookworm 12", nic: bool = True) -> str:
        tpl = x.VM.get_by_name_label(template)[0]
        vm = x.VM.clone(tpl, name)
        x.VM.provision(vm)
        x.VM.set_is_a_template(vm, False)
        if nic:
            net = x.network.get_by_name_label("Pool-wide network associated with eth0")[0]
            x.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                          "other_config": {}, "qos_algorithm_type": "",
                          "qos_algorithm_params": {}})
        return vm
    return make

"""``xhost server set-password / inject-file / reset-network`` and the agent
options of ``server create``, run in process on a Compute with the in-test
plugins (the built-in storage and network plugins are not needed)."""
from __future__ import annotations

import getpass
import io
import json
import sys

import pytest

from xhost.cli.main import XhostApp

NETWORK = "Pool-wide network associated with eth0"


@pytest.fixture
def xhost(make_compute):
    """``xhost(*argv, conf={...})`` -> (exit status, stdout, stderr)."""

    def run(*argv: str, xenserver: dict | None = None):
        compute = make_compute(xenserver)
        out, err = io.StringIO(), io.StringIO()
        app = XhostApp(stdin=io.StringIO(), stdout=out, stderr=err)
        app._conf = compute.conf
        app._compute = compute
        try:
            status = app.run(list(argv))
        except SystemExit as exc:  # argparse refusing the command line
            status = exc.code
        return status, out.getvalue(), err.getvalue()
    return run


@pytest.fixture
def server(make_compute, images):
    images.add("agent-img", img_use_agent="true")
    images.add("plain")
    compute = make_compute()
    compute.create_server("plain", "plain", "m1.tiny", [NETWORK])
    return compute.create_server("vm1", "agent-img", "m1.tiny", [NETWORK],
                                 admin_password="First-Pass-1")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def guest(simulator, server):
    return simulator.guests.get(server.vm_ref).state


def test_set_password_from_the_command_line_and_from_a_prompt(xhost, server, simulator,
                                                              monkeypatch):
    status, out, _err = xhost("server", "set-password", "vm1", "--password", "Given-Pass-2")
    assert (status, out) == (0, "password of vm1 set\n")
    assert guest(simulator, server).password == "Given-Pass-2"

    answers = iter(["Typed-Pass-3", "Typed-Pass-3", "Typed-Pass-4", "typo"])
    prompts = []
    monkeypatch.setattr(getpass, "getpass", lambda prompt, stream=None: (
        prompts.append(prompt), next(answers))[1])
    monkeypatch.setattr(sys, "stdin", Terminal())
    status, out, err = xhost("server", "set-password", "vm1")
    assert status == 0 and prompts == ["New password: ", "Repeat the password: "]
    assert guest(simulator, server).password == "Typed-Pass-3"
    assert "Typed-Pass" not in out + err
    status, _out, err = xhost("server", "set-password", "vm1")
    assert status == 1 and "the passwords do not match; nothing was changed" in err
    assert guest(simulator, server).password == "Typed-Pass-3"

    monkeypatch.setattr(sys, "stdin", io.StringIO("piped\n"))
    status, _out, err = xhost("server", "set-password", "vm1")
    assert status == 1 and "standard input is not a terminal" in err and "--password" in err


def test_inject_file_and_reset_network(xhost, server, simulator, tmp_path):
    local = tmp_path / "motd"
    local.write_bytes(b"Hello from the CLI\n\x00\xff")
    status, out, _err = xhost("server", "inject-file", "vm1", "--path", "/etc/motd",
                              "--file", str(local))
    assert status == 0 and out == f"{local} written to vm1:/etc/motd\n"
    assert guest(simulator, server).files["/etc/motd"] == b"Hello from the CLI\n\x00\xff"
    status, _out, err = xhost("server", "inject-file", "vm1", "--path", "/etc/x",
                              "--file", str(tmp_path / "missing"))
    assert status == 1 and "missing: No such file or directory" in err
    before = len(guest(simulator, server).agent["received"])
    status, out, _err = xhost("server", "reset-network", "vm1")
    assert (status, out) == (0, "network of vm1 reset\n")
    assert guest(simulator, server).agent["received"][before:] == ["resetnetwork"]


def test_servers_without_an_agent_are_refused_clearly(xhost, server):
    for argv in (("server", "set-password", "plain", "--password", "x-Y-1"),
                 ("server", "inject-file", "plain", "--path", "/etc/motd", "--file", __file__),
                 ("server", "reset-network", "plain")):
        status, _out, err = xhost(*argv)
        assert status == 1
        assert "of server 'plain': it has no guest agent: its image (plain) has " \
               "img_use_agent=unset" in err
        status, _out, err = xhost(*argv, xenserver={"disable_agent": True})
        assert status == 1 and "xhost talks to no guest agent" in err


def test_server_create_password_files_and_the_generated_password(xhost, images, simulator,
                                                                 tmp_path, capsys):
    images.add("agent-img", img_use_agent="true")
    motd = tmp_path / "motd"
    motd.write_text("hi\n")
    status, out, err = xhost("server", "create", "gen", "--image", "agent-img", "--flavor",
                             "m1.tiny", "--network", NETWORK, "--file", f"/etc/motd={motd}",
                             "-f", "json")
    assert status == 0, err
    shown = json.loads(out)
    state = simulator.guests.get(shown["vm_uuid"]).state
    assert shown["admin_password"] == state.password and len(state.password) == 12
    assert state.files["/etc/motd"] == b"hi\n"
    status, out, err = xhost("server", "create", "given", "--image", "agent-img", "--flavor",
                             "m1.tiny", "--password", "Chosen-Pass-9", "-f", "json")
    assert status == 0, err
    shown = json.loads(out)
    assert "admin_password" not in shown
    assert simulator.guests.get(shown["vm_uuid"]).state.password == "Chosen-Pass-9"
    status, out, err = xhost("server", "show", "gen", "-f", "json")
    assert status == 0 and "admin_password" not in json.loads(out)
    status, _out, err = xhost("server", "create", "bad", "--image", "agent-img", "--flavor",
                              "m1.tiny", "--file", "etc/motd")
    # argparse reports on the process's stderr
    assert status == 2 and "--file takes GUEST_PATH=LOCAL_FILE" in capsys.readouterr().err

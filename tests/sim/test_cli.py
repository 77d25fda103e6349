"""``xhost sim`` commands, run as a user would: real subprocesses."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import XenAPI

PW = "cli-secret"


def xhost(*args, env=None, check=True):
    env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-P", "-m", "xhost.cli.main", *args], capture_output=True,
                          text=True, env=env, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"xhost {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def served(tmp_path):
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "xhost.cli.main", "sim", "serve", "--state-dir", str(state),
         "--password", PW, "--auth-delay", "0", "--port", "0",
         "--user", "viewer:v:read-only"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    yield proc, url, state
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_serve_prints_url_serves_and_stops_cleanly(served):
    proc, url, state = served
    assert url.startswith("http://127.0.0.1:")
    session = XenAPI.Session(url)
    session.xenapi.login_with_password("root", PW)
    tpl = session.xenapi.VM.get_by_name_label("Debian Bookworm 12")[0]
    session.xenapi.VM.clone(tpl, "made over the cli")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 0
    assert "Ctrl-C stops it" in proc.stderr.read()
    assert "made over the cli" in (state / "db.json").read_text()


def test_control_commands(served):
    proc, url, _state = served
    env = {"XHOST_SIM_URL": url, "XHOST_SIM_PASSWORD": PW}
    session = XenAPI.Session(url)
    session.xenapi.login_with_password("root", PW)
    session.xenapi.pool.get_all()
    status = json.loads(xhost("sim", "status", "-f", "json", env=env).stdout)
    assert status["role"] == "master" and status["url"] == url
    counters = json.loads(xhost("sim", "counters", "-f", "json", "--reset", env=env).stdout)
    assert {"Method": "pool.get_all", "Calls": 1} in counters
    xhost("sim", "fault", "add", "pool.get_all", "SR_BACKEND_FAILURE_47", "", "SR gone", "",
          "--times", "1", env=env)
    rules = json.loads(xhost("sim", "fault", "list", "-f", "json", env=env).stdout)
    assert rules[0]["method"] == "pool.get_all"
    with pytest.raises(XenAPI.Failure) as info:
        session.xenapi.pool.get_all()
    assert info.value.details == ["SR_BACKEND_FAILURE_47", "", "SR gone", ""]
    assert "removed 0 rule(s)" in xhost("sim", "fault", "clear", env=env).stdout
    xhost("sim", "role", "--member-of", "192.0.2.7", env=env)
    with pytest.raises(XenAPI.Failure) as info:
        session.xenapi.pool.get_all()
    assert info.value.details == ["HOST_IS_SLAVE", "192.0.2.7"]
    xhost("sim", "role", "--master", env=env)
    assert "expired 1 session(s)" in xhost("sim", "expire-sessions", env=env).stdout
    session.xenapi.pool.get_all()
    latency = json.loads(xhost("sim", "latency", "--speed", "0.5", "-f", "json",
                               env=env).stdout)
    assert latency["speed"] == 0.5
    xhost("sim", "drop-connections", "--count", "1", env=env)
    assert "state written" in xhost("sim", "flush", env=env).stdout
    viewer = XenAPI.Session(url)
    viewer.xenapi.login_with_password("viewer", "v")
    assert viewer.xenapi.VM.get_all()
    with pytest.raises(XenAPI.Failure) as info:
        viewer.xenapi.VM.set_name_label(viewer.xenapi.VM.get_all()[0], "x")
    assert info.value.details[0] == "RBAC_PERMISSION_DENIED"
    bad = xhost("sim", "status", env={"XHOST_SIM_URL": url, "XHOST_SIM_PASSWORD": "no"},
                check=False)
    assert bad.returncode != 0 and "401" in bad.stderr


def test_serve_refuses_without_password_and_on_a_busy_state_dir(served, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XHOST_SIM_PASSWORD"}
    proc = subprocess.run([sys.executable, "-P", "-m", "xhost.cli.main", "sim", "serve",
                           "--state-dir", str(tmp_path / "x")], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode != 0 and "--password" in proc.stderr
    _proc, _url, state = served
    busy = xhost("sim", "serve", "--state-dir", str(state), "--password", PW, check=False)
    assert busy.returncode != 0 and "in use by a running simulator" in busy.stderr


def test_serve_tls(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "xhost.cli.main", "sim", "serve", "--state-dir",
         str(tmp_path / "tls"), "--password", PW, "--tls", "--auth-delay", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("https://127.0.0.1:")
        session = XenAPI.Session(url, ignore_ssl=True)
        session.xenapi.login_with_password("root", PW)
        assert session.xenapi.host.get_all()
        strict = XenAPI.Session(url)
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            strict.xenapi.login_with_password("root", PW)
        assert (tmp_path / "tls" / "tls" / "xapi-ssl.pem").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0

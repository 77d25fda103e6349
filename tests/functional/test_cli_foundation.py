"""The ``xhost`` command as a user runs it (a real subprocess)."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
XHOST = shutil.which("xhost") or str(pathlib.Path(sys.executable).parent / "xhost")
example_installed = pytest.mark.skipif(
    "xhost-example-plugin" not in subprocess.run(
        [sys.executable, "-m", "pip", "list", "--format=freeze"], capture_output=True,
        text=True).stdout, reason="tests/fixtures/xhost-example-plugin is not installed")


def run(*args, env=None, check=False):
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([XHOST, *args], capture_output=True, text=True, env=full_env,
                          timeout=120)
    if check and proc.returncode:
        raise AssertionError(proc.stderr)
    return proc


def test_plugins_list_json_has_the_documented_columns():
    proc = run("plugins", "list", "-f", "json", check=True)
    rows = json.loads(proc.stdout)
    for row in rows:
        assert set(row) == {"role", "name", "module", "distribution"}


@example_installed
def test_third_party_plugins_are_listed():
    rows = json.loads(run("plugins", "list", "-f", "json", check=True).stdout)
    mine = {(r["role"], r["name"]) for r in rows if r["distribution"].startswith("xhost-example")}
    assert mine == {("image_handler", "example_raw"), ("extension", "example_audit")}


def test_config_check_exit_status_and_messages(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("[xenserver]\nagent_timeout = -5\n")
    proc = run("--config-file", str(bad), "config", "check", "-f", "json")
    assert proc.returncode != 0
    problems = json.loads(proc.stdout)
    (problem,) = [p for p in problems if p["option"] == "agent_timeout"]
    assert problem["group"] == "xenserver" and problem["file"] == str(bad)
    assert problem["level"] == "error"


def test_config_check_missing_file_fails(tmp_path):
    proc = run("--config-file", str(tmp_path / "nope.conf"), "config", "check")
    assert proc.returncode != 0 and "nope.conf" in proc.stdout + proc.stderr


def test_config_sample_lists_every_nova_option():
    from xhost.conf import xenserver

    sample = run("config", "sample", check=True).stdout
    for opt in xenserver.NOVA_OPTS:
        assert f"#{opt.name} = " in sample or f"#{opt.name} =\n" in sample, opt.name


def test_oslo_config_generator_namespace_xhost():
    from xhost.conf import xenserver

    gen = shutil.which("oslo-config-generator") or str(
        pathlib.Path(sys.executable).parent / "oslo-config-generator")
    out = subprocess.run([gen, "--namespace", "xhost"], capture_output=True, text=True,
                         check=True).stdout
    names = {line[1:].split(" =")[0] for line in out.splitlines() if line.startswith("#") and " =" in line}
    assert {o.name for o in xenserver.NOVA_OPTS} <= names
    assert len({o.name for o in xenserver.NOVA_OPTS}) == 36


def test_committed_sample_config_is_current(tmp_path):
    """etc/xhost/xhost.conf.sample must be regenerated (tox -e genconfig)
    whenever an option changes."""
    gen = shutil.which("oslo-config-generator") or str(
        pathlib.Path(sys.executable).parent / "oslo-config-generator")
    out = tmp_path / "sample"
    subprocess.run([gen, "--config-file", str(ROOT / "etc/xhost/xhost-config-generator.conf"),
                    "--output-file", str(out)], check=True, cwd=ROOT,
                   env={**os.environ, "XHOST_PLUGINS_FROM": "xhost"})
    committed = (ROOT / "etc/xhost/xhost.conf.sample").read_text()
    assert out.read_text() == committed, "stale sample: run `tox -e genconfig`"


@example_installed
def test_third_party_handler_selected_by_name_and_extension_gets_hooks(tmp_path, make_conf):
    from xhost import plugins
    from xhost.context import Context
    from xhost.objects import Flavor, Instance

    audit = tmp_path / "audit.jsonl"
    conf = make_conf(f"""
        [xenserver]
        image_handler = example_raw
        enabled_extensions = example_audit
        [example_audit]
        path = {audit}
    """)
    host = plugins.load(conf, roles=["image_handler"])
    assert type(host.plugin("image_handler")).__name__ == "ExampleRawHandler"
    caps = host.image_capabilities(ctx=None)
    assert caps.disk_formats == frozenset({"raw"})
    ctx = Context(conf=conf, plugins=host)
    inst = Instance(uuid="u-1", name="vm", flavor=Flavor("m1.tiny", 1, 512, 1))
    host.instance_spawned(ctx, inst)
    host.instance_state_changed(ctx, inst, "active", "shutoff")
    host.instance_destroyed(ctx, inst)
    events = [json.loads(line)["event"] for line in audit.read_text().splitlines()]
    assert events == ["plugins_loaded", "instance_spawned", "instance_state_changed",
                      "instance_destroyed"]


@example_installed
def test_third_party_command_is_loaded(tmp_path):
    conf = tmp_path / "x.conf"
    conf.write_text(f"[example_audit]\npath = {tmp_path / 'none.jsonl'}\n")
    proc = run("--config-file", str(conf), "example", "audit", "-f", "json", check=True)
    assert json.loads(proc.stdout) == []

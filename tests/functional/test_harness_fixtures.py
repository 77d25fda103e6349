"""The fixtures skip only when a component cannot run, and XHOST_REQUIRE_REAL=1 makes that fail."""
import os
import subprocess
import sys
import textwrap

INNER_TESTS = textwrap.dedent("""
    def test_netns(netns):
        assert netns.exists

    def test_ovs(ovs):
        assert ovs.pids

    def test_glance(glance):
        assert glance.endpoint
""")


def _run_inner(tmp_path, conftest, env_changes):
    (tmp_path / "conftest.py").write_text(textwrap.dedent(conftest))
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    env = {k: v for k, v in os.environ.items() if k != "XHOST_REQUIRE_REAL"}
    env.update({"COLUMNS": "1000", **env_changes})
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-rsE", "-p", "no:cacheprovider",
         "--import-mode=importlib", "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
        check=False)
    return proc.returncode, proc.stdout + proc.stderr


NOT_ROOT = """
    import os
    os.geteuid = lambda: 1000   # stands for an unprivileged user
    pytest_plugins = ["xhost.testing.realfixtures"]
"""
NO_GLANCE = {"XHOST_GLANCE_VENV": "/nonexistent/glance-venv", "XHOST_GLANCE_NO_INSTALL": "1"}


def test_not_root_skips_with_reason(tmp_path):
    rc, out = _run_inner(tmp_path, NOT_ROOT, NO_GLANCE)
    assert rc == 0, out
    assert "3 skipped" in out
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 3
    assert sum("needs root" in line for line in skips) == 2
    assert "python -m xhost.testing.glance --install" in out
    assert "xhost real components: optional" in out


def test_require_real_turns_skips_into_failures(tmp_path):
    rc, out = _run_inner(tmp_path, NOT_ROOT, {**NO_GLANCE, "XHOST_REQUIRE_REAL": "1"})
    assert rc == 1, out
    assert "skipped" not in out
    assert "3 errors" in out
    errors = [line for line in out.splitlines() if line.startswith("ERROR test_inner.py::")]
    assert len(errors) == 3
    assert all("XHOST_REQUIRE_REAL=1: not skipping" in line for line in errors)
    assert "xhost real components: required" in out


def test_missing_binaries_name_the_package(tmp_path):
    # Root, but no Open vSwitch or iproute2 on PATH.
    rc, out = _run_inner(tmp_path, 'pytest_plugins = ["xhost.testing.realfixtures"]\n',
                         {**NO_GLANCE, "PATH": str(tmp_path / "empty-bin")})
    assert rc == 0, out
    assert "apt-get install -y iproute2 openvswitch-common openvswitch-switch" in out
    assert "ovs-vswitchd" in out

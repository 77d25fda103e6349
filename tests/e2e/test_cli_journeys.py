"""The operator's journey through the ``xhost`` command, all plugins built in."""
from __future__ import annotations

import pytest

from xhost import diskimage

MiB = 1024 * 1024
NET = "Pool-wide network associated with eth0"
COLUMNS = {"id", "name", "status", "power_state", "image", "flavor", "addresses"}


@pytest.fixture
def image(cli):
    path = diskimage.build_vhd_tarball(cli.workdir / "img.tgz", 32 * MiB,
                                       {"etc/hostname": b"e2e\n"})
    return cli.json("image", "create", "e2e-image", "--file", str(path), "--disk-format", "vhd",
                    "--container-format", "ovf", "--property", "os_type=linux")


def test_boot_list_show_delete(cli, image):
    created = cli.json("server", "create", "web1", "--image", "e2e-image", "--flavor", "m1.tiny",
                       "--network", NET, "--wait")
    assert created["status"] == "active" and created["power_state"] == "Running"
    assert created["image"] == "e2e-image" and created["flavor"] == "m1.tiny"
    rows = cli.json("server", "list")
    assert [set(r) for r in rows] == [COLUMNS]
    assert rows[0]["name"] == "web1" and rows[0]["status"] == "active"
    shown = cli.json("server", "show", "web1")
    assert shown["id"] == created["id"]
    assert [d["kind"] for d in shown["disks"]] == ["root"]
    assert shown["disks"][0]["size"] == 1024 * MiB  # grown to m1.tiny's 1 GB
    assert [p["network"] for p in shown["ports"]] == [NET]
    cli.run("server", "delete", "web1", "--wait")
    assert cli.json("server", "list") == []
    # deleting a missing server is not an error
    proc = cli.run("server", "delete", "web1")
    assert "nothing to delete" in proc.stderr


def test_custom_sizes_ephemeral_swap_and_config_drive(cli, image, tmp_path):
    (tmp_path / "ud").write_text("#cloud-config\n")
    (tmp_path / "key.pub").write_text("ssh-ed25519 AAAAC3Nza test@e2e\n")
    cli.json("server", "create", "big", "--image", image["id"], "--vcpus", "2", "--ram", "1024",
             "--disk", "2", "--ephemeral", "1", "--swap", "64", "--config-drive",
             "--user-data", str(tmp_path / "ud"), "--key-file", str(tmp_path / "key.pub"),
             "--property", "role=db")
    shown = cli.json("server", "show", "big")
    kinds = {d["userdevice"]: d["kind"] for d in shown["disks"]}
    assert kinds == {"0": "root", "2": "swap", "3": "config_drive", "4": "ephemeral"}
    assert (shown["vcpus"], shown["memory_mb"]) == (2, 1024)
    cli.run("server", "delete", "big")


def test_flavors(cli):
    names = [f["name"] for f in cli.json("flavor", "list")]
    assert names[:5] == ["m1.tiny", "m1.small", "m1.medium", "m1.large", "m1.xlarge"]


def test_errors_are_clear_and_leave_nothing(cli, image):
    proc = cli.run("server", "create", "x", "--image", "no-such-image", "--flavor", "m1.tiny",
                   check=False)
    assert proc.returncode != 0 and "no image 'no-such-image'" in proc.stderr
    proc = cli.run("server", "create", "x", "--image", "e2e-image", "--flavor", "m9.huge",
                   check=False)
    assert proc.returncode != 0 and "no flavor 'm9.huge'" in proc.stderr
    proc = cli.run("server", "create", "x", "--image", "e2e-image", "--flavor", "m1.tiny",
                   "--network", "no-such-net", check=False)
    assert proc.returncode != 0 and "plugging network interfaces failed" in proc.stderr
    assert cli.json("server", "list") == []


def test_embedded_simulator_is_announced_once(cli):
    proc = cli.run("server", "list")
    assert proc.stderr.count("using the embedded simulated XCP-ng host") == 1


def test_demo_main_job(tmp_path):
    """The README's main job: zero configuration, well under a minute."""
    import pathlib
    import shutil
    import subprocess
    import sys
    import time

    xhost = shutil.which("xhost") or str(pathlib.Path(sys.executable).parent / "xhost")
    started = time.monotonic()
    proc = subprocess.run([xhost, "demo"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    for step in ("[1/6]", "[4/6]", "[5/6]", "[6/6]", "nothing left"):
        assert step in proc.stdout
    assert "| demo-1 | active |" in proc.stdout
    assert elapsed < 60

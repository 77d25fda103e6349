"""End-to-end: the xhost command and the compute API with every built-in
plugin, on the embedded simulated host."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

XHOST = shutil.which("xhost") or str(pathlib.Path(sys.executable).parent / "xhost")


class Cli:
    def __init__(self, workdir: pathlib.Path, extra: str = "") -> None:
        self.workdir = workdir
        self.conf = workdir / "xhost.conf"
        self.conf.write_text(
            f"[simulator]\nstate_dir = {workdir}/sim\n"
            f"[compute]\nstate_dir = {workdir}/state\n"
            f"[image_local]\npath = {workdir}/images\n{extra}")

    def run(self, *args: str, check: bool = True, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([XHOST, "--config-file", str(self.conf), *args],
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})}, cwd=self.workdir)
        if check and proc.returncode:
            raise AssertionError(f"xhost {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str):
        return json.loads(self.run(*args, "-f", "json").stdout)


@pytest.fixture
def cli(tmp_path):
    return Cli(tmp_path)

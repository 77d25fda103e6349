"""Locating the old Python interpreters dom0 code must run on.

XCP-ng 8.x's dom0 has Python 3.6; tests run dom0 scripts under it through
the simulator (``Simulator(dom0_python=...)`` or ``sim.dom0.interpreter``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from xhost.testing.errors import ComponentUnavailable

#: The dom0 Python of XCP-ng 8.2/8.3, as installed by pyenv on developer machines and CI.
DOM0_PYTHON_VERSION = "3.6.15"


def pyenv_python(version: str = DOM0_PYTHON_VERSION) -> str:
    """Path of pyenv's Python ``version`` (``$(pyenv root)/versions/<v>/bin/python<X.Y>``).

    :raises ComponentUnavailable: it is not installed (the message says how to install it).
    """
    root = os.environ.get("PYENV_ROOT")
    if not root and shutil.which("pyenv"):
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True,
                              check=False).stdout.strip()
    short = ".".join(version.split(".")[:2])
    path = Path(root or Path.home() / ".pyenv", "versions", version, "bin", f"python{short}")
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ComponentUnavailable(f"Python {version} (dom0's Python) is not at {path}; install "
                                   f"it with `pyenv install {version}`")
    return str(path)

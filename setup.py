"""Package list for the remapped layout (the rest of the metadata is in setup.cfg).

``backends/`` and ``handlers/`` install as ``xhost.backends`` and
``xhost.handlers``; setuptools' ``find:`` cannot discover remapped
subpackages, so the list is computed here instead of kept by hand.
``dom0/`` holds the flat dom0 scripts; it installs as ``xhost.dom0``.
"""
from setuptools import find_packages, setup

REMAPPED = {"xhost.backends": "backends", "xhost.handlers": "handlers"}

packages = find_packages(include=["xhost", "xhost.*"])
for name, where in REMAPPED.items():
    packages.append(name)
    packages.extend(f"{name}.{sub}" for sub in find_packages(where=where))
packages.append("xhost.dom0")

setup(
    packages=sorted(packages),
    package_dir={"xhost": "xhost", "xhost.dom0": "dom0", **REMAPPED},
)

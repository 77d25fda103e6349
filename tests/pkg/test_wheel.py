"""What ``pip install .`` really installs: build the wheel and look inside, so
that a forgotten subpackage fails here instead of hiding behind an editable
install."""
from __future__ import annotations

import configparser
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                    str(out), str(ROOT)], check=True, capture_output=True)
    (path,) = out.glob("xhost-*.whl")
    return zipfile.ZipFile(path)


def dist_info(wheel, name):
    (member,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(member).decode()


def test_only_one_top_level_name(wheel):
    assert dist_info(wheel, "top_level.txt").split() == ["xhost"]
    roots = {n.split("/")[0] for n in wheel.namelist() if ".dist-info/" not in n}
    assert roots == {"xhost"}


def _packages_under(directory: pathlib.Path, prefix: str) -> set[str]:
    found = set()
    for init in directory.rglob("__init__.py"):
        rel = init.parent.relative_to(directory)
        found.add("/".join([prefix, *rel.parts]))
    return found


@pytest.mark.parametrize("directory,prefix", [("xhost", "xhost"), ("backends", "xhost/backends"),
                                              ("handlers", "xhost/handlers")])
def test_every_package_and_module_is_shipped(wheel, directory, prefix):
    names = set(wheel.namelist())
    source = ROOT / directory
    for package in _packages_under(source, prefix):
        assert f"{package}/__init__.py" in names, f"package {package} missing from the wheel"
    for module in source.rglob("*.py"):
        rel = module.relative_to(source)
        assert f"{prefix}/{rel.as_posix()}" in names, f"{module} missing from the wheel"


def test_dom0_scripts_are_package_data(wheel):
    names = set(wheel.namelist())
    scripts = sorted(p.name for p in (ROOT / "dom0").glob("xhost_*.py"))
    assert "xhost_version.py" in scripts
    for script in scripts:
        assert f"xhost/dom0/{script}" in names


def test_data_files_are_shipped(wheel):
    names = set(wheel.namelist())
    for data in (ROOT / "xhost").rglob("data/*.json"):
        assert data.relative_to(ROOT).as_posix() in names


def test_declared_entry_points_are_in_the_wheel_and_resolve_to_shipped_modules(wheel):
    declared = configparser.ConfigParser(delimiters=("=",))
    declared.optionxform = str
    declared.read_string(dist_info(wheel, "entry_points.txt"))
    names = set(wheel.namelist())
    assert declared.has_option("oslo.config.opts", "xhost")
    assert declared.has_option("console_scripts", "xhost")
    for group in declared.sections():
        for name, target in declared.items(group):
            module = target.split(":")[0].strip()
            path = module.replace(".", "/")
            assert f"{path}.py" in names or f"{path}/__init__.py" in names, \
                f"entry point {group}:{name} -> {target} is not in the wheel"

"""The xenstore-* commands of the simulated dom0, and the XenStore behind them.

The commands are run as a dom0 process would run them (``sim.dom0.run``) and
from a dom0 plugin script; their output, messages and exit codes are those of
Xen's ``xenstore_client``.
"""
from __future__ import annotations

import json
import textwrap
import threading
import time

import pytest

from xhost.sim.xenstore import DomainXenStore, XenStoreError
from xhost.testing.pythons import pyenv_python
from xhost.testing.realfixtures import component_guard


@pytest.fixture
def xs(simulator):
    def run(*argv: str):
        return simulator.dom0.run(list(argv))
    return run


def test_write_read_and_prefix(xs):
    assert xs("xenstore-write", "/test/a", "1", "/test/b/c", "two words").returncode == 0
    r = xs("xenstore-read", "/test/a", "/test/b/c")
    assert (r.returncode, r.stdout, r.stderr) == (0, "1\ntwo words\n", "")
    assert xs("xenstore-read", "-p", "/test/a").stdout == "/test/a: 1\n"
    # The intermediate node exists with an empty value.
    assert xs("xenstore-read", "/test/b").stdout == "\n"


def test_read_failure_prints_what_was_read_before(xs):
    xs("xenstore-write", "/test/a", "1")
    r = xs("xenstore-read", "/test/a", "/test/missing", "/test/a")
    assert r.returncode == 1
    assert r.stdout == "1\n"
    assert r.stderr == "xenstore-read: couldn't read path /test/missing\n"


def test_values_are_escaped_and_unescaped_like_xenstore(xs, simulator):
    assert xs("xenstore-write", "/test/v", r"tab\there\nnl\\bs\x1bESC\001").returncode == 0
    assert simulator.xenstore.read_bytes("/test/v") == b"tab\there\nnl\\bs\x1bESC\x01"
    assert xs("xenstore-read", "/test/v").stdout == r"tab\there\nnl\\bs\x1bESC\001" + "\n"
    simulator.xenstore.write("/test/utf8", "d\u00e9j\u00e0")
    assert xs("xenstore-read", "/test/utf8").stdout == r"d\xc3\xa9j\xc3\xa0" + "\n"


def test_write_is_one_transaction(xs, simulator):
    r = xs("xenstore-write", "/test/ok", "1", "/test/bad//path", "2")
    assert r.returncode == 1
    assert r.stderr == "xenstore-write: could not write path /test/bad//path\n"
    assert not simulator.xenstore.exists("/test/ok")
    r = xs("xenstore-write", "/test/x" * 300, "y" * 4000)
    assert r.returncode == 1 and "could not write path" in r.stderr


def test_usage_errors(xs):
    r = xs("xenstore-write", "/test/a")
    assert r.returncode == 1
    assert r.stderr.startswith("xenstore-write: Usage: ")
    assert r.stderr.endswith(" [-h] [-s] key value [...]\n")
    r = xs("xenstore-read")
    assert r.returncode == 1 and r.stderr.endswith("[-h] [-p] [-s] key [...]\n")
    r = xs("xenstore-rm", "-p", "/x")
    assert r.returncode == 1 and "Usage:" in r.stderr
    r = xs("xenstore-read", "-z", "-s", "/local/domain/0/name")
    assert r.returncode == 0 and r.stdout == "Domain-0\n"
    assert r.stderr == "xenstore-read: invalid option -- 'z'\n"


def test_exists(xs):
    xs("xenstore-write", "/test/a", "")
    assert xs("xenstore-exists", "/test/a").returncode == 0
    assert xs("xenstore-exists", "/test").returncode == 0
    r = xs("xenstore-exists", "/test/a", "/test/nope")
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "")


def test_rm(xs, simulator):
    xs("xenstore-write", "/test/a/b/c", "1", "/test/a/d", "2")
    assert xs("xenstore-rm", "/test/a/b").returncode == 0
    assert simulator.xenstore.directory("/test/a") == ["d"]
    # A missing node is fine when its parent exists, an error otherwise.
    assert xs("xenstore-rm", "/test/a/zzz").returncode == 0
    r = xs("xenstore-rm", "/test/nope/zzz")
    assert (r.returncode, r.stderr) == (1, "xenstore-rm: could not remove path /test/nope/zzz\n")
    assert xs("xenstore-rm", "/").returncode == 1


def test_rm_tidy_removes_emptied_parents(xs, simulator):
    xs("xenstore-write", "/tidy/keep", "v", "/tidy/a/b/c", "1")
    assert xs("xenstore-rm", "-t", "/tidy/a/b/c").returncode == 0
    assert simulator.xenstore.directory("/tidy") == ["keep"]


def test_list(xs):
    xs("xenstore-write", "/test/b", "1", "/test/a", "2")
    assert xs("xenstore-list", "/test").stdout == "b\na\n"
    assert xs("xenstore-list", "-p", "/test").stdout == "/test/b\n/test/a\n"
    r = xs("xenstore-list", "/nope")
    assert (r.returncode, r.stderr) == (1, "xenstore-list: could not list path /nope\n")


def test_ls_format(xs):
    xs("xenstore-write", "/t/a", "1", "/t/d/e", "x", "/t/long", "v" * 100)
    r = xs("xenstore-ls", "/t")
    lines = r.stdout.splitlines()
    # Not a terminal: 80 columns, less the 8 of ' = "..."' (the C client's arithmetic
    # leaves room for one column more, the backslash).
    assert lines[:4] == ['a = "1"', 'd = ""', ' e = "x"', 'long = "' + "v" * 68 + '\\..."']
    assert max(len(line) for line in lines) == 81
    flat = xs("xenstore-ls", "-f", "/t").stdout.splitlines()
    assert flat == ['/t/a = "1"', '/t/d = ""', '/t/d/e = "x"', '/t/long = "' + "v" * 100 + '"']
    perms = xs("xenstore-ls", "-p", "/t").stdout.splitlines()
    assert perms[0] == 'a = "1" ' + " ." * 26 + "  (n0)"
    assert len(perms[0]) == len("  (n0)") + 60
    r = xs("xenstore-ls", "/nope")
    assert r.returncode == 1
    assert r.stderr == "xenstore-ls: xs_directory (/nope): No such file or directory\n"
    assert xs("xenstore-ls").stdout.startswith('local = ""\n domain = ""\n  0 = ""\n')


def test_multiplexer_and_relative_paths(xs):
    assert xs("xenstore", "write", "data/probe", "v").returncode == 0
    assert xs("xenstore", "read", "/local/domain/0/data/probe").stdout == "v\n"
    r = xs("xenstore", "frobnicate", "x")
    assert r.returncode == 1 and "unknown mode frobnicate" in r.stderr


def test_no_xenstored_socket(simulator):
    r = simulator.dom0.run(["xenstore-read", "/x"],
                           env={"XHOST_SIM_XENSTORED_SOCKET": "/nonexistent/socket"})
    assert r.returncode == 1
    assert r.stderr == "xenstore-read: xs_open: No such file or directory\n"


# -- used from a dom0 script -------------------------------------------------------------

SCRIPT = """
    import json, subprocess, XenAPIPlugin

    def run(*argv):
        p = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = p.communicate()
        return [p.returncode, out.decode(), err.decode()]

    def probe(session, args):
        home = "/local/domain/%s" % args["domid"]
        return json.dumps({
            "name": run("xenstore-read", home + "/name"),
            "hostname": run("xenstore-read", home + "/vm-data/hostname"),
            "write": run("xenstore-write", home + "/data/host/req1", '{"name": "version"}'),
            "exists": run("xenstore-exists", home + "/data/host/req1"),
            "ls": run("xenstore-ls", home + "/data/host"),
            "rm": run("xenstore-rm", home + "/data/host/req1"),
            "gone": run("xenstore-exists", home + "/data/host/req1"),
            "missing": run("xenstore-read", home + "/nope"),
        })

    if __name__ == "__main__":
        XenAPIPlugin.dispatch({"probe": probe})
"""


@pytest.mark.parametrize("interpreter", ["default", "python3.6"])
def test_xenstore_commands_from_a_dom0_script(simulator, x, new_vm, interpreter):
    if interpreter == "python3.6":
        with component_guard():
            simulator.dom0.interpreter = pyenv_python()
    simulator.dom0.install_plugin("xs_probe.py",
                                  "#!/usr/bin/env python3\n" + textwrap.dedent(SCRIPT))
    vm = new_vm("probed")
    x.VM.add_to_xenstore_data(vm, "vm-data/hostname", "probed-host")
    x.VM.start(vm, False, False)
    domid = x.VM.get_domid(vm)
    seen: list[str] = []
    guest = simulator.guests.get(vm)
    guest.xenstore.watch("data/host", lambda path, token: seen.append(path))
    out = json.loads(x.host.call_plugin(x.host.get_all()[0], "xs_probe.py", "probe",
                                        {"domid": str(domid)}))
    assert out["name"] == [0, "probed\n", ""]
    assert out["hostname"] == [0, "probed-host\n", ""]
    assert out["write"][0] == 0 and out["exists"][0] == 0
    assert out["ls"] == [0, 'req1 = "{\\"name\\": \\"version\\"}"\n'.replace('\\"', '"'), ""]
    assert out["rm"][0] == 0 and out["gone"][0] == 1
    assert out["missing"] == [1, "", f"xenstore-read: couldn't read path /local/domain/{domid}/nope\n"]
    # The guest saw the request come and go through its watch.
    deadline = time.monotonic() + 5
    while "data/host/req1" not in seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen[0] == "data/host" and "data/host/req1" in seen


# -- the XenStore API -------------------------------------------------------------------

def test_watches_fire_on_registration_changes_and_removal(simulator):
    store = simulator.xenstore
    events: list[tuple[str, str]] = []
    got = threading.Event()

    def cb(path: str, token: str) -> None:
        events.append((path, token))
        got.set()

    store.write("/w/a/b", "1")
    watch = store.watch("/w/a/b", cb, "tok")
    store.write("/w/a/b/c", "2")
    store.write("/w/other", "3")
    store.rm("/w/a")
    store.drain()
    assert events == [("/w/a/b", "tok"), ("/w/a/b/c", "tok"), ("/w/a/b", "tok")]
    watch.cancel()
    store.write("/w/a/b", "again")
    store.drain()
    assert len(events) == 3


def test_transactions_fire_on_commit_and_undo_on_error(simulator):
    store = simulator.xenstore
    events: list[str] = []
    store.write("/tx/keep", "old")
    store.watch("/tx", lambda p, t: events.append(p))
    with pytest.raises(XenStoreError):
        with store.transaction():
            store.write("/tx/keep", "new")
            store.write("/tx/added/deep", "x")
            store.rm("/tx/keep")
            store.read("/tx/missing")
    store.drain()
    assert store.read("/tx/keep") == "old"
    assert not store.exists("/tx/added")
    assert events == ["/tx"]
    with store.transaction():
        store.write("/tx/a", "1")
        store.write("/tx/b", "2")
    store.drain()
    assert events == ["/tx", "/tx/a", "/tx/b"]


def test_guest_permissions(simulator, x, new_vm):
    vm = new_vm("perms")
    x.VM.start(vm, False, False)
    domid = x.VM.get_domid(vm)
    guest = DomainXenStore(simulator.xenstore, domid)
    guest.write("data/mine", "ok")
    assert simulator.xenstore.get_perms(f"/local/domain/{domid}/data/mine") == [f"n{domid}"]
    assert guest.read("name") == "perms"
    for forbidden in ("name", "domid", "newkey"):
        with pytest.raises(XenStoreError) as info:
            guest.write(forbidden, "x")
        assert info.value.code == "EACCES"
    with pytest.raises(XenStoreError) as info:
        guest.read("/local/domain/0/name")
    assert info.value.code == "EACCES"
    with pytest.raises(XenStoreError) as info:
        guest.write("data/bad path", "x")
    assert info.value.code == "EINVAL"

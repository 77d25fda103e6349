"""host.call_plugin runs dom0 scripts as processes, with xapi's exact contract.

Every test goes through the real XenAPI client over HTTP; the plugins are
the project's own scripts or files written here for one failure each.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import XenAPI

from xhost.testing.pythons import pyenv_python
from xhost.testing.realfixtures import component_guard


def _python36() -> str:
    with component_guard():
        return pyenv_python()


@pytest.fixture
def py36() -> str:
    return _python36()


@pytest.fixture
def host(x) -> str:
    return x.host.get_all()[0]


def plugin(simulator, name: str, body: str) -> None:
    """Install a purpose-written Python plugin."""
    simulator.dom0.install_plugin(name, "#!/usr/bin/env python3\n" + textwrap.dedent(body))


# -- the project's real script -------------------------------------------------------

def test_version_script_runs_unchanged(simulator, x, host):
    installed = simulator.dom0.plugins_dir / "xhost_version.py"
    shipped = Path(__file__).parents[2] / "dom0" / "xhost_version.py"
    assert installed.read_bytes() == shipped.read_bytes()
    assert os.access(installed, os.X_OK)
    answer = json.loads(x.host.call_plugin(host, "xhost_version.py", "get_version", {"args": "{}"}))
    assert answer["version"] == "1.1" and answer["protocol"] == "xhost-dom0/1"


def test_version_script_under_python36(simulator, x, host, fail, py36):
    simulator.dom0.interpreter = py36
    answer = json.loads(x.host.call_plugin(host, "xhost_version.py", "get_version", {"args": "{}"}))
    assert answer["python"] == "3.6.15"
    details = fail(x.host.call_plugin, host, "xhost_version.py", "get_version",
                   {"args": '{"bogus": 1}'})
    assert details[:2] == ["XHOST_DOM0_BAD_ARGS", "get_version"]


def test_plugin_sees_the_call_as_xapi_sends_it(simulator, xapi_session, x, host):
    plugin(simulator, "argv_probe", """
        import json, os, sys, xmlrpc.client
        params, method = xmlrpc.client.loads(sys.argv[1])
        print(xmlrpc.client.dumps(({"Status": "Success", "Value": json.dumps({
            "argc": len(sys.argv), "raw": sys.argv[1], "method": method, "params": params,
            "root": os.environ["XHOST_DOM0_ROOT"], "cwd": os.getcwd()})},),
            methodresponse=True))
    """)
    args = {"plain": "x", "markup": "<a & 'b'> \"c\"", "empty": "", "unicode": "d\u00e9j\u00e0 \u2713"}
    seen = json.loads(x.host.call_plugin(host, "argv_probe", "probe", args))
    assert seen["argc"] == 2 and seen["method"] == "probe"
    assert seen["params"] == [xapi_session._session, args]
    # xapi's own encoding: bare <value> strings, <value/> for "", no declaration.
    assert seen["raw"].startswith("<methodCall><methodName>probe</methodName><params><param>")
    assert "<member><name>empty</name><value/></member>" in seen["raw"]
    assert "&lt;a &amp; 'b'&gt; &quot;c&quot;" in seen["raw"]
    assert seen["root"] == str(simulator.dom0.root) == seen["cwd"]


# -- the plugin contract (XenAPIPlugin.dispatch) -----------------------------------------

CONTRACT = """
    import XenAPIPlugin

    def ok(session, args):
        return "got " + ",".join(sorted(args))

    def refuse(session, args):
        raise XenAPIPlugin.Failure("SR_BACKEND_FAILURE_47", ["", "The SR is not available", ""])

    def crash(session, args):
        raise IOError("disk full")

    def blank(session, args):
        return "   "

    def number(session, args):
        return 42

    if __name__ == "__main__":
        XenAPIPlugin.dispatch({"ok": ok, "refuse": refuse, "crash": crash, "blank": blank,
                               "number": number})
"""


def test_dispatch_contract(simulator, x, host, fail):
    plugin(simulator, "contract.py", CONTRACT)
    assert x.host.call_plugin(host, "contract.py", "ok", {"b": "1", "a": "2"}) == "got a,b"
    assert fail(x.host.call_plugin, host, "contract.py", "refuse", {}) == \
        ["SR_BACKEND_FAILURE_47", "", "The SR is not available", ""]
    assert fail(x.host.call_plugin, host, "contract.py", "crash", {}) == \
        ["XENAPI_PLUGIN_FAILURE", "crash", "OSError", "disk full"]
    assert fail(x.host.call_plugin, host, "contract.py", "missing_fn", {}) == \
        ["UNKNOWN_XENAPI_PLUGIN_FUNCTION", "missing_fn"]
    # xapi's XML parser drops whitespace-only text: such a result arrives empty.
    assert x.host.call_plugin(host, "contract.py", "blank", {}) == ""
    # A non-string Value breaks xapi's reader: an internal error, not a result.
    details = fail(x.host.call_plugin, host, "contract.py", "number", {})
    assert details[0] == "INTERNAL_ERROR" and "RunTimeTypeError" in details[1]


def test_dispatch_contract_under_python36(simulator, x, host, fail, py36):
    simulator.dom0.interpreter = py36
    plugin(simulator, "contract.py", CONTRACT)
    assert x.host.call_plugin(host, "contract.py", "ok", {"k": "v"}) == "got k"
    assert fail(x.host.call_plugin, host, "contract.py", "crash", {}) == \
        ["XENAPI_PLUGIN_FAILURE", "crash", "OSError", "disk full"]
    assert fail(x.host.call_plugin, host, "contract.py", "missing_fn", {}) == \
        ["UNKNOWN_XENAPI_PLUGIN_FUNCTION", "missing_fn"]


def test_missing_plugin(simulator, x, host, fail):
    assert fail(x.host.call_plugin, host, "no_such_plugin.py", "f", {}) == \
        ["XENAPI_MISSING_PLUGIN", "no_such_plugin.py"]
    # Only entries of the plugins directory can run, not paths out of it.
    assert fail(x.host.call_plugin, host, "../../usr/bin/xenstore", "f", {}) == \
        ["XENAPI_MISSING_PLUGIN", "../../usr/bin/xenstore"]
    simulator.dom0.remove_plugin("xhost_version.py")
    assert fail(x.host.call_plugin, host, "xhost_version.py", "get_version", {}) == \
        ["XENAPI_MISSING_PLUGIN", "xhost_version.py"]


# -- xapi's failure codes ----------------------------------------------------------------

def test_non_zero_exit(simulator, x, host, fail):
    plugin(simulator, "exit3", """
        import sys
        sys.stdout.write("partial output")
        sys.stderr.write("something broke")
        sys.exit(3)
    """)
    assert fail(x.host.call_plugin, host, "exit3", "f", {}) == \
        ["XENAPI_PLUGIN_FAILURE", "non-zero exit", "partial output", "something broke"]


def test_uncaught_exception_is_a_non_zero_exit(simulator, x, host, fail):
    plugin(simulator, "boom", "raise RuntimeError('before dispatch')\n")
    details = fail(x.host.call_plugin, host, "boom", "f", {})
    assert details[:3] == ["XENAPI_PLUGIN_FAILURE", "non-zero exit", ""]
    assert "RuntimeError: before dispatch" in details[3]


def test_killed_by_a_signal(simulator, x, host, fail):
    plugin(simulator, "suicide", """
        import os, signal, sys
        sys.stdout.write("out"); sys.stdout.flush()
        sys.stderr.write("err"); sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGTERM)
    """)
    assert fail(x.host.call_plugin, host, "suicide", "f", {}) == \
        ["XENAPI_PLUGIN_FAILURE", "signal: SIGTERM", "out", "err"]


def test_timeout_kills_the_plugin_and_its_children(simulator, x, host, fail, tmp_path):
    marker = tmp_path / "child-alive"
    plugin(simulator, "slow", f"""
        import subprocess, time
        subprocess.Popen(["sh", "-c", "sleep 1; touch {marker}"])
        time.sleep(30)
    """)
    simulator.dom0.plugin_timeout = 0.5
    details = fail(x.host.call_plugin, host, "slow", "f", {})
    assert details[:2] == ["XENAPI_PLUGIN_FAILURE", "signal: SIGKILL"]
    time.sleep(1.5)
    assert not marker.exists(), "the plugin's child outlived the timeout"


def test_unparsable_output(simulator, x, host, fail):
    plugin(simulator, "chatty", "print('hello, world')\n")
    assert fail(x.host.call_plugin, host, "chatty", "f", {}) == \
        ["XENAPI_PLUGIN_FAILURE", "failed to parse plugin output", "hello, world\n",
         "expected root element line 1"]
    plugin(simulator, "silent", "pass\n")
    assert fail(x.host.call_plugin, host, "silent", "f", {}) == \
        ["XENAPI_PLUGIN_FAILURE", "failed to parse plugin output", "",
         "unexpected end of input line 1"]
    plugin(simulator, "broken", "print('<methodResponse><params>')\n")
    details = fail(x.host.call_plugin, host, "broken", "f", {})
    assert details[:3] == ["XENAPI_PLUGIN_FAILURE", "failed to parse plugin output",
                           "<methodResponse><params>\n"]
    assert details[3].endswith("line 2")


def test_xmlrpc_fault(simulator, x, host, fail):
    plugin(simulator, "faulty", """
        import xmlrpc.client
        print(xmlrpc.client.dumps(xmlrpc.client.Fault(42, "no can do"), methodresponse=True))
    """)
    assert fail(x.host.call_plugin, host, "faulty", "f", {}) == \
        ["XENAPI_PLUGIN_FAILURE", "fault", "42", "no can do"]


def test_wrong_shape_and_trailing_text(simulator, x, host, fail):
    plugin(simulator, "noval", "print('<methodResponse><params><param><value><struct>"
                              "<member><name>Status</name><value>Success</value></member>"
                              "</struct></value></param></params></methodResponse>')\n")
    assert fail(x.host.call_plugin, host, "noval", "f", {})[0] == "INTERNAL_ERROR"
    # Like xapi's parser, only the first element counts.
    plugin(simulator, "trailing", "print('<methodResponse><params><param><value><struct>"
                                "<member><name>Status</name><value>Success</value></member>"
                                "<member><name>Value</name><value>fine</value></member>"
                                "</struct></value></param></params></methodResponse>"
                                " and then some')\n")
    assert x.host.call_plugin(host, "trailing", "f", {}) == "fine"


def test_non_python_plugins_are_executed_directly(simulator, x, host, fail):
    simulator.dom0.install_plugin("shell", "#!/bin/sh\nprintf '%s' \"<methodResponse><params>"
                                           "<param><value><struct><member><name>Status</name>"
                                           "<value>Success</value></member><member><name>Value"
                                           "</name><value>$#</value></member></struct></value>"
                                           "</param></params></methodResponse>\"\n")
    assert x.host.call_plugin(host, "shell", "f", {"a": "b"}) == "1"
    simulator.dom0.install_plugin("notexec", "#!/bin/sh\necho hi\n", mode=0o644)
    details = fail(x.host.call_plugin, host, "notexec", "f", {})
    assert details[:3] == ["XENAPI_PLUGIN_FAILURE", "non-zero exit", ""]
    assert "Permission denied" in details[3]


# -- dom0 facilities a plugin uses ------------------------------------------------------

SESSION_USER = """
    import json, os, XenAPI, XenAPIPlugin, xhost_dom0lib

    def whoami(session, args):
        x = session.xenapi
        host = x.host.get_all()[0]
        path = xhost_dom0lib.host_path("/images/from-plugin.txt")
        with open(path, "w") as f:
            f.write(args.get("text", ""))
        # As on a real host, root logs in on the local socket without a password.
        local = XenAPI.xapi_local()
        local.xenapi.login_with_password("root", "", "1.0", "session_user")
        vms = len(local.xenapi.VM.get_all())
        local.xenapi.session.logout()
        try:
            XenAPI.xapi_local().xenapi.login_with_password("nobody", "", "1.0", "x")
            refused = None
        except XenAPI.Failure as exc:
            refused = exc.details[0]
        return json.dumps({
            "impl": XenAPI.IMPLEMENTATION,
            "host": x.host.get_name_label(host),
            "vms": vms,
            "refused": refused,
            "session": session.handle,
            "path": path,
        })

    def denied(session, args):
        session.xenapi.VM.get_record("OpaqueRef:nope")

    if __name__ == "__main__":
        XenAPIPlugin.dispatch({"whoami": whoami, "denied": denied})
"""


@pytest.mark.parametrize("interpreter", ["default", "python3.6"])
def test_plugin_session_talks_back_to_the_simulator(simulator, xapi_session, x, host, fail,
                                                    interpreter):
    if interpreter == "python3.6":
        simulator.dom0.interpreter = _python36()
    plugin(simulator, "session_user.py", SESSION_USER)
    answer = json.loads(x.host.call_plugin(host, "session_user.py", "whoami", {"text": "hi"}))
    # With the PyPI XenAPI where the interpreter has it, the stand-in elsewhere.
    assert answer["impl"] == ("pypi" if interpreter == "default" else "stand-in")
    assert answer["host"] == x.host.get_name_label(host)
    assert answer["vms"] == len(x.VM.get_all())
    assert answer["refused"] == "SESSION_AUTHENTICATION_FAILED"
    assert answer["session"] == xapi_session._session
    assert Path(answer["path"]) == simulator.dom0.path("/images/from-plugin.txt")
    assert Path(answer["path"]).read_text() == "hi"
    # A XAPI error inside the plugin surfaces as the plugin's failure.
    details = fail(x.host.call_plugin, host, "session_user.py", "denied", {})
    assert details[:3] == ["XENAPI_PLUGIN_FAILURE", "denied", "Failure"]
    assert "HANDLE_INVALID" in details[3]


def test_fault_injection_still_applies_to_real_scripts(simulator, x, host, fail):
    simulator.controls.add_fault("host.call_plugin", ["XENAPI_PLUGIN_FAILURE", "get_version",
                                                     "IOError", "injected"],
                                 plugin="xhost_version", fn="get_version", times=1)
    assert fail(x.host.call_plugin, host, "xhost_version.py", "get_version", {}) == \
        ["XENAPI_PLUGIN_FAILURE", "get_version", "IOError", "injected"]
    assert json.loads(x.host.call_plugin(host, "xhost_version.py", "get_version",
                                         {"args": "{}"}))["version"] == "1.1"


def test_async_call_plugin(simulator, x, host):
    task = x.Async.host.call_plugin(host, "xhost_version.py", "get_version", {"args": "{}"})
    while x.task.get_status(task) == "pending":
        time.sleep(0.01)
    assert x.task.get_status(task) == "success"
    assert "xhost-dom0/1" in x.task.get_result(task)


def test_layout_of_the_dom0_root(simulator):
    root = simulator.state_dir / "dom0"
    assert simulator.dom0.root == root.absolute()
    for sub in ("etc/xapi.d/plugins", "var/run/sr-mount", "images", "boot/guest",
                "var/log/xen/guest", "tmp"):
        assert (root / sub).is_dir(), sub
    assert (root / "var/lib/xcp/xapi").exists()
    assert (root / "var/run/xenstored/socket").exists()


def test_bad_interpreter_is_refused(simulator):
    with pytest.raises(ValueError, match="not an executable file"):
        simulator.dom0.interpreter = "/nonexistent/python"


def test_serve_with_a_python36_dom0(tmp_path, py36):
    """``xhost sim serve --dom0-python``, as a user runs it."""
    base = [sys.executable, "-m", "xhost.cli.main", "sim", "serve", "--password", "pw",
            "--auth-delay", "0"]
    bad = subprocess.run([*base, "--state-dir", str(tmp_path / "bad"), "--dom0-python",
                          "/nonexistent/python"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert "dom0 interpreter '/nonexistent/python' is not an executable file" in bad.stderr
    proc = subprocess.Popen([*base, "--state-dir", str(tmp_path / "state"), "--dom0-python", py36,
                             "--plugin-timeout", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        session = XenAPI.Session(url)
        session.xenapi.login_with_password("root", "pw")
        host = session.xenapi.host.get_all()[0]
        answer = json.loads(session.xenapi.host.call_plugin(host, "xhost_version.py",
                                                            "get_version", {"args": "{}"}))
        assert answer["python"] == "3.6.15"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0

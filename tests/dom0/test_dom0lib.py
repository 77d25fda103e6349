"""xhost_dom0lib's JSON calling convention, under the dom0 Python (>= 3.6)."""
import contextlib
import json
import os
import sys
import types
import unittest

DOM0 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "dom0")


@contextlib.contextmanager
def fake_xenapiplugin():
    """A scoped stand-in for the host's XenAPIPlugin module: records what
    dispatch() was given and what the function returned or raised."""
    module = types.ModuleType("XenAPIPlugin")

    class Failure(Exception):
        def __init__(self, code, params):
            Exception.__init__(self, code, params)
            self.code, self.params = code, params

    module.Failure = Failure
    module.dispatched = {}
    module.dispatch = lambda table: module.dispatched.update(table)
    saved_path = list(sys.path)
    sys.path.insert(0, DOM0)
    sys.modules["XenAPIPlugin"] = module
    try:
        yield module
    finally:
        sys.modules.pop("XenAPIPlugin", None)
        for name in ("xhost_dom0lib", "xhost_version"):
            sys.modules.pop(name, None)
        sys.path[:] = saved_path


class Dom0LibTest(unittest.TestCase):
    def dispatch(self, functions):
        import xhost_dom0lib

        plugin = sys.modules["XenAPIPlugin"]
        xhost_dom0lib.dispatch(functions)
        return plugin

    def test_json_arguments_and_result(self):
        with fake_xenapiplugin():
            def add(session, a, b=1):
                return {"sum": a + b, "session": session}

            plugin = self.dispatch({"add": add})
            out = plugin.dispatched["add"]("OpaqueRef:s", {"args": json.dumps({"a": 2, "b": 3})})
            self.assertEqual(json.loads(out), {"sum": 5, "session": "OpaqueRef:s"})

    def test_bad_json_and_unknown_arguments_are_refused(self):
        with fake_xenapiplugin() as plugin:
            self.dispatch({"f": lambda session, a: a})
            with self.assertRaises(plugin.Failure) as err:
                plugin.dispatched["f"]("s", {"args": "{not json"})
            self.assertEqual(err.exception.code, "XHOST_DOM0_BAD_ARGS")
            with self.assertRaises(plugin.Failure) as err:
                plugin.dispatched["f"]("s", {"args": json.dumps({"a": 1, "z": 2})})
            self.assertIn("z", err.exception.params[1])

    def test_errors_become_xhost_failures(self):
        with fake_xenapiplugin() as plugin:
            import xhost_dom0lib

            def typed(session):
                raise xhost_dom0lib.Dom0Error("XHOST_NO_SPACE", "/var/run/sr-mount/x", 12)

            def crash(session):
                raise IOError("disk on fire")

            self.dispatch({"typed": typed, "crash": crash})
            with self.assertRaises(plugin.Failure) as err:
                plugin.dispatched["typed"]("s", {})
            self.assertEqual((err.exception.code, err.exception.params),
                             ("XHOST_NO_SPACE", ["/var/run/sr-mount/x", "12"]))
            with self.assertRaises(plugin.Failure) as err:
                plugin.dispatched["crash"]("s", {})
            self.assertEqual(err.exception.code, "XHOST_DOM0_ERROR")
            self.assertEqual(err.exception.params[1], "disk on fire")

    def test_host_path_resolves_under_the_simulated_root(self):
        with fake_xenapiplugin():
            import xhost_dom0lib

            old = os.environ.get(xhost_dom0lib.ROOT_ENV)
            try:
                os.environ.pop(xhost_dom0lib.ROOT_ENV, None)
                self.assertEqual(xhost_dom0lib.host_path("/boot/guest/x"), "/boot/guest/x")
                os.environ[xhost_dom0lib.ROOT_ENV] = "/tmp/sim/dom0"
                self.assertEqual(xhost_dom0lib.host_path("/boot/guest/x"), "/tmp/sim/dom0/boot/guest/x")
            finally:
                if old is None:
                    os.environ.pop(xhost_dom0lib.ROOT_ENV, None)
                else:
                    os.environ[xhost_dom0lib.ROOT_ENV] = old

    def test_net_command_runs_in_the_simulated_dom0_namespace(self):
        with fake_xenapiplugin():
            import xhost_dom0lib

            old = os.environ.pop(xhost_dom0lib.NETNS_ENV, None)
            try:
                self.assertEqual(xhost_dom0lib.net_command(["ip", "link"]), ["ip", "link"])
                os.environ[xhost_dom0lib.NETNS_ENV] = "dom0ns"
                self.assertEqual(xhost_dom0lib.net_command(["bridge", "link"]),
                                 ["ip", "netns", "exec", "dom0ns", "bridge", "link"])
            finally:
                os.environ.pop(xhost_dom0lib.NETNS_ENV, None)
                if old is not None:
                    os.environ[xhost_dom0lib.NETNS_ENV] = old

    def test_version_script_reports_its_version(self):
        with fake_xenapiplugin() as plugin:
            import xhost_version

            self.assertRegex(xhost_version.PLUGIN_VERSION, r"^\d+\.\d+$")
            xhost_version.xhost_dom0lib.dispatch({"get_version": xhost_version.get_version})
            answer = json.loads(plugin.dispatched["get_version"]("s", {}))
            self.assertEqual(answer["version"], xhost_version.PLUGIN_VERSION)
            self.assertEqual(answer["protocol"], "xhost-dom0/1")


if __name__ == "__main__":
    unittest.main()

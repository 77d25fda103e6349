"""xhost_network (the hybrid plumbing dom0 script), under the dom0 Python (>= 3.6).

The plumbing tests run the real ``ip`` in a private network namespace (root
only); the argument checks run anywhere.
"""
import contextlib
import os
import shutil
import subprocess
import sys
import types
import unittest

DOM0 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "dom0")


@contextlib.contextmanager
def script(**env):
    """Import xhost_network with a stand-in XenAPIPlugin and ``env`` set."""
    module = types.ModuleType("XenAPIPlugin")
    module.Failure = Exception
    module.dispatch = lambda table: None
    saved_path, saved_env = list(sys.path), dict(os.environ)
    sys.path.insert(0, DOM0)
    sys.modules["XenAPIPlugin"] = module
    for key in ("XHOST_DOM0_ROOT", "XHOST_DOM0_NETNS"):
        os.environ.pop(key, None)
    os.environ.update(env)
    try:
        import xhost_network

        yield xhost_network
    finally:
        for name in ("XenAPIPlugin", "xhost_network", "xhost_dom0lib"):
            sys.modules.pop(name, None)
        sys.path[:] = saved_path
        os.environ.clear()
        os.environ.update(saved_env)


class ArgumentTest(unittest.TestCase):
    def assertRefused(self, code, fn, *args, **kwargs):
        import xhost_dom0lib

        with self.assertRaises(xhost_dom0lib.Dom0Error) as err:
            fn(None, *args, **kwargs)
        self.assertEqual(err.exception.code, code)
        return " ".join(err.exception.params)

    def test_names_of_running_domains_and_nics_are_refused(self):
        with script() as net:
            bad = "XHOST_DOM0_BAD_ARGS"
            message = self.assertRefused(bad, net.plug_hybrid, "vif1.0", "qvbx", "qvox")
            self.assertIn("'vif1.0' is not an xhost device name", message)
            self.assertRefused(bad, net.unplug_hybrid, "qbrx", ["eth0"])
            self.assertRefused(bad, net.unplug_hybrid, "qbrx", ["tap3.0"])
            self.assertRefused(bad, net.plug_hybrid, "qbr0123456789abc", "qvbx", "qvox")
            self.assertRefused(bad, net.plug_hybrid, "qbrx", "qvbx", "qvox", patch=["tapx"])
            self.assertRefused(bad, net.plug_hybrid, "qbrx", "qvbx", "qvox", mtu=10)
            self.assertRefused(bad, net.plug_hybrid, "qbrx", "qvbx", "qvox",
                               qvo_master="br;rm -rf")
            self.assertRefused(bad, net.unplug_hybrid, "qbrx", "qvbx")

    def test_refuses_to_touch_this_machine_under_a_simulator_without_dom0_network(self):
        with script(XHOST_DOM0_ROOT="/tmp/some-sim-dom0") as net:
            message = self.assertRefused("XHOST_NETWORK_FAILED", net.plug_hybrid, "qbrx",
                                         "qvbx", "qvox")
            self.assertIn("real_network=True", message)

    def test_only_ip_is_run(self):
        with script() as net:
            self.assertRefused("XHOST_DOM0_ERROR", lambda _s: net._run(["sh", "-c", "true"]))


@unittest.skipUnless(hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("ip"),
                     "needs root and iproute2 (network namespaces)")
class PlumbingTest(unittest.TestCase):
    NS = "xhtest-%d-dom0net" % os.getpid()

    def setUp(self):
        subprocess.check_call(["ip", "netns", "add", self.NS])
        self.addCleanup(subprocess.call, ["ip", "netns", "del", self.NS])
        self.ip("link", "add", "xenbrt", "type", "bridge")

    def ip(self, *args):
        return subprocess.check_output(["ip", "-n", self.NS] + list(args),
                                       universal_newlines=True)

    def links(self):
        with script(XHOST_DOM0_NETNS=self.NS) as net:
            return net.links()

    def test_build_is_idempotent_and_removal_leaves_foreign_devices(self):
        with script(XHOST_DOM0_NETNS=self.NS) as net:
            made = net.plug_hybrid(None, "qbrt", "qvbt", "qvot", qvo_master="xenbrt",
                                   patch=["tapt", "vift"], mtu=1450)
            self.assertEqual(made["created"], ["qbrt", "qvbt", "qvot", "tapt", "vift"])
            links = net.links()
            self.assertTrue(links["qbrt"]["bridge"] and links["qbrt"]["up"])
            self.assertEqual(links["qvbt"]["master"], "qbrt")
            self.assertEqual(links["tapt"]["master"], "qbrt")
            self.assertEqual(links["qvot"]["master"], "xenbrt")
            self.assertIsNone(links["vift"]["master"])
            self.assertIn("mtu 1450", self.ip("link", "show", "qvot"))
            self.assertIn("PROMISC", self.ip("link", "show", "qvbt"))
            self.assertEqual(net.plug_hybrid(None, "qbrt", "qvbt", "qvot", qvo_master="xenbrt",
                                             patch=["tapt", "vift"], mtu=1450),
                             {"created": []})
            # A half-gone pair is rebuilt.
            self.ip("link", "del", "tapt")
            again = net.plug_hybrid(None, "qbrt", "qvbt", "qvot", qvo_master="xenbrt",
                                    patch=["tapt", "vift"], mtu=1450)
            self.assertEqual(again["created"], ["tapt", "vift"])
            gone = net.unplug_hybrid(None, "qbrt", ["qvbt", "tapt"])
            self.assertEqual(sorted(gone["deleted"]), ["qbrt", "qvbt", "tapt"])
            self.assertEqual(sorted(net.links()), ["lo", "xenbrt"])
            self.assertEqual(net.unplug_hybrid(None, "qbrt", ["qvbt", "tapt"]),
                             {"deleted": []})

    def test_a_bridge_still_in_use_is_kept(self):
        with script(XHOST_DOM0_NETNS=self.NS) as net:
            net.plug_hybrid(None, "qbru", "qvbu", "qvou")
            self.ip("tuntap", "add", "dev", "guest0", "mode", "tap")
            self.ip("link", "set", "guest0", "master", "qbru")
            self.assertEqual(net.unplug_hybrid(None, "qbru", ["qvbu"]), {"deleted": ["qvbu"]})
            self.assertIn("qbru", net.links())

    def test_refusals_leave_nothing(self):
        with script(XHOST_DOM0_NETNS=self.NS) as net:
            import xhost_dom0lib

            self.ip("tuntap", "add", "dev", "qvov", "mode", "tap")
            with self.assertRaises(xhost_dom0lib.Dom0Error) as err:
                net.plug_hybrid(None, "qbrv", "qvbv", "qvov", qvo_master="qvov")
            self.assertIn("qvov is not a Linux bridge", " ".join(err.exception.params))
            self.ip("tuntap", "add", "dev", "qbrw", "mode", "tap")
            with self.assertRaises(xhost_dom0lib.Dom0Error) as err:
                net.plug_hybrid(None, "qbrw", "qvbw", "qvow")
            self.assertIn("not a Linux bridge", " ".join(err.exception.params))
            self.assertEqual(sorted(net.links()), ["lo", "qbrw", "qvov", "xenbrt"])


if __name__ == "__main__":
    unittest.main()

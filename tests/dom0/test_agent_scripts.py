"""xhost_agent and xhost_xenstore (dom0 scripts) under the dom0 Python (>= 3.6).

The ``xenstore-*`` commands are replaced by an in-memory store that follows
their semantics (escaped values, multi-key reads in one transaction that
print what was read before the first missing key, ``rm -t``); a scripted
guest agent answers through it. End-to-end runs against the simulator's
real commands are in ``tests/agent``.
"""
import base64
import contextlib
import json
import os
import sys
import time
import types
import unittest

DOM0 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "dom0")
SCRIPTS = ("xhost_dom0lib", "xhost_xenstore", "xhost_agent")


@contextlib.contextmanager
def dom0_scripts():
    """Import the scripts with a stand-in XenAPIPlugin; forget them afterwards."""
    plugin = types.ModuleType("XenAPIPlugin")

    class Failure(Exception):
        def __init__(self, code, params):
            Exception.__init__(self, code, params)
            self.code, self.params = code, params

    plugin.Failure = Failure
    plugin.dispatched = {}
    plugin.dispatch = lambda table: plugin.dispatched.update(table)
    saved = list(sys.path)
    sys.path.insert(0, DOM0)
    sys.modules["XenAPIPlugin"] = plugin
    try:
        import xhost_agent
        import xhost_xenstore

        yield xhost_agent, xhost_xenstore, plugin
    finally:
        for name in SCRIPTS + ("XenAPIPlugin",):
            sys.modules.pop(name, None)
        sys.path[:] = saved


class FakeXenStore(object):
    """The xenstore-* commands over a dict; ``on_write(path, value)`` lets a
    scripted agent react to requests."""

    def __init__(self, xs_module):
        self.xs = xs_module
        self.nodes = {}
        self.commands = []
        self.on_write = None

    def add_domain(self, domid, vm_uuid):
        home = "/local/domain/%d" % domid
        for key, value in (("", b""), ("/name", b"guest"), ("/vm", ("/vm/" + vm_uuid).encode()),
                           ("/data", b""), ("/vm-data", b"")):
            self.nodes[home + key] = value

    def remove_tree(self, path):
        for key in [k for k in self.nodes if k == path or k.startswith(path + "/")]:
            del self.nodes[key]

    def children(self, path):
        prefix = path + "/"
        return sorted(set(k[len(prefix):].split("/")[0] for k in self.nodes
                          if k.startswith(prefix)))

    def _ensure_parents(self, path):
        parts = path.split("/")
        for i in range(2, len(parts)):
            self.nodes.setdefault("/".join(parts[:i]), b"")

    def run(self, argv):
        self.commands.append(list(argv))
        name, args = argv[0], argv[1:]
        if name == "xenstore-read":
            lines = []
            for key in args:
                if key not in self.nodes:
                    return 1, "".join(lines), "xenstore-read: couldn't read path %s" % key
                lines.append(self.xs.sanitise(self.nodes[key]) + "\n")
            return 0, "".join(lines), ""
        if name == "xenstore-write":
            path, value = args
            self._ensure_parents(path)
            self.nodes[path] = self.xs.unsanitise(value)
            if self.on_write is not None:
                self.on_write(path, self.nodes[path])
            return 0, "", ""
        if name == "xenstore-exists":
            return (0 if args[0] in self.nodes else 1), "", ""
        if name == "xenstore-list":
            if args[0] not in self.nodes:
                return 1, "", "xenstore-list: could not list path %s" % args[0]
            return 0, "".join(c + "\n" for c in self.children(args[0])), ""
        if name == "xenstore-rm":
            tidy = args[0] == "-t"
            keys = args[1:] if tidy else args
            for key in keys:
                parent = key.rsplit("/", 1)[0]
                if key not in self.nodes and parent not in self.nodes:
                    return 1, "", "xenstore-rm: could not remove path %s" % key
            for key in keys:
                self.remove_tree(key)
                while tidy and "/" in key.strip("/"):
                    key = key.rsplit("/", 1)[0]
                    if self.nodes.get(key, b"x") or self.children(key):
                        break
                    del self.nodes[key]
            return 0, "", ""
        raise AssertionError("unexpected command %r" % argv)


class ScriptedAgent(object):
    """Answers requests written to data/host of one domain."""

    def __init__(self, store, domid, answers=None):
        self.store = store
        self.home = "/local/domain/%d" % domid
        self.answers = answers or {}
        self.requests = []
        self.on_request = None
        store.on_write = self.written

    def written(self, path, value):
        prefix = self.home + "/data/host/"
        if not path.startswith(prefix):
            return
        request = json.loads(value.decode("utf-8"))
        self.requests.append(request)
        if self.on_request is not None and self.on_request(request) is False:
            return
        answer = self.answers.get(request["name"])
        if answer is None:
            return
        if not isinstance(answer, str):
            answer = json.dumps(answer)
        self.store.nodes[self.home + "/data/guest/" + path[len(prefix):]] = answer.encode()


class AgentScriptTest(unittest.TestCase):
    def setUp(self):
        self.scripts = dom0_scripts()
        self.agent_mod, self.xs, self.plugin = self.scripts.__enter__()
        self.store = FakeXenStore(self.xs)
        self.xs.run = self.store.run
        self.agent_mod.POLL_FIRST = 0.01
        self.store.add_domain(7, "11111111-2222-3333-4444-555555555555")
        self.agent = ScriptedAgent(self.store, 7, {
            "version": {"returncode": "0", "message": "1.0.0.0"},
            "features": {"returncode": "0", "message": "version,file_inject,injectfile"},
            "keyinit": {"returncode": "D0", "message": "12345"},
            "password": {"returncode": "0", "message": ""},
            "file_inject": {"returncode": "0", "message": ""},
            "injectfile": {"returncode": "0", "message": ""},
            "resetnetwork": {"returncode": "500", "message": ""},
            "agentupdate": {"returncode": "0", "message": ""},
        })

    def tearDown(self):
        self.scripts.__exit__(None, None, None)

    def leftovers(self, domid=7):
        home = "/local/domain/%d" % domid
        return [k for k in self.store.nodes
                if k.startswith(home + "/data/host/") or k.startswith(home + "/data/guest/")]

    def failure(self, fn, *args, **kwargs):
        with self.assertRaises(self.xs.Dom0Error) as err:
            fn(*args, **kwargs)
        return [err.exception.code] + err.exception.params

    def test_request_and_answer_leave_nothing_behind(self):
        answer = self.agent_mod.version(None, dom_id=7, request_id="r1")
        self.assertEqual(json.loads(answer["reply"]), {"returncode": "0", "message": "1.0.0.0"})
        self.assertEqual(self.agent.requests, [{"name": "version", "value": "agent"}])
        self.assertEqual(self.leftovers(), [])

    def test_each_command_sends_nova_s_request(self):
        m = self.agent_mod
        m.key_init(None, dom_id="7", request_id="a", pub=98765)
        m.password(None, dom_id=7, request_id="b", enc_pass="U2FsdGVk")
        m.resetnetwork(None, dom_id=7, request_id="c")
        m.agentupdate(None, dom_id=7, request_id="d", url="http://x/agent", md5sum="0" * 32)
        m.features(None, dom_id=7, request_id="e")
        self.assertEqual(self.agent.requests, [
            {"name": "keyinit", "value": "98765"},
            {"name": "password", "value": "U2FsdGVk"},
            {"name": "resetnetwork", "value": ""},
            {"name": "agentupdate", "value": "http://x/agent," + "0" * 32},
            {"name": "features", "value": ""}])
        self.assertEqual(self.leftovers(), [])

    def test_timeout_removes_the_request_and_keeps_its_deadline(self):
        del self.agent.answers["version"]
        started = time.monotonic()
        code = self.failure(self.agent_mod.version, None, dom_id=7, request_id="t1",
                            reply_timeout=0.3)
        self.assertLess(time.monotonic() - started, 1.5)
        self.assertEqual(code, ["XHOST_AGENT_TIMEOUT", "version", "7", "0.3"])
        self.assertEqual(self.leftovers(), [])

    def test_domain_vanishing_is_a_reboot_and_its_tree_is_not_recreated(self):
        self.agent.on_request = lambda request: self.store.remove_tree("/local/domain/7")
        code = self.failure(self.agent_mod.version, None, dom_id=7, request_id="rb")
        self.assertEqual(code, ["XHOST_AGENT_REBOOT", "7", "rb"])
        self.assertEqual([k for k in self.store.nodes if k.startswith("/local/domain/7")], [])

    def test_domid_taken_by_another_vm_is_a_reboot(self):
        def replaced(request):
            self.store.nodes["/local/domain/7/vm"] = b"/vm/another"
            return False
        self.agent.on_request = replaced
        code = self.failure(self.agent_mod.password, None, dom_id=7, request_id="x",
                            enc_pass="c2VjcmV0")
        self.assertEqual(code[0], "XHOST_AGENT_REBOOT")
        self.assertEqual(self.leftovers(), [])

    def test_missing_domain_writes_nothing(self):
        code = self.failure(self.agent_mod.version, None, dom_id=9, request_id="n")
        self.assertEqual(code, ["XHOST_AGENT_NO_DOMAIN", "9"])
        self.assertFalse(any(c[0] == "xenstore-write" for c in self.store.commands))

    def test_bad_arguments(self):
        for kwargs, what in (({"dom_id": "x", "request_id": "r"}, "dom_id"),
                             ({"dom_id": 0, "request_id": "r"}, "dom_id"),
                             ({"dom_id": 7, "request_id": "../x"}, "request_id"),
                             ({"dom_id": 7, "request_id": "r", "reply_timeout": "soon"},
                              "reply_timeout")):
            code = self.failure(self.agent_mod.version, None, **kwargs)
            self.assertEqual(code[:2], ["XHOST_DOM0_BAD_ARGS", what])

    def test_inject_file_uses_file_inject_when_the_agent_has_it(self):
        b64_path = base64.b64encode(b"/etc/motd").decode()
        b64_data = base64.b64encode(b"hi\x00\n").decode()
        answer = self.agent_mod.inject_file(None, dom_id=7, request_id="f", b64_path=b64_path,
                                            b64_contents=b64_data)
        self.assertEqual(answer["command"], "file_inject")
        self.assertEqual(self.agent.requests[-1], {
            "name": "file_inject", "value": {"b64_path": b64_path, "b64_file": b64_data}})
        self.assertEqual(self.leftovers(), [])

    def test_inject_file_falls_back_to_the_old_injectfile(self):
        self.agent.answers["features"] = {"returncode": "0", "message": "version,injectfile"}
        answer = self.agent_mod.inject_file(
            None, dom_id=7, request_id="f", b64_path=base64.b64encode(b"/a").decode(),
            b64_contents=base64.b64encode(b"x,y").decode())
        self.assertEqual(answer["command"], "injectfile")
        value = self.agent.requests[-1]["value"]
        self.assertEqual(base64.b64decode(value), b"/a,x,y")
        # The agent splits at the first comma: a path with one cannot go that way.
        code = self.failure(self.agent_mod.inject_file, None, dom_id=7, request_id="g",
                            b64_path=base64.b64encode(b"/a,b").decode(), b64_contents="")
        self.assertEqual(code, ["XHOST_AGENT_NOT_IMPLEMENTED",
                                "file injection of a path containing ','", "version,injectfile"])
        self.assertEqual(self.leftovers(), [])

    def test_inject_file_without_either_is_not_implemented(self):
        self.agent.answers["features"] = {"returncode": "0", "message": "version,password"}
        code = self.failure(self.agent_mod.inject_file, None, dom_id=7, request_id="f",
                            b64_path="L2E=", b64_contents="")
        self.assertEqual(code, ["XHOST_AGENT_NOT_IMPLEMENTED", "file injection",
                                "version,password"])
        self.agent.answers["features"] = "not json"
        code = self.failure(self.agent_mod.inject_file, None, dom_id=7, request_id="g",
                            b64_path="L2E=", b64_contents="")
        self.assertEqual(code[:2], ["XHOST_AGENT_BAD_REPLY", "features"])
        self.assertEqual(self.leftovers(), [])

    def test_a_known_command_skips_the_features_request(self):
        self.agent_mod.inject_file(None, dom_id=7, request_id="f", b64_path="L2E=",
                                   b64_contents="", command="injectfile")
        self.assertEqual([r["name"] for r in self.agent.requests], ["injectfile"])
        code = self.failure(self.agent_mod.inject_file, None, dom_id=7, request_id="f",
                            b64_path="L2E=", b64_contents="", command="rm -rf")
        self.assertEqual(code[:2], ["XHOST_DOM0_BAD_ARGS", "command"])

    def test_failures_never_carry_the_payload(self):
        del self.agent.answers["password"]
        secret = "c2VjcmV0LXBhc3N3b3JkLWNpcGhlcnRleHQ="
        import xhost_dom0lib

        xhost_dom0lib.dispatch({"password": self.agent_mod.password})
        handler = self.plugin.dispatched["password"]
        with self.assertRaises(self.plugin.Failure) as err:
            handler("s", {"args": json.dumps({"dom_id": 7, "request_id": "p",
                                              "enc_pass": secret, "reply_timeout": 0.1})})
        self.assertEqual(err.exception.code, "XHOST_AGENT_TIMEOUT")
        self.assertNotIn(secret, repr(err.exception.params))

    def test_values_with_escapes_survive_the_commands(self):
        self.agent.answers["version"] = {"returncode": "0", "message": "tab\there \\ \u00e9"}
        answer = self.agent_mod.version(None, dom_id=7, request_id="v")
        self.assertEqual(json.loads(answer["reply"])["message"], "tab\there \\ \u00e9")


class XenStoreScriptTest(unittest.TestCase):
    def setUp(self):
        self.scripts = dom0_scripts()
        _agent, self.xs, _plugin = self.scripts.__enter__()
        self.store = FakeXenStore(self.xs)
        self.xs.run = self.store.run
        self.store.add_domain(3, "vm-3")

    def tearDown(self):
        self.scripts.__exit__(None, None, None)

    def failure(self, fn, *args, **kwargs):
        with self.assertRaises(self.xs.Dom0Error) as err:
            fn(*args, **kwargs)
        return [err.exception.code] + err.exception.params

    def test_sanitise_round_trips_every_byte(self):
        data = bytes(bytearray(range(256))) + "d\u00e9j\u00e0".encode("utf-8")
        text = self.xs.sanitise(data)
        self.assertTrue(all(0x20 <= ord(c) <= 0x7E for c in text))
        self.assertEqual(self.xs.unsanitise(text), data)
        self.assertEqual(self.xs.sanitise(b"a\\b\n\t\x1b"), "a\\\\b\\n\\t\\x1b")
        self.assertEqual(self.xs.unsanitise("\\001\\x41\\q"), b"\x01Aq")

    def test_write_read_list_delete(self):
        xs = self.xs
        self.assertTrue(xs.write_record(None, dom_id=3, path="vm-data/hostname", value="web 1\n"))
        self.assertEqual(self.store.nodes["/local/domain/3/vm-data/hostname"], b"web 1\n")
        self.assertEqual(xs.read_record(None, dom_id=3, path="vm-data/hostname"), "web 1\n")
        xs.write_record(None, dom_id=3, path="vm-data/networking/aa", value='{"a": "\\\\"}')
        xs.write_record(None, dom_id=3, path="vm-data/networking/bb", value="2")
        self.assertEqual(xs.list_records(None, dom_id=3, path="vm-data/networking"),
                         {"aa": '{"a": "\\\\"}', "bb": "2"})
        xs.delete_record(None, dom_id=3, path="vm-data/networking/aa")
        self.assertEqual(xs.list_records(None, dom_id=3, path="vm-data/networking"), {"bb": "2"})
        self.assertEqual(xs.list_records(None, dom_id=3, path="vm-data/none"), {})
        self.assertIsNone(xs.read_record(None, dom_id=3, path="vm-data/x", ignore_missing=True))
        self.assertEqual(self.failure(xs.read_record, None, dom_id=3, path="vm-data/x"),
                         ["XHOST_XENSTORE_MISSING", "vm-data/x"])
        self.assertTrue(xs.delete_record(None, dom_id=3, path="vm-data/x"))

    def test_only_vm_data_of_running_domains(self):
        xs = self.xs
        for path in ("data/host/1", "/local/domain/3/vm-data/x", "vm-data/../name", "vm-data/",
                     "vm-datax", 5):
            code = self.failure(xs.write_record, None, dom_id=3, path=path, value="v")
            self.assertEqual(code[0], "XHOST_XENSTORE_BAD_PATH")
        self.assertEqual(self.failure(xs.write_record, None, dom_id=4, path="vm-data/a",
                                      value="v"), ["XHOST_XENSTORE_NO_DOMAIN", "4"])
        self.assertNotIn("/local/domain/4", self.store.nodes)


if __name__ == "__main__":
    unittest.main()

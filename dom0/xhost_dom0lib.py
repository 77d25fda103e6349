"""Helpers shared by xhost's dom0 scripts (Python >= 3.6, standard library only).

Every xhost dom0 function takes its arguments as one JSON object in the
``args`` key of the XAPI plugin argument map and returns JSON. Errors are
reported as XAPI failures ``[code, message, ...]`` whose code starts with
``XHOST_`` so that the client can raise typed errors:

- ``XHOST_DOM0_BAD_ARGS``: the arguments are not what the function takes.
- ``XHOST_DOM0_ERROR``: the function failed; params are [error class, message].
- any code a function raises with :class:`Dom0Error`.
"""
import json
import os
import sys

PROTOCOL = "xhost-dom0/1"

#: Root under which absolute dom0 paths resolve (the XAPI simulator sets it
#: to a directory of its state; on a real host it is unset, i.e. "/").
ROOT_ENV = "XHOST_DOM0_ROOT"


class Dom0Error(Exception):
    """A failure to report to the caller as ``[code, *params]``."""

    def __init__(self, code, *params):
        Exception.__init__(self, code, *params)
        self.code = code
        self.params = [str(p) for p in params]


def host_path(path):
    """The real location of an absolute dom0 path (``/var/run/sr-mount/...``)."""
    root = os.environ.get(ROOT_ENV, "")
    if not root or root == "/":
        return path
    return os.path.join(root, path.lstrip("/"))


#: Network namespace standing for dom0's network (set by the XAPI simulator
#: in its real-network mode; unset on a real host).
NETNS_ENV = "XHOST_DOM0_NETNS"


def net_command(argv):
    """``argv`` to run a network command (ip, bridge, ovs-vsctl...) in dom0's
    network: as is on a real host, inside the simulated dom0's namespace
    under the simulator."""
    netns = os.environ.get(NETNS_ENV)
    if not netns:
        return list(argv)
    return ["ip", "netns", "exec", netns] + list(argv)


_CO_VARKEYWORDS = 0x08  # the code flag of a **kwargs parameter (inspect.CO_VARKEYWORDS)


def _wrap(fn):
    name = fn.__name__
    # From the code object rather than inspect.signature: importing inspect
    # costs every plugin call ~20 ms of its start-up.
    code = fn.__code__
    params = frozenset(code.co_varnames[:code.co_argcount + code.co_kwonlyargcount])
    any_keyword = bool(code.co_flags & _CO_VARKEYWORDS)

    def handler(session, args):
        import XenAPIPlugin

        raw = (args or {}).get("args", "{}")
        try:
            kwargs = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise XenAPIPlugin.Failure("XHOST_DOM0_BAD_ARGS", [name, "args is not JSON: %s" % exc])
        if not isinstance(kwargs, dict):
            raise XenAPIPlugin.Failure("XHOST_DOM0_BAD_ARGS", [name, "args must be a JSON object"])
        unknown = sorted(k for k in kwargs if k not in params)
        if unknown and not any_keyword:
            raise XenAPIPlugin.Failure(
                "XHOST_DOM0_BAD_ARGS", [name, "unknown argument(s): %s" % ", ".join(unknown)])
        try:
            result = fn(session, **kwargs)
        except Dom0Error as exc:
            raise XenAPIPlugin.Failure(exc.code, exc.params)
        except TypeError as exc:
            if "argument" in str(exc):
                raise XenAPIPlugin.Failure("XHOST_DOM0_BAD_ARGS", [name, str(exc)])
            raise XenAPIPlugin.Failure("XHOST_DOM0_ERROR", [type(exc).__name__, str(exc)])
        except Exception as exc:
            raise XenAPIPlugin.Failure("XHOST_DOM0_ERROR", [type(exc).__name__, str(exc)])
        return json.dumps(result)

    handler.__name__ = name
    return handler


def dispatch(functions):
    """Run the function named by XAPI (``argv[1]``) with JSON arguments."""
    import XenAPIPlugin

    XenAPIPlugin.dispatch(dict((name, _wrap(fn)) for name, fn in functions.items()))


def log(message):
    sys.stderr.write("%s\n" % message)

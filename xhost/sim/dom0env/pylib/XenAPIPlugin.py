"""The ``XenAPIPlugin`` module of a simulated dom0 (Python >= 3.6, stdlib only).

XAPI runs a plugin as ``plugin '<methodCall>'``: ``argv[1]`` is an XML-RPC
call of the plugin function with two parameters, the caller's session
reference and a struct of string arguments.  The plugin answers on standard
output with an XML-RPC method response whose single value is a struct:

* ``{"Status": "Success", "Value": <string>}``, or
* ``{"Status": "Failure", "ErrorDescription": [code, param, ...]}``.

:func:`dispatch` implements that contract for a table of functions
``fn(session, args) -> str``: an unknown function answers
``UNKNOWN_XENAPI_PLUGIN_FUNCTION [name]``, a raised :class:`Failure` its own
error, and any other exception ``XENAPI_PLUGIN_FAILURE [name, exception
class, message]``.  ``session`` is a XenAPI session over the dom0-local
socket that reuses the caller's session reference.
"""
import sys
import xmlrpc.client


class Failure(Exception):
    """An error to report to the caller as ``[code] + params``."""

    def __init__(self, code, params):
        Exception.__init__(self, code, params)
        self.params = [code] + list(params)

    def __str__(self):
        return str(self.params)


def _response(struct):
    return xmlrpc.client.dumps((struct,), methodresponse=True, allow_none=False)


def success_message(result):
    """The method response carrying ``result``."""
    return _response({"Status": "Success", "Value": result})


def failure_message(description):
    """The method response carrying the error ``description`` (a list)."""
    return _response({"Status": "Failure", "ErrorDescription": description})


def _local_session(session_ref):
    import XenAPI

    session = XenAPI.xapi_local()
    # The plugin acts with the caller's session, as on a real host.
    session._session = session_ref
    return session


def dispatch(fn_table):
    """Run the function named in ``argv[1]`` and print its method response."""
    if len(sys.argv) != 2:
        raise Exception("Incorrect number of commandline arguments")
    params, method = xmlrpc.client.loads(sys.argv[1])
    session_ref, args = params[0], params[1]
    fn = fn_table.get(method)
    if fn is None:
        print(failure_message(["UNKNOWN_XENAPI_PLUGIN_FUNCTION", method]))
        return
    session = _local_session(session_ref)
    try:
        result = fn(session, args)
    except SystemExit:
        raise
    except Failure as exc:
        print(failure_message(exc.params))
        return
    except Exception as exc:
        print(failure_message(["XENAPI_PLUGIN_FAILURE", method, exc.__class__.__name__,
                               str(exc)]))
        return
    print(success_message(result))

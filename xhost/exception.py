"""xhost's exception hierarchy.

Every error a user can see is an :class:`XhostError` whose message says what
went wrong and, where there is one, how to fix it. Subclasses declare the
message once as ``msg_fmt`` and are raised with keyword arguments::

    raise NoSuchPlugin(role="image handler", name="foo", installed="direct_vhd")
"""
from __future__ import annotations


class XhostError(Exception):
    """Base class of every error xhost raises on purpose."""

    msg_fmt = "An unknown error occurred."

    def __init__(self, message: str | None = None, **kwargs: object) -> None:
        self.kwargs = kwargs
        if message is None:
            message = self.msg_fmt.format(**kwargs)
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


class ConfigError(XhostError):
    msg_fmt = "Invalid configuration: {reason}"


# --- plugins -----------------------------------------------------------------


class PluginError(XhostError):
    msg_fmt = "Plugin error: {reason}"


class NoSuchPlugin(PluginError):
    msg_fmt = (
        "{role} {name!r} is not available (installed: {installed}); "
        "is the plugin installed? Set [{group}] {option} to one of the "
        "installed names, or install the distribution that provides "
        "{name!r} in the {namespace!r} entry-point namespace."
    )


class PluginLoadError(PluginError):
    msg_fmt = "{role} {name!r} ({target}) could not be loaded: {cause}"


class PluginConflict(PluginError):
    msg_fmt = (
        "{role} name {name!r} is registered more than once in "
        "{namespace!r}: {providers}. Uninstall all but one of these "
        "distributions."
    )


class PluginContractError(PluginError):
    msg_fmt = "{plugin}: {reason}"


class NotSupportedByPlugin(PluginError):
    msg_fmt = "{role} {name!r} does not support {what}{hint}"


# --- XAPI --------------------------------------------------------------------


class XapiError(XhostError):
    """Base class of errors talking to a XAPI host."""

    msg_fmt = "XAPI error: {reason}"


class XapiConnectionError(XapiError):
    msg_fmt = "Cannot reach XAPI at {url}: {reason}"


class XapiTimeout(XapiError):
    msg_fmt = "XAPI call {method} timed out after {timeout}s"


class XapiFailure(XapiError):
    """A XAPI call failed; ``code`` and ``params`` are the ErrorDescription.

    Subclasses exist for the codes callers commonly handle; any other code is
    a plain ``XapiFailure``. ``XapiFailure.for_details(details)`` picks the
    class.
    """

    msg_fmt = "{method} failed: {code} {params}"
    _registry: dict[str, type[XapiFailure]] = {}
    code_name: str | None = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.code_name:
            XapiFailure._registry[cls.code_name] = cls

    def __init__(self, details: list[str], method: str = "") -> None:
        details = [str(d) for d in details] or ["INTERNAL_ERROR"]
        self.details = details
        self.code = details[0]
        self.params = details[1:]
        self.method = method
        super().__init__(
            None,
            method=method or "XAPI call",
            code=self.code,
            params=self.params,
        )

    @classmethod
    def for_details(cls, details: list[str], method: str = "") -> XapiFailure:
        code = str(details[0]) if details else "INTERNAL_ERROR"
        return cls._registry.get(code, XapiFailure)(details, method)


class SessionInvalid(XapiFailure):
    code_name = "SESSION_INVALID"


class AuthenticationFailed(XapiFailure):
    code_name = "SESSION_AUTHENTICATION_FAILED"


class HostIsSlave(XapiFailure):
    code_name = "HOST_IS_SLAVE"


class HandleInvalid(XapiFailure):
    code_name = "HANDLE_INVALID"


class UuidInvalid(XapiFailure):
    code_name = "UUID_INVALID"


class TaskCancelled(XapiFailure):
    code_name = "TASK_CANCELLED"


class VmBadPowerState(XapiFailure):
    code_name = "VM_BAD_POWER_STATE"


class PluginFailure(XapiFailure):
    code_name = "XENAPI_PLUGIN_FAILURE"


class MissingPlugin(XapiFailure):
    code_name = "XENAPI_MISSING_PLUGIN"


class Dom0VersionMismatch(XapiError):
    msg_fmt = (
        "dom0 plugin version mismatch on {host}: xhost {client} needs dom0 "
        "plugins {required} (same major, minor >= {required}), the host has "
        "{found}. Install the dom0 scripts shipped with this xhost: "
        "`xhost dom0 pack | ssh root@HOST tar -xzf - -C /etc/xapi.d/plugins`."
    )

"""Calling the ``xhost_disks`` dom0 script, its failures turned into
messages that say what to do."""
from __future__ import annotations

from typing import Any

from xhost import exception
from xhost.context import Context
from xhost.xapi.dom0 import Dom0Error

from .errors import DiskScriptFailed
from .vdis import dom0

PLUGIN = "xhost_disks"


def _reason(exc: exception.XapiFailure) -> str:
    params = exc.params
    if exc.code == "XHOST_DISK_TOOL_MISSING" and params:
        return f"{params[0]} is not installed in dom0; install it there"
    if exc.code == "XHOST_DISK_NO_DEVICE" and len(params) >= 2:
        return (f"/dev/{params[0]} did not appear within {params[1]} s of VBD.plug; raise "
                f"[xenserver] block_device_creation_timeout if dom0 is slow")
    if exc.code == "XHOST_DISK_COMMAND_FAILED" and len(params) >= 3:
        return f"`{params[0]}` exited with status {params[1]}: {params[2]}"
    if exc.code == "XHOST_DISK_BAD_ARGS" and params:
        return params[0]
    return " ".join([exc.code, *params])


def call(ctx: Context, fn: str, what: str, **kwargs: Any) -> Any:
    """Run ``xhost_disks.<fn>`` in the operation host's dom0."""
    group = ctx.conf.xenserver
    kwargs.setdefault("device_wait", group.block_device_creation_timeout)
    try:
        return dom0(ctx).call(ctx.host_ref, PLUGIN, fn,
                              timeout=ctx.conf.storage_sr.disk_script_timeout, **kwargs)
    except Dom0Error as exc:
        raise DiskScriptFailed(what=what, reason=str(exc)) from exc
    except exception.XapiFailure as exc:
        if exc.code.startswith("XHOST_DISK_"):
            raise DiskScriptFailed(what=what, reason=_reason(exc)) from exc
        raise

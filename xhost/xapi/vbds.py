"""Taking VBDs apart whatever state a failure or a killed process left them in."""
from __future__ import annotations

import contextlib
from typing import Any

from xhost import exception

#: Unplug failures that mean "not plugged" (nothing to do).
NOT_PLUGGED = frozenset({"DEVICE_ALREADY_DETACHED", "VM_BAD_POWER_STATE"})


def remove(xapi: Any, vbd: str) -> None:
    """Unplug (forcibly if a clean unplug is refused) and destroy a VBD; a
    VBD that is gone or not plugged is fine."""
    try:
        record = xapi.call("VBD.get_record", vbd)
    except exception.HandleInvalid:
        return
    if record["currently_attached"]:
        try:
            xapi.call("VBD.unplug", vbd)
        except exception.HandleInvalid:
            return
        except exception.XapiFailure as exc:
            if exc.code not in NOT_PLUGGED:
                try:
                    xapi.call("VBD.unplug_force", vbd)
                except exception.XapiFailure as forced:
                    if forced.code not in NOT_PLUGGED and not isinstance(
                            forced, exception.HandleInvalid):
                        raise
    with contextlib.suppress(exception.HandleInvalid):
        xapi.call("VBD.destroy", vbd)


def remove_all(xapi: Any, vbds: list[str]) -> None:
    for vbd in vbds:
        remove(xapi, vbd)

"""dom0 emulation: plugins run as processes, the xenstore tools, the dom0 file tree.

See :mod:`xhost.sim.dom0env.environment` (the dom0 of a host),
:mod:`xhost.sim.dom0env.runner` (``host.call_plugin``) and
:mod:`xhost.sim.dom0env.plugin_protocol` (xapi's plugin wire format).
"""
from .environment import Dom0Env

__all__ = ["Dom0Env"]

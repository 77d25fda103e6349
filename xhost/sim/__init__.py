"""An XAPI (XenServer / XCP-ng) simulator speaking the real wire protocol.

``Simulator`` is the entry point; see :mod:`xhost.sim.simulator`.
"""
from .errors import ApiError
from .simulator import SimHost, Simulator

__all__ = ["ApiError", "SimHost", "Simulator"]

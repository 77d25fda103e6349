"""Modules installed into a simulated dom0's Python path (not imported by xhost).

They run inside dom0 processes under the dom0 interpreter (Python >= 3.6,
standard library only): ``XenAPIPlugin`` (the plugin contract), ``XenAPI``
(a session back to the simulator) and ``xhost_sim_xenstore`` (the
``xenstore-*`` commands).
"""

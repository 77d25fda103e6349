"""xhost's dom0 scripts, shipped inside the wheel as ``xhost.dom0``.

The ``xhost_*.py`` files here are XAPI plugins that run on the Xen host
(Python >= 3.6, standard library only); they are installed flat into
``/etc/xapi.d/plugins`` and import each other as top-level siblings. This
``__init__`` only exists so that xhost can locate them (and import the
stdlib-only libraries among them, such as ``xhost_vhd``) as package data; it
is not installed on hosts.
"""
import os

#: Directory holding the dom0 scripts.
DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def scripts():
    """File names of the scripts to install into /etc/xapi.d/plugins."""
    return sorted(n for n in os.listdir(DIRECTORY) if n.startswith("xhost_") and n.endswith(".py"))

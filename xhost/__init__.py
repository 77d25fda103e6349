"""xhost: manage virtual machines on XAPI hosts (XenServer, XCP-ng) through plugins.

Plugin authors import only :data:`hookimpl` from here::

    from xhost import hookimpl

    class MyHandler:
        @hookimpl
        def xhost_image_download(self, context, image, sr):
            ...

and declare an entry point in one of the ``xhost.*`` namespaces
(see ``docs/plugin-guide.rst``).
"""
import pluggy

NAME = "xhost"
__version__ = "0.1.0"

#: Marker for hook implementations in plugins.
hookimpl = pluggy.HookimplMarker(NAME)

__all__ = ["NAME", "__version__", "hookimpl"]

"""xhost's configuration (oslo.config).

Core groups are registered by :func:`register_opts`; each plugin registers
its own group when it is instantiated (and publishes it through its
``list_opts()`` for the sample configuration and ``xhost config check``).
Core code never reads a plugin's group.
"""
from __future__ import annotations

from collections.abc import Sequence

from oslo_config import cfg

from xhost.conf import compute, xenserver

PROJECT = "xhost"


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register every core option group on ``conf``."""
    xenserver.register_opts(conf)
    compute.register_opts(conf)


def load(config_files: Sequence[str] = (), config_dirs: Sequence[str] = (),
         conf: cfg.ConfigOpts | None = None) -> cfg.ConfigOpts:
    """Parse configuration files and directories into a new ``ConfigOpts``.

    :param config_files: files to read, later files override earlier ones.
        A whole ``nova.conf`` is fine: sections and options xhost does not
        know are ignored.
    :param config_dirs: directories whose ``*.conf`` files are read after
        the files, in alphabetical order.
    :param conf: an existing, unparsed ``ConfigOpts`` to use instead of a new
        one.
    :raises oslo_config.cfg.ConfigFilesNotFoundError: a file cannot be read.
    """
    conf = conf if conf is not None else cfg.ConfigOpts()
    register_opts(conf)
    conf(
        args=[],
        project=PROJECT,
        default_config_files=list(config_files),
        default_config_dirs=list(config_dirs),
        validate_default_values=True,
        use_env=False,
    )
    return conf

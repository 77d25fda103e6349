"""pytest fixtures for configuration and plugins."""
from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from oslo_config import cfg

from xhost import conf as xconf
from xhost import plugins


@pytest.fixture
def write_conf(tmp_path: Path) -> Callable[[str], Path]:
    """Write an INI configuration file and return its path."""
    counter = iter(range(1000))

    def write(text: str, name: str | None = None) -> Path:
        path = tmp_path / (name or f"xhost-{next(counter)}.conf")
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def make_conf(write_conf) -> Callable[..., cfg.ConfigOpts]:
    """Build a private, parsed ``ConfigOpts`` from INI text (never the global CONF)."""

    def make(text: str = "") -> cfg.ConfigOpts:
        files = [str(write_conf(text))] if text else []
        return xconf.load(files)

    return make


@pytest.fixture
def plugin_manager():
    """A fresh pluggy manager holding xhost's hook specifications only."""
    return plugins.new_plugin_manager()

"""Fixtures of the image handler tests: a simulator, the local image service,
and an :class:`imagehost.ImageHost` per handler."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from imagehost import ImageHost, conf_text


@pytest.fixture
def hosts(simulator, make_conf, tmp_path):
    """``hosts(handler, **conf)`` -> an ImageHost on the test's simulator (all
    of a test's hosts share its image store)."""
    made = []

    def make(handler: str = "vdi_remote_stream", service: str = "local",
             glance: str | None = None, extra: str = "") -> ImageHost:
        conf = make_conf(conf_text(simulator, tmp_path, handler, service, glance, extra))
        host = ImageHost(simulator, conf)
        made.append(host)
        return host

    yield make
    for host in made:
        plugin = host.plugins.plugin("image_service")
        server = getattr(plugin, "_transfers", None)
        if server is not None:
            server.stop()
        host.client.close()

"""Fixtures of the rollback sweep and the crash tests (see ``sweepbed``)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sweepbed import bed_factory


@pytest.fixture
def make_bed(tmp_path, make_conf):
    """``make_bed(handler, backend, extras=False)``: a :class:`sweepbed.SpawnBed`."""
    yield from bed_factory(tmp_path, make_conf)

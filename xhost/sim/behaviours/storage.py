"""storage behaviours."""
from __future__ import annotations

"""placeholder"""
from __future__ import annotations


def install(host) -> None:
    return None

"""Shared pytest configuration: fixtures shipped in ``xhost.testing``."""

pytest_plugins = [
    "xhost.testing.conffixtures",
    "xhost.testing.realfixtures",
    "xhost.testing.simfixtures",
]

"""Shared pytest configuration: fixtures shipped in ``xhost.testing``."""

pytest_plugins = ["xhost.testing.simfixtures"]

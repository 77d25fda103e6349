"""Test harness shipped with xhost, for its own tests and for plugin authors.

Use the fixtures from a ``conftest.py``::

    pytest_plugins = ["xhost.testing.conffixtures"]
"""

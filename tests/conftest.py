"""Test-suite wide plugins: the real-component fixtures (netns, ovs, glance)."""
pytest_plugins = ["xhost.testing.realfixtures"]

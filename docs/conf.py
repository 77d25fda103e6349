"""Sphinx configuration for xhost's documentation (``tox -e docs``)."""
project = "xhost"
author = "xhost developers"
extensions = [
    "sphinx.ext.autodoc",
    "oslo_config.sphinxext",
    "stevedore.sphinxext",
]
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
master_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"
nitpicky = False

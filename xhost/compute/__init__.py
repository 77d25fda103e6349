"""Instances on a XAPI host: the compute API the CLI and plugins share."""

"""The ``xhost`` command line (cliff); commands come from the ``xhost.commands`` entry points."""

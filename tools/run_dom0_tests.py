#!/usr/bin/env python3
"""Run the dom0 tests (``tests/dom0``) with the interpreter running this file.

The dom0 scripts must work on the oldest dom0 Python (3.6), where neither
pytest nor tox's virtualenv is available, so the tests are unittest-based and
run by this stdlib-only runner. Unlike ``unittest discover`` on Python < 3.12,
it fails when no test ran.
"""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main():
    start = os.path.join(ROOT, "tests", "dom0")
    suite = unittest.defaultTestLoader.discover(start, pattern="test_*.py", top_level_dir=start)
    result = unittest.TextTestRunner(verbosity=1).run(suite)
    if result.testsRun == 0:
        sys.stderr.write("no dom0 tests were collected from %s\n" % start)
        return 5
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())

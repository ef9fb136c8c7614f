"""Helpers the tests share (command lines, tiny runs, servers, mounts, references); fixtures live
in the ``conftest.py`` files. The toy teachers stay in ``tests/toy_teachers.py``: teacher specs
name them as ``python:toy_teachers:...`` with ``tests/`` on the path."""

"""The ``main`` of every py_test in BUILD: runs the test files given as arguments
with pytest and exits with its status (Bazel runs a py_test's main as a script,
and a test file run as a script defines its tests but runs none)."""

import sys

import pytest

if __name__ == "__main__":
    # Runfiles are read-only: no cache directory.
    sys.exit(pytest.main(["-p", "no:cacheprovider", *sys.argv[1:]]))

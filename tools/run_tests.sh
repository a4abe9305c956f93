#!/usr/bin/env bash
# Sets up a fresh machine and runs the test suite: the README's test command.
#   bash tools/run_tests.sh [extra pytest arguments]
# PYTHON names the interpreter the virtual environment is made from (see
# tools/setup.sh); lint and tests run in that environment.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${DENSENAS_VENV:-.venv}"

bash tools/setup.sh test
PY="$VENV/bin/python"

echo "==> ruff"
"$PY" -m ruff check .
"$PY" -m ruff format --check .

echo "==> pytest"
# Two workers by default: much of a test is single-threaded Python and tracing.
"$PY" -m pytest -q -p no:cacheprovider -n "${DENSENAS_TEST_WORKERS:-2}" --dist worksteal \
    --durations=15 "$@" tests

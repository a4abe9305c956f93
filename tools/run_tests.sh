#!/usr/bin/env bash
# Sets up a fresh machine and runs the test suite: the README's test command.
#   bash tools/run_tests.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

bash tools/setup.sh test

echo "==> ruff"
"$PYTHON" -m ruff check .
"$PYTHON" -m ruff format --check .

echo "==> pytest"
"$PYTHON" -m pytest -q -p no:cacheprovider "$@" tests

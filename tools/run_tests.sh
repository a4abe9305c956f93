#!/usr/bin/env bash
# Sets up a fresh machine and runs the test suite: the README's test command.
#   bash tools/run_tests.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

# Fashion-MNIST comes from Debian's package (no download at run time).
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "==> installing Debian package dataset-fashion-mnist"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

echo "==> installing densenas-tf and its test tools"
"$PYTHON" -m pip install -q --disable-pip-version-check -e ".[test]"

echo "==> ruff"
"$PYTHON" -m ruff check .
"$PYTHON" -m ruff format --check .

echo "==> pytest"
"$PYTHON" -m pytest -q -p no:cacheprovider "$@" tests

#!/usr/bin/env bash
# Installs what densenas-tf needs on a fresh Debian machine: Debian's
# dataset-fashion-mnist (the built-in data; nothing is downloaded at run time)
# and this package with its dependencies (with [test] when given "test").
#   bash tools/setup.sh [test]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "==> installing Debian package dataset-fashion-mnist"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

EXTRA=""
if [ "${1:-}" = "test" ]; then EXTRA="[test]"; fi
echo "==> installing densenas-tf${EXTRA}"
"$PYTHON" -m pip install -q --disable-pip-version-check -e ".${EXTRA}"

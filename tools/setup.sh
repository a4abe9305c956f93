#!/usr/bin/env bash
# Installs what densenas-tf needs on a fresh Debian machine, as root or with
# sudo: Debian's dataset-fashion-mnist (the built-in data; nothing is
# downloaded at run time) and python3-venv where the Python lacks it, then a
# virtual environment in the checkout (.venv/) holding this package and its
# dependencies (with the test tools when given "test").
#   bash tools/setup.sh [test]
# PYTHON names the interpreter the environment is made from (default python3;
# Debian's /usr/bin/python3 works: its pip refuses system installs under
# PEP 668, so nothing is installed outside .venv/). DENSENAS_VENV moves the
# environment. Afterwards: source .venv/bin/activate
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${DENSENAS_VENV:-.venv}"

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
APT_UPDATED=""
apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "error: $* needed and there is no apt-get here; install it with the system's package manager" >&2
    exit 1
  fi
  if [ -z "$APT_UPDATED" ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
  echo "==> installing Debian package(s) $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  apt_install dataset-fashion-mnist
fi

if ! command -v "$PYTHON" >/dev/null; then
  echo "error: no Python interpreter '$PYTHON'; set PYTHON to a Python 3.10+ (e.g. PYTHON=/usr/bin/python3)" >&2
  exit 1
fi
BASE="$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.executable))')"

# An environment made from another interpreter (or broken) is made again.
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.densenas-base" 2>/dev/null)" = "$BASE" ] \
    && "$VENV/bin/python" -c 'import pip' 2>/dev/null; then
  :
else
  rm -rf "$VENV"
  if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian splits venv and ensurepip off its python3 package.
    apt_install "python3-venv"
  fi
  echo "==> creating the virtual environment $VENV from $BASE"
  if ! "$PYTHON" -m venv "$VENV"; then
    apt_install "python3-venv"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  echo "$BASE" > "$VENV/.densenas-base"
fi

EXTRA=""
if [ "${1:-}" = "test" ]; then EXTRA="[test]"; fi
echo "==> installing densenas-tf${EXTRA} into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".${EXTRA}"

#!/usr/bin/env bash
# The README's main job on a fresh machine: installs what is needed (see
# tools/setup.sh), then runs search -> derive -> retrain -> export -> measure
# on Fashion-MNIST (CPU) in the checkout's virtual environment.
#   bash tools/main_job.sh [--run_dir=runs/main] [other tools/main_job.py flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec "${DENSENAS_VENV:-.venv}/bin/python" tools/main_job.py "$@"

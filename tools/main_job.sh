#!/usr/bin/env bash
# The README's main job on a fresh machine: installs what is needed, then runs
# search -> derive -> retrain -> export -> measure on Fashion-MNIST (CPU).
#   bash tools/main_job.sh [--run_dir=runs/main] [other tools/main_job.py flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec "${PYTHON:-python3}" tools/main_job.py "$@"

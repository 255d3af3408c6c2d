#!/usr/bin/env bash
# Installs (scripts/setup.sh) and runs the offline Fashion-MNIST quickstart (teacher, student, KD).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m launch.quickstart --workdir "${1:-runs/quickstart}"

#!/usr/bin/env bash
# The main job: install xhost into .venv and run its demo on the embedded
# simulated XAPI host (no configuration needed).
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup-system.sh
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet .

exec .venv/bin/xhost demo "$@"

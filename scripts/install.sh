#!/usr/bin/env bash
# Creates .venv and installs bn-nerf with its test tools.
# torch and torchvision are pinned to the releases this project's machines hold in their local
# wheel cache (an unpinned torch pulls a multi-GB build); scripts/constraints.txt pins the rest to
# the set the test suite last passed with, which also spares pip minutes of resolver backtracking.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install --quiet -c scripts/constraints.txt -e ".[dev]"

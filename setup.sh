#!/usr/bin/env bash
# Create .venv and install the project with the versions its numbers were measured with.
# torch/torchvision are pinned explicitly (any other pair would download several GB here);
# requirements/constraints.txt pins the rest (pip freeze of the measured environment).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q --disable-pip-version-check -c requirements/constraints.txt -e ".[test]"
echo "setup: done; activate with: . .venv/bin/activate"

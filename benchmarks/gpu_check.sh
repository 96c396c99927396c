#!/usr/bin/env bash
# The GPU figures of issue 17, each beside the same script's CPU figure: SCVI vs CapVI vs
# VampVI seconds per epoch on pbmc4k (2,000 genes) and on 200k resampled cells, and the
# marginal-LL throughput (cell-samples per second) at 1,000 samples. Run from the repository
# root on a machine with a GPU; the CPU half runs the same commands with the GPU hidden, on
# every core (not yet timed: run the GPU half alone first if device time is short):
#
#   SCVI_CAPVI_DATA_DIR=../shared/data bash benchmarks/gpu_check.sh
#
# Writes benchmarks/results/{speed_epochs,marginal_ll_throughput}_{gpu,cpu}*.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=$(nproc)
run() {  # $1: gpu or cpu
  local acc=$1 env=()
  if [ "$acc" = cpu ]; then env=(CUDA_VISIBLE_DEVICES=); fi
  env "${env[@]}" python benchmarks/speed_epochs.py --dataset pbmc4k_10x_top2000 --epochs 3 \
    --accelerator "$acc" --threads "$threads" --tag "$acc"
  env "${env[@]}" python benchmarks/speed_epochs.py --dataset pbmc4k_10x_top2000 --epochs 2 \
    --resample 200000 --accelerator "$acc" --threads "$threads" --tag "${acc}_200k"
  env "${env[@]}" python benchmarks/marginal_ll_throughput.py --dataset pbmc4k_10x_top2000 \
    --n-mc-samples 1000 --n-cells 1000 --epochs 5 --repeats 2 --threads "$threads" --tag "$acc"
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
run gpu
run cpu

#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md in one run (about 5 minutes on one H200), for a machine with a CUDA
# GPU and this package installed (pip install -e . with a CUDA build of torch). Writes JSON files to $OUT (default
# gpu_check/) and prints the tables. Usage: bash scripts/gpu_check.sh [path to Multi30k, default ../shared/data/multi30k]
set -euo pipefail
data=${1:-../shared/data/multi30k}
out=${OUT:-gpu_check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# Isolated step, ours against MarianMT eager and compiled, at the 512 x 64 (bf16 and fp32, fused Adam).
vanilla-benchmark speed --device cuda --shapes base --batch-size 512 --length 64 --compile --skip-generation \
    --warmup 3 --repeats 10 --json "$out/speed_base_512x64.json"
# Generation (beam 4 and greedy) and memory for base and big at the default shapes.
vanilla-benchmark speed --device cuda --shapes base --warmup 1 --repeats 4 --json "$out/speed_base.json"
# The real loop: vanilla-train --preset base on Multi30k with 25k-token batches, compiled, beside its isolated step.
vanilla-benchmark loop --device cuda --data "$data" --preset base --max-tokens 25000 --vocab-size 8000 \
    --steps 120 --log-every 20 --train-option=--compile --json "$out/loop_base_25k.json"

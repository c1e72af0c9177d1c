#!/usr/bin/env bash
# One call on a lent GPU (minutes of device time, no network): install rnnfast without its dependencies
# (the machine's torch and triton are used), check the compiled kernels against cuDNN, then time the GPU
# grid most-wanted-first within a budget. Everything lands in $OUT (the device tool's output folder), or
# bench/results/gpu; the last lines printed are the summaries.
#
#   bash bench/gpu.sh                      # TEST_S=240 BENCH_S=240 SHARDS=8 by default (seconds)
#   TESTS="-k 768" BENCH_S=400 bash bench/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results/gpu}"
mkdir -p "$out"
command -v nvidia-smi >/dev/null || { echo "bench/gpu.sh: no nvidia-smi: not a GPU machine" >&2; exit 2; }
python3 -m pip install --quiet --no-deps --no-build-isolation -e . >"$out/install.log" 2>&1 \
    || { tail -20 "$out/install.log"; exit 1; }
{
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} >"$out/machine.txt" 2>&1
export TRITON_INTERPRET=0
# tests/test_cuda.py in SHARDS pytest processes at once (bench/pytest_shards.sh): Triton compiles the tests'
# kernels side by side; their GPU work is time-sliced between the processes, which a grid barrier (all
# programs of one launch resident) allows.
# shellcheck disable=SC2086  # TESTS holds pytest arguments
bash bench/pytest_shards.sh "$out" test_cuda ${TESTS:-} tests/test_cuda.py
# torch.nn against the Triton kernels only: "rnnfast" (auto) runs the same kernels on CUDA, and the PyTorch
# scan ("rnnfast-scan") is the CPU path; both would spend device minutes measuring nothing new.
python3 -m bench --full --time-budget "${BENCH_S:-240}" --out "$out" \
    --provider torch.nn --provider rnnfast-triton --provider torch.nn-packed --provider rnnfast-triton-lengths \
    --provider rnnfast-triton-packed >"$out/bench.log" 2>&1
echo "bench exit status $?" >>"$out/bench.log"
cat "$out/machine.txt"
cat "$out/test_cuda.log"
grep -A 60 "Measured against the latency MODEL" "$out/bench.log" | head -70
tail -3 "$out/bench.log"

#!/usr/bin/env bash
# Every GPU check and timing of ponder.local in one call, within 8 minutes on an H100:
#   1. the GPU tests: captured CUDA graphs vs the same steps run eagerly, bf16 greedy identity, a
#      stop found on the GPU (tests/local/test_device_loop_gpu.py), and the Triton kernels exact
#      against their references (tests/kernel_tests/test_triton_gpu.py);
#   2. benchmarks/gpu_bench.py: bandwidth, kernel checks and times, and the engine end to end
#      through Engine.generate_ids (the device loop) at the 8B, 1.7B and 135M shapes, with HF.
#
# On the lent device (repository root), with pydantic and its helpers carried as wheels in .whl
# (`import ponder` needs them; the device image lacks them, see benchmarks/results/gpu.md):
#   OUT=$OUT bash benchmarks/gpu_check.sh
# A dry run of the logic on a CPU:
#   OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh --device cpu --tiny --no-hf
# Extra arguments go to gpu_bench.py. Everything printed also lands in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
{
  date -u; git rev-parse --short HEAD 2>/dev/null || true
  nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv 2>/dev/null || echo "no nvidia-smi"
  echo "## GPU tests"
  timeout 170 python3 -m pytest -q -m gpu -p no:cacheprovider \
    tests/local/test_device_loop_gpu.py tests/kernel_tests/test_triton_gpu.py 2>&1 | tail -25
  echo "## benchmark"
  timeout 290 python3 benchmarks/gpu_bench.py --budget-s 270 --out "$OUT" "$@" 2>&1 | tail -120
} 2>&1 | tee "$OUT/gpu_check.txt"

#!/usr/bin/env bash
# Every GPU check and timing of ponder.local in one call, within 8 minutes on an H100:
#   1. the GPU tests, one PASSED/FAILED line each as they run: captured CUDA graphs vs the same
#      steps run eagerly, bf16 greedy identity, a stop found on the GPU, graphs captured when the
#      engine is built and never in a burst, Gemma's head_dim 256 in float32, cuda:1 (with two
#      GPUs) (tests/local/test_device_loop_gpu.py); the Triton kernels exact against their
#      references, head_dim 256 in both dtypes, a 16k prefill without split-KV scratch
#      (tests/kernel_tests/test_triton_gpu.py);
#   2. benchmarks/gpu_bench.py: bandwidth, kernel checks and times, and the engine end to end
#      through Engine.generate_ids (the device loop) at the 8B, 1.7B and 135M shapes, with HF.
#      Each row is printed as a Markdown table row the moment it is measured, and each target
#      as a "checks" row, PASS or FAIL: 8B target-only >= 80% of copy bandwidth, speculative >=
#      90% of the Leviathan prediction (timed on the engine's own forward), sampled within 15% of
#      greedy, bf16 greedy bit-identical, no graph captured inside a timed run (capture time per
#      engine in each row). A run cut short still shows (and leaves in $OUT) what it measured.
#
# The device image has torch (CUDA), Triton and transformers, no registry: `import ponder` needs
# pydantic and its helpers as wheels in .whl, made here by benchmarks/gpu_wheels.sh (git ignores
# .whl, so the run carries it):
#   bash benchmarks/gpu_wheels.sh
#   run(command="OUT=$OUT bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
# A dry run of the logic on a CPU:
#   OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh --device cpu --tiny --no-hf
# Extra arguments go to gpu_bench.py. Everything printed also lands in $OUT/gpu_check.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
{
  date -u; git rev-parse --short HEAD 2>/dev/null || true
  nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import ponder.local._engine" || echo "FAIL: import ponder.local (are the .whl wheels carried?)"
  echo "## GPU tests"
  timeout 170 python3 -m pytest -v -m gpu -p no:cacheprovider --no-header -o console_output_style=classic \
    tests/local/test_device_loop_gpu.py tests/kernel_tests/test_triton_gpu.py 2>&1 \
    | grep --line-buffered -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed|skipped|error|no tests ran|^E " | cut -c1-300
  echo "## benchmark"
  timeout 290 python3 benchmarks/gpu_bench.py --budget-s 270 --out "$OUT" "$@" 2>&1
} 2>&1 | tee "$OUT/gpu_check.txt"

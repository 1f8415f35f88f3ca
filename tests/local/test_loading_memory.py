"""Loading streams: host memory never holds a second copy of the weights (issue 15, part 2).

Each load runs in a fresh subprocess (a high-water mark cannot be reset); the bound is on the
growth of RSS from just before ``load_model`` to its peak, so it covers every temporary of the
load (dequantised blocks, the tokenizer) but not the torch runtime itself. The issue's 1.3x
target is measured in benchmarks/bench_local_load.py (1.12-1.28x, next to llama.cpp); the test's
bound, 1.5x, leaves room for allocators that differ between machines and still fails on a
second full copy (2x and more) or on the old path (1.85x fp32, 4.2x bf16).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test here takes a second or more on 2 cores (see the README: fast lane)

pytest.importorskip("torch")

CHILD = r"""
import json, sys
import torch
from ponder.local import load_model
def rss(key="VmRSS"):
    with open("/proc/self/status") as f:
        return int(f.read().split(key + ":")[1].split()[0]) * 1024
before = rss()
model, tok = load_model(sys.argv[1], dtype=getattr(torch, sys.argv[2]))
weights = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
peak = rss("VmHWM")  # this process's own high-water mark (ru_maxrss would include the parent's before exec)
print(json.dumps({"before": before, "peak": peak, "weights": weights, "dtype": str(model.dtype)}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for RSS")
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_smollm_load_holds_no_second_copy_of_the_weights(smollm_gguf: Path, dtype: str) -> None:
    out = subprocess.run([sys.executable, "-c", CHILD, str(smollm_gguf), dtype], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["dtype"] == f"torch.{dtype}"
    growth = r["peak"] - r["before"]
    assert growth <= 1.5 * r["weights"], f"peak grew {growth / 2**20:.0f} MB for {r['weights'] / 2**20:.0f} MB of weights"

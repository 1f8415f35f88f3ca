"""``benchmarks/gpu_bench.py --device cpu --tiny`` end to end: the e2e section times the public
``Engine.generate_ids`` (same device loop as on a GPU, without graph capture) and its table holds
every row the GPU run reports. Numbers are not checked (CPU timings say nothing); the structure,
the identities and the internal consistency of each row are."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # each test here takes a second or more on 2 cores (see the README: fast lane)

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_bench.py"
N = 32  # --tiny caps new tokens (and loop=host tokens) at 32


def check_rows(rows: list[dict[str, Any]]) -> None:
    """What a ``--device cpu --tiny`` run must have produced (also usable on a GPU run's rows)."""
    failed = [r for r in rows if str(r.get("status", "")).startswith("not run")]
    assert not failed, failed
    e2e = {r["mode"]: r for r in rows if r["section"] == "e2e"}
    tg, sg = "target-only greedy", "spec greedy layers:1 k=4"
    ts, ss = "target-only sampled T=0.7 top-p=0.9", "spec sampled layers:1 k=4 T=0.7 top-p=0.9"
    host = [f"{tg}, loop=host", f"{sg}, loop=host"]
    assert sorted(e2e) == sorted([tg, sg, ts, ss, *host])
    for mode, r in e2e.items():
        assert r["loop"] == ("host" if mode in host else "device"), r
        assert r["new_tokens"] == N, r
        assert r["tok_s"] > 0 and r["wall_tok_s"] > 0, r
        # decode tok/s = (new_tokens - 1) / decode time = tokens_per_step / time per step
        assert r["tok_s"] == pytest.approx(1e3 * r["tokens_per_step"] / r["ms_per_step"], rel=0.02)
        assert r["repeat_identical"] is True, r  # same seed, same tokens: replay is reproducible
        assert r["capture_in_timed_run"] is False, r  # engines capture when built, never while timed
    for mode in (tg, ts, host[0]):
        assert e2e[mode]["target_steps"] == N - 1 and e2e[mode]["accept_rate"] == "", e2e[mode]
    for mode in (sg, ss, host[1]):
        r = e2e[mode]
        assert r["target_steps"] < N - 1 and 0 < r["accept_rate"] <= 1, r
    for mode in (sg, *host):
        assert e2e[mode]["greedy_identical_to_target"] is True, e2e[mode]
        assert e2e[mode]["first_divergence"] == N, e2e[mode]
    assert e2e[tg]["GBs"] > 0 and e2e[tg]["pct_copy_bw"] > 0
    assert e2e[sg]["speedup_vs_target_only"] == pytest.approx(e2e[sg]["tok_s"] / e2e[tg]["tok_s"], rel=0.02)  # fmt: skip
    lev = {r["mode"]: r for r in rows if r["section"] == "leviathan"}
    assert sorted(lev) == sorted([sg, ss])
    for mode, r in lev.items():
        assert r["draft_ms"] > 0 and r["verify_ms"] > 0 and r["target_ms"] > 0, r
        assert r["measured_tok_s"] == e2e[mode]["tok_s"]
        assert r["same_forward_as_run"] is True and r["forward"] == e2e[mode]["forward"], r
        predicted = r["tokens_per_step"] / (4 * r["draft_ms"] + r["verify_ms"]) * 1e3
        assert r["predicted_tok_s"] == pytest.approx(predicted, rel=0.02)
    (cmp,) = [r for r in rows if r["section"] == "sampled vs greedy"]
    assert cmp["greedy_accept"] == e2e[sg]["accept_rate"]
    assert cmp["sampled_accept"] == e2e[ss]["accept_rate"]
    ratio = cmp["sampled_ms_per_step"] / cmp["greedy_ms_per_step"]
    assert cmp["step_time_ratio"] == pytest.approx(ratio, rel=0.02)
    assert cmp["within_15pct"] is (cmp["step_time_ratio"] <= 1.15)
    checks = {r["check"]: r["result"] for r in rows if r["section"] == "checks"}
    assert checks[f"tiny: {sg} >= 90% of the Leviathan prediction"] in ("PASS", "FAIL")
    assert all(checks[f"tiny: {m}: no graph captured inside the timed run"] == "PASS" for m in e2e)
    assert checks["tiny: torch.float32 speculative greedy == target-only greedy"] == "PASS"


def test_cpu_tiny_run_times_the_engine(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    args = ["--device", "cpu", "--tiny", "--no-hf", "--out", str(tmp_path), "--budget-s", "300"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())
    check_rows(rows)
    table = (tmp_path / "table.md").read_text()
    for section in ("## e2e", "## leviathan", "## sampled vs greedy"):
        assert section in table


def _load_gpu_bench() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_bench_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_leviathan_prediction_times_the_forward_the_engine_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The draft/verify/target step times behind "% of predicted" must come from the forward the
    timed ``generate_ids`` runs: the same layer path (fused kernels or torch layers), kernels and
    cache capacity. Under the Triton backend (the interpreter here, as on a GPU) the engine fuses
    its layers; a prediction timed on the plain model, or on caches of another size, differs."""
    pytest.importorskip("triton")
    import torch

    from ponder.local import _model
    from ponder.local._engine import Engine

    bench = _load_gpu_bench()
    phase = ["other"]
    seen: dict[str, set[tuple[Any, ...]]] = {"steps": set(), "run": set()}
    real_forward = _model.Transformer.forward

    def forward(self: Any, tokens: Any, start_pos: Any, n_layers: Any = None, last_only: bool = False) -> Any:
        if not isinstance(start_pos, int):  # a step at device-tensor positions (what graphs replay)
            path = "fused" if self.fused and self.fusable else "torch layers"
            sig = (tokens.shape[1], n_layers, path, self.ops.name, self.caches[0].k.shape[2])
            seen.setdefault(phase[0], set()).add(sig)
        return real_forward(self, tokens, start_pos, n_layers, last_only)

    def in_phase(name: str, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            phase[0] = name
            try:
                return fn(*args, **kwargs)
            finally:
                phase[0] = "other"

        return wrapped

    monkeypatch.setattr(_model.Transformer, "forward", forward)
    monkeypatch.setattr(bench, "step_times", in_phase("steps", bench.step_times))
    monkeypatch.setattr(Engine, "generate_ids", in_phase("run", Engine.generate_ids))
    opt = argparse.Namespace(
        k=2, draft_fraction=0.25, residual_scale=0.2, prompt_len=8, new_tokens=6, temperature=0.7, top_p=1.0,
        host=False, host_tokens=6, hf=False, deadline=float("inf"), backend="triton", step_reps=1, long_prompt=0,
    )  # fmt: skip
    bench.section_e2e("tiny", bench.TINY, torch.device("cpu"), {}, opt)
    assert not [r for r in bench.ROWS if "status" in r], [r for r in bench.ROWS if "status" in r]
    assert {(1, 1), (3, None), (1, None)} <= {s[:2] for s in seen["steps"]}  # draft, verify, target
    assert seen["steps"] <= seen["run"], (seen["steps"] - seen["run"], seen["run"])
    assert {s[2] for s in seen["steps"]} == {"fused"}, seen["steps"]
    lev = [r for r in bench.ROWS if r["section"] == "leviathan"]
    assert len(lev) == 2 and all(r["same_forward_as_run"] is True for r in lev), lev

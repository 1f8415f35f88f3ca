"""SmolLM2-135M-Instruct's GGUF (Llama layout, Q4_1) against transformers reading the same GGUF itself.

test_local_smollm.py compares with transformers on ponder's own dequantised export; here the
reference dequantises and un-permutes with transformers' GGUF reader, independently of ponder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ponder.local._engine import Engine  # noqa: E402

from ._hfref import hf_from_gguf, hf_greedy  # noqa: E402

pytestmark = pytest.mark.slow  # each test here takes a second or more on 2 cores (see the README: fast lane)

PROMPTS = ["The capital of France is", "def fibonacci(n):\n    "]
N = 16


def test_smollm_greedy_tokens_match_transformers_reading_the_gguf(smollm, smollm_gguf: Path) -> None:
    hf = hf_from_gguf(smollm_gguf)
    model, tok = smollm
    for text in PROMPTS:
        ids = tok.encode(text)
        want = hf_greedy(hf, ids, N)
        got, _, _ = Engine(model, tok).generate_ids(ids, N, stop_ids=())
        assert got == want, (tok.decode(got), tok.decode(want))

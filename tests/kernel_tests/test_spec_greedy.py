"""Greedy speculative decoding through the Triton kernels == target-only greedy decoding.

The engine runs with ``backend="triton"`` (interpreter on CPU, fp32; compiled on a GPU), so the
fused verification, the sampler and the verification attention are all on the path. The random
target's layers after the draft's cut are damped so that the layer-cut draft is right often
enough for long accepted runs, rejections and bonus tokens all to occur.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install 'ponder[triton]')")
if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA and TRITON_INTERPRET is not 1", allow_module_level=True)

from ponder.local._drafters import ModelDrafter, NgramDrafter  # noqa: E402
from ponder.local._engine import Engine  # noqa: E402
from ponder.local._model import ModelArgs, Transformer  # noqa: E402
from ponder.local._sampling import SamplingParams  # noqa: E402

pytestmark = pytest.mark.slow  # each test here takes a second or more on 2 cores (see the README: fast lane)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _model(seed: int) -> Transformer:
    torch.manual_seed(seed)
    args = ModelArgs(vocab_size=300, dim=64, n_layers=3, n_heads=4, n_kv_heads=2,
                     intermediate_size=128, max_position=256)  # fmt: skip
    model = Transformer(args).to(DEVICE).eval()
    with torch.no_grad():
        for layer in model.layers[1:]:
            layer.attention.wo.weight.mul_(0.3)
            layer.feed_forward.w2.weight.mul_(0.3)
    return model


@pytest.mark.parametrize(("draft", "k"), [("layers:1", 3), ("ngram", 4)])
def test_greedy_speculative_through_kernels_equals_target_only(draft: str, k: int):
    model = _model(seed=0)
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, 300, (12,), generator=g).tolist()
    prompt = prompt + prompt[:6]  # a repeat gives the n-gram drafter something to copy
    greedy = SamplingParams(temperature=0.0)
    plain, _, _ = Engine(model, backend="triton").generate_ids(prompt, 40, greedy, stop_ids=())
    drafter = ModelDrafter.layers(model, 1) if draft == "layers:1" else NgramDrafter(300)
    engine = Engine(model, drafter=drafter, k=k, backend="triton")
    spec, _, stats = engine.generate_ids(prompt, 40, greedy, stop_ids=())
    assert model.ops.name == "triton"
    assert spec == plain
    assert len(set(plain)) > 3  # not a degenerate repetition
    assert stats.drafted > 0
    if draft == "layers:1":
        assert 0 < stats.accepted < stats.drafted  # both acceptances and rejections happened

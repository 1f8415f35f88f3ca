"""The engine through the Triton dispatch (interpreter on CPU, kernels on CUDA) stays lossless."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from ponder.local._engine import Engine, make_drafter  # noqa: E402

from .conftest import tiny_model  # noqa: E402

PROMPT = [5, 9, 12, 40, 7, 33, 5, 9, 12, 40, 21, 3, 5, 9, 12]


@pytest.mark.parametrize("draft", ["ngram", "layers:2"])
def test_greedy_speculative_through_triton_ops_equals_torch_target_only(draft: str) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = tiny_model(seed=0, dtype=torch.float32).to(device)
    expected, _, _ = Engine(model, backend="torch").generate_ids(PROMPT, 10, stop_ids=())
    engine = Engine(model, drafter=make_drafter(draft, model), k=3, backend="triton")
    got, _, stats = engine.generate_ids(PROMPT, 10, stop_ids=())
    assert model.ops.name == "triton"
    assert got == expected and stats.drafted > 0

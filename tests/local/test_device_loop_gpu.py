"""The device loop on a GPU: captured CUDA graphs give the tokens the uncaptured loop gives
(``pytest -m gpu tests/local``; skipped without CUDA, and owed where no GPU was lent)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
pytest.importorskip("triton", reason="triton is not installed")

from ponder.local._device_loop import DeviceLoop  # noqa: E402
from ponder.local._drafters import ModelDrafter  # noqa: E402
from ponder.local._engine import Engine, make_drafter  # noqa: E402
from ponder.local._sampling import SamplingParams  # noqa: E402

from .conftest import tiny_model  # noqa: E402

PROMPT = [5, 9, 12, 40, 7, 33, 5, 9, 12, 40, 21, 3, 17, 5, 9, 2, 50, 61, 5, 9, 12]


def cuda_model(seed: int = 0, **kw):  # type: ignore[no-untyped-def]
    return tiny_model(seed=seed, dtype=torch.bfloat16, **kw).cuda()


@pytest.mark.parametrize("draft", [None, "ngram", "layers:2", "model"])
@pytest.mark.parametrize("params", [SamplingParams(), SamplingParams(temperature=0.8, top_p=0.9)])
def test_graphs_replay_what_the_uncaptured_loop_computes(draft: str | None, params: SamplingParams, monkeypatch: pytest.MonkeyPatch) -> None:
    target = cuda_model()
    drafter = ModelDrafter(cuda_model(seed=99, dim=32, n_layers=2, n_heads=2, n_kv_heads=1), 64) if draft == "model" else make_drafter(draft, target)
    engine = Engine(target, drafter=drafter, k=3)
    assert engine.loop == "device+graphs" and target.fused
    first = engine.generate_ids(PROMPT, 64, params, seed=3, stop_ids=())[0]  # captures
    again = engine.generate_ids(PROMPT, 64, params, seed=3, stop_ids=())[0]  # replays
    assert first == again and len(first) == 64
    monkeypatch.setattr(DeviceLoop, "_capture", lambda self, fn: fn)  # the same steps, run eagerly
    eager = Engine(target, drafter=drafter, k=3).generate_ids(PROMPT, 64, params, seed=3, stop_ids=())[0]
    assert eager == first
    if params.greedy:  # bf16 greedy: speculative == target-only, bit for bit (batch invariance)
        assert first == Engine(target).generate_ids(PROMPT, 64, params, stop_ids=())[0]


def test_a_stop_token_found_on_the_gpu_ends_the_answer() -> None:
    target = cuda_model()
    engine = Engine(target, drafter=make_drafter("layers:2", target), k=3)
    free = engine.generate_ids(PROMPT, 40, stop_ids=())[0]
    stop = free[20]
    got, reason, _ = engine.generate_ids(PROMPT, 40, stop_ids=[stop])
    assert (got, reason) == (free[: free.index(stop)], "stop")


def test_graphs_are_captured_when_the_engine_is_built_and_never_in_a_burst() -> None:
    target = cuda_model()
    engine = Engine(target, drafter=make_drafter("layers:2", target), k=3, streams=2, context=256)
    sets = list(engine._caches._free)
    assert len(sets) == 2 and engine.capture_s > 0
    before = [c.loop.captures for c in sets]
    for _ in range(2):  # two bursts, each of two interleaved streams (greedy and sampled)
        streams = [engine.stream(PROMPT, 40, p, seed=i, stop_ids=()) for i, p in enumerate((SamplingParams(), SamplingParams(temperature=0.8, top_p=0.9)))]
        live = list(streams)
        while live:
            for s in list(live):
                try:
                    next(s)
                except StopIteration:
                    live.remove(s)
        assert all(s.stats.capture_s == 0 for s in streams)
    assert [c.loop.captures for c in sets] == before


def test_gemma_heads_of_256_in_float32_run() -> None:
    """Gemma 3's head dimension in float32 (the attention kernel's tiles must fit shared memory)."""
    from ponder.local._model import ModelArgs, Transformer

    args = ModelArgs(
        vocab_size=64, dim=128, n_layers=2, n_heads=2, n_kv_heads=1, intermediate_size=256, head_dim=256,
        qk_norm=True, gemma=True, tie_embeddings=True, max_position=1024, sliding_window=8,
        sliding_layers=(True, False), rope_theta=1e6,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Transformer(args).float().cuda().eval().requires_grad_(False)
    host = Engine(model, loop="host", backend="triton").generate_ids(PROMPT, 16, stop_ids=())[0]
    device = Engine(model, k=3, drafter=make_drafter("layers:1", model)).generate_ids(PROMPT, 16, stop_ids=())[0]
    assert len(host) == 16 and len(device) == 16


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_a_model_on_the_second_gpu_decodes_there() -> None:
    base = tiny_model(seed=0, dtype=torch.bfloat16)
    want = Engine(base.cuda(0), k=3).generate_ids(PROMPT, 24, stop_ids=())[0]
    torch.cuda.set_device(0)
    got = Engine(tiny_model(seed=0, dtype=torch.bfloat16).to("cuda:1"), k=3).generate_ids(PROMPT, 24, stop_ids=())[0]
    assert got == want

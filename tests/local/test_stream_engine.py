"""``Engine.stream``: tokens step by step, and streams on one engine advanced in turn (each with its
own KV cache) give exactly what each gives alone."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from ponder.local._drafters import ModelDrafter  # noqa: E402
from ponder.local._engine import Engine, make_drafter  # noqa: E402
from ponder.local._sampling import SamplingParams  # noqa: E402

from .conftest import tiny_model  # noqa: E402

PROMPTS = [
    [5, 9, 12, 40, 7, 33, 5, 9, 12, 40, 21, 3, 17, 5, 9, 2, 50, 61, 5, 9, 12],
    [1, 2, 3, 4, 1, 2, 3],
    [60, 61, 62, 63, 10, 11, 60, 61, 62, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 60, 61],
]


def engine_with(draft: str | None) -> Engine:
    target = tiny_model(seed=4)
    if draft == "model":
        drafter = ModelDrafter(tiny_model(seed=98, dim=32, n_layers=2, n_heads=2, n_kv_heads=1), 64)
    else:
        drafter = make_drafter(draft, target)
    return Engine(target, drafter=drafter, k=3, adaptive=True)


@pytest.mark.parametrize("draft", [None, "ngram", "layers:2", "model"])
def test_stream_yields_each_step_and_joins_to_generate_ids(draft: str | None) -> None:
    engine = engine_with(draft)
    whole, reason, stats = engine.generate_ids(PROMPTS[0], 40, stop_ids=())
    stream = engine.stream(PROMPTS[0], 40, stop_ids=())
    chunks = list(stream)
    assert [t for c in chunks for t in c] == whole and len(whole) == 40
    assert chunks[0] == whole[:1]  # the first token comes alone, right after prefill
    assert len(chunks) == stream.stats.target_steps + 1  # then one chunk per target pass
    assert stream.finish_reason == reason == "length"
    assert stream.stats.new_tokens == stats.new_tokens == 40
    if draft is not None:
        assert stream.stats.drafted > 0


@pytest.mark.slow
@pytest.mark.parametrize("draft", [None, "ngram", "layers:2", "model"])
@pytest.mark.parametrize("greedy", [True, False])
def test_streams_advanced_in_turn_equal_each_stream_alone(draft: str | None, greedy: bool) -> None:
    engine = engine_with(draft)
    params = SamplingParams() if greedy else SamplingParams(temperature=0.9, top_p=0.95)
    lengths = [30, 45, 12]  # different cache sizes, so the caches cannot be mixed up silently
    alone = [engine.generate_ids(p, n, params, seed=i, stop_ids=())[0] for i, (p, n) in enumerate(zip(PROMPTS, lengths, strict=True))]
    streams = [engine.stream(p, n, params, seed=i, stop_ids=()) for i, (p, n) in enumerate(zip(PROMPTS, lengths, strict=True))]
    got: list[list[int]] = [[] for _ in streams]
    live = set(range(len(streams)))
    while live:  # round robin, one step each, as the provider's worker does
        for i in sorted(live):
            try:
                got[i] += next(streams[i])
            except StopIteration:
                live.discard(i)
    assert got == alone


def test_a_stream_closed_early_frees_its_cache_for_the_next() -> None:
    expected = engine_with("layers:2").generate_ids(PROMPTS[1], 20, stop_ids=())[0]
    engine = engine_with("layers:2")
    stream = engine.stream(PROMPTS[0], 40, stop_ids=())
    next(stream), next(stream)
    stream.close()
    [freed] = engine._caches._free  # given back on close
    assert engine.generate_ids(PROMPTS[1], 20, stop_ids=())[0] == expected  # a used cache is fine
    assert engine._caches._free == [freed]  # reused, not reallocated


def test_a_stop_token_ends_the_stream_without_being_yielded() -> None:
    engine = engine_with("ngram")
    full = engine.generate_ids(PROMPTS[0], 40, stop_ids=())[0]
    stop = full[7]
    stream = engine.stream(PROMPTS[0], 40, stop_ids=[stop])
    tokens = [t for c in stream for t in c]
    assert tokens == full[: full.index(stop)] and stream.finish_reason == "stop"

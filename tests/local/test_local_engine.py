"""Greedy speculative decoding is token-for-token identical to target-only greedy decoding."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from ponder._exceptions import ConfigError, ContextTooLong  # noqa: E402
from ponder.local._drafters import ModelDrafter, NgramDrafter  # noqa: E402
from ponder.local._engine import Engine, make_drafter  # noqa: E402

from .conftest import tiny_model  # noqa: E402

# A prompt with repeats, so prompt lookup finds matches; positions reach past 60.
PROMPT = [5, 9, 12, 40, 7, 33, 5, 9, 12, 40, 21, 3, 17, 5, 9, 2, 50, 61, 5, 9, 12]

VARIANTS = {
    "gqa": dict(seed=0),
    "mha-tied": dict(seed=1, n_kv_heads=4, tie=True),
    "qwen2-bias": dict(seed=2, qkv_bias=True, n_kv_heads=1),
}


def greedy(engine: Engine, max_tokens: int = 48) -> list[int]:
    tokens, reason, stats = engine.generate_ids(PROMPT, max_tokens, stop_ids=())
    assert reason == "length" and stats.new_tokens == len(tokens) == max_tokens
    return tokens


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("draft", ["ngram", "layers:1", "layers:3", "model"])
@pytest.mark.parametrize("k,adaptive", [(1, False), (3, False), (5, True)])
def test_greedy_speculative_equals_target_only(variant: str, draft: str, k: int, adaptive: bool) -> None:
    target = tiny_model(**VARIANTS[variant])
    expected = greedy(Engine(target))
    if draft == "model":  # an independent small draft model with the same vocabulary
        drafter = ModelDrafter(tiny_model(seed=99, dim=32, n_layers=2, n_heads=2, n_kv_heads=1), 64)
    else:
        drafter = make_drafter(draft, target)
    engine = Engine(target, drafter=drafter, k=k, adaptive=adaptive)
    got, _, stats = engine.generate_ids(PROMPT, 48, stop_ids=())
    assert got == expected
    assert stats.drafted > 0 and stats.target_steps <= 48


def test_draft_equal_to_target_accepts_everything_and_needs_fewer_target_passes() -> None:
    target = tiny_model(seed=3)
    twin = tiny_model(seed=3)
    expected = greedy(Engine(target))
    engine = Engine(target, drafter=ModelDrafter(twin, 64), k=4, adaptive=False)
    got, _, stats = engine.generate_ids(PROMPT, 48, stop_ids=())
    assert got == expected
    assert stats.acceptance_rate == 1.0
    assert stats.target_steps == 10  # ceil(47 / 5): each pass emits 4 drafts + 1 bonus token
    assert stats.mean_accepted == pytest.approx(stats.accepted / 10)


def test_prompt_lookup_copies_what_followed_the_latest_match() -> None:
    from ponder.local._sampling import Noise, SamplingParams

    lookup, params, noise = NgramDrafter(16), SamplingParams(), Noise(0, torch.device("cpu"))
    seq = torch.tensor([[1, 2, 3, 4, 5, 9, 1, 2, 3, 7, 8, 6, 1, 2, 3]])
    draft, q = lookup.propose(seq, 3, params, noise)
    assert draft.tolist() == [[7, 8, 6]]  # the latest earlier "1 2 3" was followed by 7 8 6
    assert torch.equal(q, torch.nn.functional.one_hot(draft, 16).float())
    draft, _ = lookup.propose(torch.tensor([[4, 5, 6, 7, 5]]), 4, params, noise)
    assert draft.tolist() == [[6, 7, 5]]  # falls back to a 1-gram match, clipped at the end
    draft, q = lookup.propose(torch.tensor([[1, 2, 3]]), 4, params, noise)
    assert draft.shape == (1, 0) and q.shape == (1, 0, 16)  # no match: no draft


def test_stop_tokens_end_generation_and_are_not_returned() -> None:
    target = tiny_model(seed=0)
    full = greedy(Engine(target))
    stop = full[10]
    first = full.index(stop)
    for drafter in (None, make_drafter("layers:2", target)):
        tokens, reason, _ = Engine(target, drafter=drafter, k=4).generate_ids(PROMPT, 48, stop_ids=[stop])
        assert reason == "stop" and tokens == full[:first]


def test_seeded_sampling_is_reproducible_and_respects_max_tokens() -> None:
    from ponder.local._sampling import SamplingParams

    target = tiny_model(seed=4)
    params = SamplingParams(temperature=0.9, top_k=20, top_p=0.95)
    engine = Engine(target, drafter=make_drafter("layers:2", target), k=3)
    a, _, sa = engine.generate_ids(PROMPT, 33, params, seed=7, stop_ids=())
    b, _, _ = engine.generate_ids(PROMPT, 33, params, seed=7, stop_ids=())
    c, _, _ = engine.generate_ids(PROMPT, 33, params, seed=8, stop_ids=())
    assert a == b and a != c and len(a) == 33
    assert 0 < sa.acceptance_rate < 1


def test_bad_draft_specs_and_context_overflow_are_clear_errors() -> None:
    target = tiny_model(seed=0)
    with pytest.raises(ConfigError, match="layers:N"):
        make_drafter("layers:x", target)
    with pytest.raises(ConfigError, match="0 < N < 4"):
        make_drafter("layers:4", target)
    with pytest.raises(ConfigError, match="neither 'ngram'"):
        make_drafter("/no/such/draft.gguf", target)
    with pytest.raises(ContextTooLong, match="exceed the context"):
        Engine(target).generate_ids(PROMPT, 2000)

"""Sampled speculative output has exactly the target's distribution (chi-square, many samples).

One speculative step runs on a batch of identical contexts (B rows), so tens of thousands of
independent samples cost one draft/verify pass. The first two emitted tokens are compared with
the exact joint distribution p(t1) p(t2 | t1) of the (warped) target on a small vocabulary; when
a row emitted only one token, its second comes from the target itself, as the next step would.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
stats = pytest.importorskip("scipy.stats")

from ponder.local._drafters import ModelDrafter, NgramDrafter  # noqa: E402
from ponder.local._sampling import Noise, SamplingParams, probs, sample  # noqa: E402
from ponder.local._speculative import speculative_step  # noqa: E402

from .conftest import tiny_model  # noqa: E402

V = 8
PROMPT = [1, 5, 2, 7, 1, 5, 2, 7, 1, 5]  # repeats: prompt lookup proposes "2 7 1 ..."
B = 8_000
PARAMS = {
    "t1": SamplingParams(temperature=1.0),
    "t0.7-topk3": SamplingParams(temperature=0.7, top_k=3),
    "t1.3-topp0.8": SamplingParams(temperature=1.3, top_p=0.8),
}


def target_model():
    return tiny_model(seed=11, vocab=V, dim=32, n_layers=3, n_heads=4, n_kv_heads=2, std=0.5, dtype=torch.float32)


def make_drafter(kind: str, target):
    if kind == "model":
        draft = tiny_model(seed=12, vocab=V, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, std=0.5, dtype=torch.float32)
        return ModelDrafter(draft, V)
    if kind == "layers:1":
        return ModelDrafter.layers(target, 1)
    return NgramDrafter(V)


def exact_joint(target, params: SamplingParams) -> torch.Tensor:
    """(V, V): p(t1) * p(t2 | t1) of the warped target, by enumerating t1."""
    L = len(PROMPT)
    target.setup_caches(V, L + 4)
    seqs = torch.tensor(PROMPT).repeat(V, 1)
    seqs = torch.cat([seqs, torch.arange(V)[:, None]], dim=1)
    logits = target(seqs, 0)
    p1 = probs(logits[:1, L - 1], params)[0]
    p2 = probs(logits[:, L], params)
    return p1[:, None] * p2


def speculative_joint(target, drafter, params: SamplingParams, k: int, seed: int) -> torch.Tensor:
    """(B, 2) first two tokens after PROMPT, sampled with one speculative step per row."""
    L = len(PROMPT)
    target.setup_caches(B, L + k + 4)
    seq = torch.zeros(B, L + k + 4, dtype=torch.long)
    seq[:, :L] = torch.tensor(PROMPT)
    target(seq[:, : L - 1], 0)  # prefill: the last prompt token stays pending
    drafter.reset(L + k + 4, L - 1, batch=B)
    noise = Noise(seed, torch.device("cpu"))
    out, n_accepted, drafted = speculative_step(target, drafter, seq, L, k, params, noise)
    assert drafted == k
    first = out[:, 0]
    # Rows that emitted one token continue like the engine would: one plain target step.
    nxt = sample(target.ops, target(first[:, None], L, last_only=True)[:, -1], params, noise)
    second = torch.where(n_accepted >= 1, out[:, 1], nxt)
    assert ((n_accepted == 0) | (out[:, 1] >= 0)).all()
    return torch.stack([first, second], dim=1), n_accepted


def chi_square_pvalue(samples: torch.Tensor, joint: torch.Tensor) -> float:
    counts = torch.bincount(samples[:, 0] * V + samples[:, 1], minlength=V * V).double()
    expected = joint.flatten().double() * samples.shape[0]
    assert counts[expected == 0].sum() == 0, "sampled a sequence the target gives probability 0"
    big = expected >= 5  # pool rare cells so the chi-square approximation holds
    obs = torch.cat([counts[big], counts[~big & (expected > 0)].sum()[None]])
    exp = torch.cat([expected[big], expected[~big & (expected > 0)].sum()[None]])
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    chi2 = (((obs - exp) ** 2) / exp).sum().item()
    return float(stats.chi2.sf(chi2, df=len(obs) - 1))


CASES = [
    ("model", "t1", 1), ("model", "t1", 3), ("model", "t0.7-topk3", 2), ("model", "t1.3-topp0.8", 2),
    ("layers:1", "t1", 2), ("layers:1", "t0.7-topk3", 3), ("layers:1", "t1.3-topp0.8", 1),
    ("ngram", "t1", 3), ("ngram", "t0.7-topk3", 2), ("ngram", "t1.3-topp0.8", 2),
]


@pytest.mark.slow
@pytest.mark.parametrize("drafter_kind,params_name,k", CASES)
def test_sampled_speculative_output_has_the_target_distribution(drafter_kind: str, params_name: str, k: int) -> None:
    params = PARAMS[params_name]
    target = target_model()
    joint = exact_joint(target, params)
    samples, n_accepted = speculative_joint(target, make_drafter(drafter_kind, target), params, k, seed=k)
    # Rejections (and so residual resampling) must happen; with the plain temperature, so must
    # acceptances (a top-k/top-p cut may leave a deterministic n-gram draft outside the nucleus).
    assert (n_accepted < k).any()
    if params_name == "t1":
        assert (n_accepted > 0).any()
    assert chi_square_pvalue(samples, joint) > 1e-4


def test_the_chi_square_check_has_power() -> None:
    """Sampling from the draft's distribution instead of the target's is caught."""
    params = PARAMS["t1"]
    target = target_model()
    joint = exact_joint(target, params)
    draft_model = make_drafter("model", target).model
    draft_joint = exact_joint(draft_model, params)
    g = torch.Generator().manual_seed(0)
    draws = torch.multinomial(draft_joint.flatten(), B, replacement=True, generator=g)
    assert chi_square_pvalue(torch.stack([draws // V, draws % V], 1), joint) < 1e-6
    # ...and so is a subtly biased target (10% of the mass of one token moved elsewhere).
    biased = joint.clone()
    biased[0] *= 0.9
    biased[1] += joint[0] * 0.1
    draws = torch.multinomial(biased.flatten(), B, replacement=True, generator=g)
    assert chi_square_pvalue(torch.stack([draws // V, draws % V], 1), joint) < 1e-4

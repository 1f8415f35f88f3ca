"""The torch reference ops follow the dispatch contract (the Triton kernels are tested against them)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from ponder._exceptions import ConfigError  # noqa: E402
from ponder.local.kernels import get_ops  # noqa: E402
from ponder.local.kernels._reference import warp_probs  # noqa: E402

ops = get_ops("cpu", backend="torch")


def test_auto_on_cpu_is_torch_and_unknown_backend_is_a_clear_error() -> None:
    assert get_ops("cpu").name == "torch"
    with pytest.raises(ConfigError, match="unknown kernel backend"):
        get_ops("cpu", backend="cuda-magic")


def test_greedy_sample_is_argmax_with_lowest_index_on_ties() -> None:
    logits = torch.tensor([[0.0, 2.0, 2.0, 1.0], [5.0, 5.0, 5.0, 5.0]])
    zeros = torch.zeros(2)
    out = ops.sample(logits, zeros, torch.zeros(2, dtype=torch.long), torch.ones(2), torch.rand(2))
    assert out.tolist() == [1, 0]


def test_top_k_and_top_p_cut_and_renormalise() -> None:
    probs = torch.tensor([[0.1, 0.4, 0.2, 0.3]])
    logits = probs.log()
    one = torch.ones(1)
    w = warp_probs(logits, one, torch.tensor([2]), one)  # keeps ids 1 and 3
    assert torch.allclose(w, torch.tensor([[0.0, 4 / 7, 0.0, 3 / 7]]))
    w = warp_probs(logits, one, torch.tensor([0]), torch.tensor([0.65]))  # 0.4+0.3 >= 0.65
    assert torch.allclose(w, torch.tensor([[0.0, 4 / 7, 0.0, 3 / 7]]))
    w = warp_probs(logits, one, torch.tensor([0]), torch.tensor([0.7]))  # exactly 0.7 is enough
    assert (w > 0).sum().item() == 2
    # inverse CDF over the kept tokens in id order: id 1 owns [0, 4/7), id 3 owns [4/7, 1)
    for u, tok in ((0.0, 1), (0.5, 1), (0.6, 3), (0.999, 3)):
        out = ops.sample(logits, one, torch.tensor([2]), one, torch.tensor([u]))
        assert out.item() == tok


def test_verify_chain_accepts_prefix_then_resamples_from_residual() -> None:
    V = 3
    draft_tokens = torch.tensor([[0, 1]])
    q = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]]])
    p = torch.tensor([[[0.5, 0.25, 0.25], [0.0, 0.2, 0.8], [1.0, 0.0, 0.0]]])
    exp_noise = torch.ones(1, V)
    # token 0: p/q = 1 -> accepted; token 1: p/q = 0.2, u = 0.5 rejects -> residual puts all on id 2
    out, n = ops.verify_chain(draft_tokens, q, p, torch.tensor([[0.9, 0.5]]), exp_noise)
    assert n.tolist() == [1] and out.tolist() == [[0, 2, -1]]
    # u = 0.1 accepts both -> bonus from p_2 (all mass on id 0)
    out, n = ops.verify_chain(draft_tokens, q, p, torch.tensor([[0.9, 0.1]]), exp_noise)
    assert n.tolist() == [2] and out.tolist() == [[0, 1, 0]]


def test_verify_chain_first_token_has_the_target_distribution() -> None:
    """Whatever the draft q, the first emitted token is distributed as p (large vectorised batch)."""
    g = torch.Generator().manual_seed(0)
    B, k, V = 200_000, 2, 5
    p = torch.softmax(torch.randn(1, k + 1, V, generator=g) * 1.5, -1).expand(B, -1, -1)
    q = torch.softmax(torch.randn(1, k, V, generator=g) * 1.5, -1).expand(B, -1, -1)
    draft = torch.multinomial(q[0, 0], B, replacement=True, generator=g)[:, None]
    draft = torch.cat([draft, torch.multinomial(q[0, 1], B, replacement=True, generator=g)[:, None]], 1)
    u = torch.rand(B, k, generator=g)
    e = torch.empty(B, V).exponential_(generator=g)
    out, n = ops.verify_chain(draft, q.contiguous(), p.contiguous(), u, e)
    counts = torch.bincount(out[:, 0], minlength=V).double()
    expected = p[0, 0].double() * B
    chi2 = (((counts - expected) ** 2) / expected).sum().item()
    assert chi2 < 20.5  # chi-square, 4 dof, p = 0.0004
    assert 0 < n.float().mean().item() < k


@pytest.mark.parametrize("start", [0, 3, 7])
def test_attention_matches_dense_causal_gqa(start: int) -> None:
    g = torch.Generator().manual_seed(1)
    B, Hq, Hkv, T, S, D = 2, 6, 2, 3, 12, 8
    q = torch.randn(B, Hq, T, D, generator=g, dtype=torch.float64)
    kc = torch.randn(B, Hkv, S, D, generator=g, dtype=torch.float64)
    vc = torch.randn(B, Hkv, S, D, generator=g, dtype=torch.float64)
    out = ops.attention(q, kc, vc, start)
    out_t = ops.attention(q, kc, vc, torch.full((B,), start))
    expected = torch.empty_like(q)
    for b in range(B):
        for h in range(Hq):
            kv = h // (Hq // Hkv)
            for t in range(T):
                n = start + t + 1
                w = torch.softmax(q[b, h, t] @ kc[b, kv, :n].T / math.sqrt(D), -1)
                expected[b, h, t] = w @ vc[b, kv, :n]
    assert torch.allclose(out, expected, atol=1e-10)
    assert torch.allclose(out_t, expected, atol=1e-10)

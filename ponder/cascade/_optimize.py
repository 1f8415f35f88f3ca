"""Choose a cascade: an ordered chain of ≤ 3 models and its thresholds, for a budget or a target.

Every chain is scored at once with matrix products: the accept masks of rung-1 model ``a`` at G
candidate thresholds (score quantiles) form a (Q, G) matrix A1, rung 2's (``b`` with ``a``'s
answer in view) A2, and the mean quality of ``(a, b, c)`` at every threshold pair and every ``c`` is

    [A1ᵀ y_a + (1−A1)ᵀ (A2 ∘ y_b) + (1−A1)ᵀ ((1−A2) ∘ Y)] / Q        → (G, G, M)

(cost likewise). Every point goes into one :class:`Frontier` that answers budgets and targets by
lookup. Scores must be out-of-fold, or the thresholds fit scorer noise. Agreement sets enter as
extra columns that may only start a chain.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from .._memo import Kept, digest

__all__ = ["ChainChoice", "Frontier", "optimize_chains"]

NEVER = 2.0  # threshold that accepts nothing (scores are probabilities)


@dataclass(frozen=True)
class ChainChoice:
    """One operating point: model indices in order, thresholds for all but the last rung."""

    chain: tuple[int, ...]
    thresholds: tuple[float, ...]
    cost: float
    quality: float


@dataclass
class Frontier:
    """Every evaluated (chain, thresholds) point; lookups by budget or target quality."""

    chains: np.ndarray  # (P, 3) model indices, -1 = no rung
    thresholds: np.ndarray  # (P, 2) rung-1 and rung-2 thresholds (NaN where unused)
    cost: np.ndarray  # (P,)
    quality: np.ndarray  # (P,)
    n_chains: int
    _pareto: list[ChainChoice] | None = field(default=None, init=False, repr=False, compare=False)

    def _choice(self, i: int) -> ChainChoice:
        chain = tuple(int(m) for m in self.chains[i] if m >= 0)
        th = tuple(float(t) for t in self.thresholds[i][: len(chain) - 1])
        return ChainChoice(chain, th, float(self.cost[i]), float(self.quality[i]))

    def best_for_budget(self, budget: float) -> ChainChoice | None:
        """Highest mean quality with mean cost ≤ budget (ties: cheaper, then shorter)."""
        ok = np.flatnonzero(self.cost <= budget + 1e-15)
        if ok.size == 0:
            return None
        q = self.quality[ok]
        best = ok[np.isclose(q, q.max(), rtol=0, atol=1e-12)]
        lengths = (self.chains[best] >= 0).sum(axis=1)
        order = np.lexsort((lengths, self.cost[best]))
        return self._choice(int(best[order[0]]))

    def cheapest_for_quality(self, target: float) -> ChainChoice | None:
        """Lowest mean cost with mean quality ≥ target."""
        ok = np.flatnonzero(self.quality >= target - 1e-12)
        if ok.size == 0:
            return None
        return self._choice(int(ok[np.argmin(self.cost[ok])]))

    def pareto(self) -> list[ChainChoice]:
        """Points no other point beats on both cost and quality (cheapest first; computed once)."""
        if self._pareto is None:
            order = np.lexsort((-self.quality, self.cost))
            q = self.quality[order]
            # a joining point beats all before it, so only the strict running records need the
            # loop (which the 1e-12 tolerance makes serial)
            before = np.fmax.accumulate(np.concatenate([[-np.inf], q[:-1]]))
            self._pareto, best = [], -np.inf
            for i in order[q > before]:
                if self.quality[i] > best + 1e-12:
                    self._pareto.append(self._choice(int(i)))
                    best = self.quality[i]
        return list(self._pareto)


def _accepts(scores: np.ndarray, quality: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A rung's candidate thresholds, ``n`` score quantiles plus 'accept nothing' (ties
    collapse), and the (Q, G) mask of the queries each accepts (a missing answer: none)."""
    s = np.where(np.isnan(quality), -np.inf, np.nan_to_num(scores, nan=-np.inf))
    finite = s[np.isfinite(s)]
    t = np.array([NEVER])
    if finite.size:
        t = np.concatenate([np.unique(np.quantile(finite, np.linspace(0.0, 1.0, n))), t])
    return t, (s[:, None] >= t[None, :]).astype(np.float64)


def optimize_chains(
    s1: np.ndarray,
    s2: np.ndarray,
    quality: np.ndarray,
    cost: np.ndarray,
    *,
    max_length: int = 3,
    n_thresholds: int = 32,
    allowed_last: list[int] | None = None,
    n_first_only: int = 0,
) -> Frontier:
    """Every chain of length ≤ ``max_length`` at every candidate threshold. ``s2[q, b, a]``: model
    b's score with rung a before it; NaN entries are failed calls (quality 0, cost 0). The last
    ``n_first_only`` columns (sets) only start chains of length ≤ 2 and may be left out of ``s2``;
    ``allowed_last``: the only models a chain may end on (or stop at), all when None.
    """
    if max_length not in (1, 2, 3):
        raise ValueError(f"max_length must be 1, 2 or 3, got {max_length}")
    from threadpoolctl import threadpool_limits

    key = digest(s1, s2, quality, cost, max_length, n_thresholds, allowed_last, n_first_only)
    kept: Frontier | None = _FRONTIERS.get(key)
    if kept is not None:
        return copy.deepcopy(kept)
    # the products are small: BLAS threads only add spin-waiting (15× slower on a busy machine)
    with threadpool_limits(limits=1, user_api="blas"):
        out = _optimize(s1, s2, quality, cost, max_length, n_thresholds, allowed_last,
                        n_first_only)
    _FRONTIERS.put(key, copy.deepcopy(out), sum(a.nbytes for a in (out.chains, out.thresholds,
                                                                    out.cost, out.quality)))
    return out


# ``ponder eval``'s "cascade" and "route-cascade" optimize the same scores: keep the last few.
_FRONTIERS = Kept(max_bytes=256 << 20, max_items=6)


def _optimize(s1: np.ndarray, s2: np.ndarray, quality: np.ndarray, cost: np.ndarray,
              max_length: int, n_thresholds: int, allowed_last: list[int] | None,
              n_first_only: int) -> Frontier:
    Y = np.nan_to_num(np.asarray(quality, dtype=np.float64), nan=0.0)
    C = np.nan_to_num(np.asarray(cost, dtype=np.float64), nan=0.0)
    nq, nm = Y.shape
    last_ok = np.zeros(nm, dtype=bool)
    last_ok[list(range(nm)) if allowed_last is None else allowed_last] = True
    first_only = np.arange(nm) >= nm - n_first_only
    later = np.flatnonzero(last_ok & ~first_only)  # a set never follows another rung
    singles = np.flatnonzero(last_ok)
    mean_y, mean_c = Y.mean(axis=0), C.mean(axis=0)
    # (chains, thresholds, cost, quality) of each block of points
    parts = [(np.column_stack([singles, -np.ones((singles.size, 2), int)]),
              np.full((singles.size, 2), np.nan), mean_c[singles], mean_y[singles])]
    n_chains = singles.size
    for a in range(nm if max_length >= 2 else 0):
        t1, A1 = _accepts(s1[:, a], quality[:, a], n_thresholds)  # A1: (Q, G1)
        R1 = 1.0 - A1
        base_q = A1.T @ Y[:, a] / nq  # (G1,)
        base_c = np.full(t1.size, mean_c[a])
        # Length 2: (a, b) for every b.
        q2 = base_q[:, None] + R1.T @ Y / nq  # (G1, M)
        c2 = base_c[:, None] + R1.T @ C / nq
        bs = later[later != a]
        if bs.size:
            g = t1.size
            parts.append((np.column_stack([np.full(g * bs.size, a), np.tile(bs, g),
                                           -np.ones(g * bs.size, int)]),
                          np.column_stack([np.repeat(t1, bs.size), np.full(g * bs.size, np.nan)]),
                          c2[:, bs].ravel(), q2[:, bs].ravel()))
            n_chains += bs.size
        if max_length < 3 or first_only[a]:
            continue
        for b in range(nm):
            if b == a or first_only[b]:
                continue
            t2, A2 = _accepts(s2[:, b, a], quality[:, b], n_thresholds)  # A2: (Q, G2)
            R2 = 1.0 - A2
            q_b = R1.T @ (A2 * Y[:, b][:, None]) / nq  # (G1, G2)
            c_b = np.broadcast_to((R1.T @ C[:, b] / nq)[:, None], q_b.shape)  # paid when reached
            # Rung c is reached when neither a nor b accepted: (1−A1)ᵀ [(1−A2) ∘ Y[:, c]].
            cs = later[(later != a) & (later != b)]
            if cs.size == 0:
                continue
            reach = (R2[:, :, None] * Y[:, None, cs]).reshape(nq, -1)  # (Q, G2*|cs|)
            q3 = (R1.T @ reach / nq).reshape(t1.size, t2.size, cs.size)
            reach_c = (R2[:, :, None] * C[:, None, cs]).reshape(nq, -1)
            c3 = (R1.T @ reach_c / nq).reshape(t1.size, t2.size, cs.size)
            qual = base_q[:, None, None] + q_b[:, :, None] + q3
            cst = base_c[:, None, None] + c_b[:, :, None] + c3
            g1, g2, gc = np.meshgrid(np.arange(t1.size), np.arange(t2.size), np.arange(cs.size),
                                     indexing="ij")
            n = qual.size
            parts.append((np.column_stack([np.full(n, a), np.full(n, b), cs[gc.ravel()]]),
                          np.column_stack([t1[g1.ravel()], t2[g2.ravel()]]), cst.ravel(),
                          qual.ravel()))
            n_chains += cs.size
    chains, ths, costs, quals = zip(*parts, strict=True)
    return Frontier(chains=np.vstack(chains).astype(np.int64), thresholds=np.vstack(ths),
                    cost=np.concatenate(costs), quality=np.concatenate(quals),
                    n_chains=int(n_chains))

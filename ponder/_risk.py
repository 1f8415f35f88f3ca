"""Thresholds with a guarantee: Learn-then-Test (Angelopoulos et al., 2021) with fixed-sequence testing.

Each setting λ_k gets a p-value for H0: R(λ_k) > ε; candidates are walked safest first and rejected
while p_k ≤ δ, so every rejected λ is safe with probability ≥ 1−δ without a multiplicity correction
(the order is fixed before the data). p-values for losses in [0, 1]: ``"hb"`` Hoeffding–Bentkus,
``"binomial"`` exact for {0, 1} losses, ``"wsr"`` Waudby-Smith–Ramdas betting (adapts to variance).
Calibration queries must be exchangeable with future ones and unused for training (checked in
``tests/cascade/test_risk.py``); :mod:`ponder._bounds` inverts the WSR test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "RiskSelection",
    "binomial_pvalue",
    "hb_pvalue",
    "ltt_select",
    "samples_needed",
    "to_unit",
    "wsr_pvalue",
]


def hb_pvalue(risk_hat: float, n: int, eps: float) -> float:
    """Hoeffding–Bentkus p-value for H0: mean loss > eps, losses in [0, 1]."""
    from scipy.stats import binom

    if n <= 0 or risk_hat >= eps:
        return 1.0
    r, e = min(max(risk_hat, 1e-12), 1 - 1e-12), min(max(eps, 1e-12), 1 - 1e-12)
    kl = r * math.log(r / e) + (1 - r) * math.log((1 - r) / (1 - e))  # Bernoulli kl(r || ε)
    hoeff = math.exp(-n * kl)
    bentkus = math.e * float(binom.cdf(math.ceil(n * risk_hat), n, eps))
    return min(1.0, hoeff, bentkus)


def binomial_pvalue(risk_hat: float, n: int, eps: float) -> float:
    """Exact binomial p-value for H0: P(loss = 1) > eps, losses in {0, 1}."""
    from scipy.stats import binom

    if n <= 0:
        return 1.0
    return float(min(1.0, binom.cdf(round(n * risk_hat), n, eps)))


def _wsr_bets(x: np.ndarray, ok: np.ndarray, delta: float) -> np.ndarray:
    """(n, K) predictable WSR bet sizes for losses ``x`` in visiting order; a row not ``ok``
    neither bets nor updates the running mean and variance."""
    n_k = ok.sum(axis=0)
    cnt = np.cumsum(ok, axis=0)
    xs = np.where(ok, x, 0.0)
    mu = (0.5 + np.cumsum(xs, axis=0)) / (cnt + 1)
    var = (0.25 + np.cumsum(np.where(ok, (xs - mu) ** 2, 0.0), axis=0)) / (cnt + 1)
    var_prev = np.vstack([np.full((1, x.shape[1]), 0.25), var[:-1]])  # uses rows before i only
    nu = np.sqrt(2 * math.log(1 / delta) / (np.maximum(n_k, 1) * var_prev))
    # Bet on "loss < ε": the factor 1 + ν(ε − x) must stay > 0 for x = 1, i.e. ν < 1/(1 − ε).
    return np.where(ok, np.minimum(nu, 1.0), 0.0)


def _wsr_log_wealth(x: np.ndarray, nu: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """(K,) the largest log-wealth reached betting ``nu`` on "mean < eps" (0 bets: no change)."""
    with np.errstate(divide="ignore"):  # log1p(−1) = −inf: the bettor went broke
        steps = np.log1p(nu * (eps[None, :] - np.nan_to_num(x, nan=0.0)))
    steps = np.where(nu > 0, steps, 0.0)
    if not len(steps):
        return np.zeros(x.shape[1])
    best: np.ndarray = np.cumsum(steps, axis=0).max(axis=0)
    return best


def wsr_pvalue(losses: np.ndarray, eps: float, delta: float = 0.1, *, seed: int = 0) -> float:
    """WSR p-value for H0: mean loss ≥ eps: the bettor's wealth is a supermartingale under H0, so
    1 / max wealth is valid (Ville); losses are visited in a seeded order (they are exchangeable)."""
    x = np.asarray(losses, dtype=np.float64).ravel()
    if x.size == 0:
        return 1.0
    x = x[np.random.default_rng(seed).permutation(x.size), None]
    nu = _wsr_bets(x, np.ones(x.shape, dtype=bool), delta)
    log_wealth = float(_wsr_log_wealth(x, nu, np.array([eps]))[0])
    return float(min(1.0, math.exp(-max(0.0, log_wealth))))


def samples_needed(x: np.ndarray, eps: float, delta: float, *, seed: int = 0,
                   cap: int = 1_000_000, orders: int = 5) -> int | None:
    """How many queries like ``x`` the WSR test needs to reject "mean ≥ eps" (None: never, or over
    ``cap``); a size certifies when most of ``orders`` seeded orders do, since one order jumps."""
    x = np.asarray(x, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0 or float(x.mean()) >= eps:
        return None
    gap, var = eps - float(x.mean()), max(float(x.var()), 1e-4)
    if 2 * var * math.log(1 / delta) / gap**2 > 8 * cap:  # far beyond reach (normal theory)
        return None

    def certifies(size: int) -> bool:
        xs = np.resize(x, size)
        wins = sum(wsr_pvalue(xs, eps, delta, seed=seed + k) <= delta for k in range(orders))
        return 2 * wins > orders

    lo, hi = 0, x.size
    while not certifies(hi):
        if hi >= cap:
            return None
        lo, hi = hi, min(cap, hi * 2)
    while hi - lo > max(1, hi // 50):  # two significant digits are plenty
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if certifies(mid) else (mid, hi)
    return hi


def to_unit(signed_losses: np.ndarray, eps: float) -> tuple[np.ndarray, float]:
    """Map losses in [−1, 1] and their ε to [0, 1] (x → (x+1)/2), preserving H0."""
    return (np.asarray(signed_losses, dtype=np.float64) + 1.0) / 2.0, (eps + 1.0) / 2.0


@dataclass(frozen=True)
class RiskSelection:
    """Outcome of :func:`ltt_select`. ``index`` is None when not even the first candidate passed."""

    index: int | None
    epsilon: float
    delta: float
    method: str
    n: int
    pvalues: np.ndarray = field(repr=False)
    risks: np.ndarray = field(repr=False)

    @property
    def certified(self) -> bool:
        return self.index is not None


def ltt_select(losses: np.ndarray, epsilon: float, delta: float, *, method: str = "hb",
               signed: bool = False, seed: int = 0) -> RiskSelection:
    """The last candidate of the rejected prefix of ``losses`` (n, K), columns safest first;
    ``signed``: losses in [−1, 1] (a quality drop, negative where the cascade wins)."""
    L = np.asarray(losses, dtype=np.float64)
    if L.ndim == 1:
        L = L[:, None]
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if not -1.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must be in (-1, 1), got {epsilon}")
    eps = epsilon
    if signed:
        L, eps = to_unit(L, epsilon)
    if L.size and (L.min() < -1e-12 or L.max() > 1 + 1e-12):
        raise ValueError("losses must lie in [0, 1] (or [-1, 1] with signed=True)")
    if method == "binomial" and not np.isin(L, (0.0, 1.0)).all():
        raise ValueError("the binomial p-value needs {0, 1} losses; use method='hb' or 'wsr'")
    n, k = L.shape
    risks = L.mean(axis=0) if n else np.ones(k)
    pvals = np.ones(k)
    chosen: int | None = None
    for j in range(k):
        if method == "hb":
            p = hb_pvalue(float(risks[j]), n, eps)
        elif method == "binomial":
            p = binomial_pvalue(float(risks[j]), n, eps)
        elif method == "wsr":
            p = wsr_pvalue(L[:, j], eps, delta, seed=seed + j)
        else:
            raise ValueError(f"method must be 'hb', 'binomial' or 'wsr', got {method!r}")
        pvals[j] = p
        if p > delta:
            break
        chosen = j
    return RiskSelection(index=chosen, epsilon=epsilon, delta=delta, method=method, n=n,
                         pvalues=pvals, risks=(risks * 2 - 1) if signed else risks)

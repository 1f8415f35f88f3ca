"""Kernel dispatch: the hot ops of the engine behind one small object.

``get_ops(device, backend)`` returns an :class:`Ops` with

1. ``sample(logits (B,V), temperature (B,), top_k (B,) int64 [0 = off], top_p (B,) [1.0 = off],
   uniform (B,) in [0,1)) -> (B,) int64``. Temperature 0 is argmax (ties -> lowest id). Otherwise
   softmax(logits/T) cut to the top-k (ties -> lower id), renormalised, cut to the top-p nucleus
   (smallest descending prefix with mass >= p), renormalised; the token is the inverse-CDF pick
   with ``uniform`` over the kept tokens in ascending id order.
2. ``verify_chain(draft_tokens (B,k), draft_probs (B,k,V), target_probs (B,k+1,V), uniform (B,k),
   exp_noise (B,V)) -> (out_tokens (B,k+1), num_accepted (B,))``: accept token i iff
   ``uniform[i] * q_i(x_i) <= p_i(x_i)`` up to the first rejection j, whose replacement is
   ``argmax_v max(0, p_j - q_j)(v) / exp_noise[v]`` (p_j when the residual is all zero); if all
   are accepted the bonus is ``argmax_v p_k(v) / exp_noise[v]``. Padding is -1.
3. ``attention(q (B,Hq,T,D), k_cache (B,Hkv,S,D), v_cache (B,Hkv,S,D), start_pos int | (B,),
   scale=None) -> (B,Hq,T,D)``: query t at position start_pos+t attends to cache [0, start_pos+t];
   head h reads kv head h // (Hq // Hkv). The new keys/values are already in the cache.
4. ``warp_probs(logits (N,V), temperature (N,), top_k (N,), top_p (N,)) -> (N,V) float``: the
   distribution ``sample`` draws from (softmax(logits/T) cut to the top-k, renormalised, cut to
   the top-p nucleus, renormalised; one-hot argmax at T <= 0), whole, for speculative
   verification. The reference sorts the vocabulary; the Triton kernel finds thresholds instead.

``backend="torch"`` is the reference (``_reference.py``); ``"triton"`` the kernels in
``_triton.py`` (CUDA, or CPU under ``TRITON_INTERPRET=1``); ``"auto"`` picks triton on CUDA when it
imports, else torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Ops", "get_ops", "BACKENDS"]

BACKENDS = ("auto", "torch", "triton")


@dataclass(frozen=True)
class Ops:
    """The ops of one backend; held by the engine, never rebound as globals."""

    name: str
    sample: Callable[..., Any]
    verify_chain: Callable[..., Any]
    attention: Callable[..., Any]
    warp_probs: Callable[..., Any]


def _load(module: str, name: str) -> Ops:
    mod = importlib.import_module(f"{__name__}.{module}")
    return Ops(name=name, sample=mod.sample, verify_chain=mod.verify_chain, attention=mod.attention, warp_probs=mod.warp_probs)


def _device_type(device: Any) -> str:
    if device is None:
        return "cpu"
    return getattr(device, "type", None) or str(device).split(":")[0]


def get_ops(device: Any = "cpu", backend: str = "auto") -> Ops:
    """The ops for ``device``: ``backend`` is ``"auto"``, ``"torch"`` or ``"triton"``."""
    from ..._exceptions import ConfigError

    if backend not in BACKENDS:
        raise ConfigError(
            f"unknown kernel backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    if backend == "torch":
        return _load("_reference", "torch")
    if backend == "triton":
        try:
            return _load("_triton", "triton")
        except ImportError as exc:
            raise ConfigError(f"the triton kernel backend is unavailable: {exc}") from exc
    if _device_type(device) == "cuda":
        try:
            return _load("_triton", "triton")
        except ImportError:
            pass
    return _load("_reference", "torch")

"""The decode loop with its state on the device: one CUDA graph per step shape, no host sync per step.

The host loop (``Engine(loop="host")``) reads every step's accepted count back to the host, which
on a GPU costs a sync and a launch gap per step. Here the sequence, its length, the stop position
and the counters live in device tensors. A step (one decode, or k drafts + one verify pass +
acceptance + commit) is a function of those buffers only, so it is captured once per (mode, k) in
a CUDA graph and replayed; k adapts within a small fixed set. The host launches a few steps, then
reads back once (length, stop position, accepted count and the new tokens in one copy).

Sampling stays exact: every token is drawn with an exponential race, argmax(p / e) with
e ~ Exp(1) (a draw from p), or by ``ops.verify_chain`` (acceptance and residual resampling, the
Triton kernel on CUDA). Its noise is drawn from the stream's seeded generator into static buffers
before each replay. Any proposal is lossless, so the n-gram drafter proposes something even without
a match, and a draft model re-reads its last two positions instead of tracking what it has seen.

On the CPU the same loop runs without capture (``graphs=False``), which is how it is tested.
``Engine`` captures every graph a loop can replay (:meth:`DeviceLoop.prepare`) when it is built,
not inside a request; :meth:`DeviceLoop.parts` hands out the pieces of a step (draft, verify,
decode) as the loop runs them, for the benchmark's Leviathan prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from ._drafters import Drafter, ModelDrafter, NgramDrafter
from ._model import Transformer
from ._sampling import Noise, SamplingParams, one_hot, probs

__all__ = ["DeviceLoop", "MODES", "k_choices", "mode_of"]

_NONE = 2**62  # "no stop token yet"

# The branches a step graph can take, each with settings that take it (values come from buffers).
MODES = {
    "greedy": SamplingParams(),
    "softmax": SamplingParams(temperature=1.0),
    "warp": SamplingParams(temperature=1.0, top_p=0.5),
}


def k_choices(k: int, k_max: int) -> tuple[int, ...]:
    """The draft lengths graphs are captured for: powers of two up to k_max, and k itself."""
    return tuple(sorted({2**i for i in range(k_max.bit_length()) if 2**i <= k_max} | {k}))


def mode_of(params: SamplingParams) -> str:
    """Which of :data:`MODES` a step with ``params`` runs."""
    if params.greedy:
        return "greedy"
    return "softmax" if params.top_k <= 0 and params.top_p >= 1.0 else "warp"


class DeviceLoop:
    """The buffers and captured steps of one stream's KV caches (graphs point at those caches)."""

    def __init__(
        self, model: Transformer, drafter: Drafter | None, capacity: int, *, graphs: bool,
        pool: Any = None, max_stops: int = 16,
    ) -> None:
        dev, V = model.device, model.args.vocab_size
        self.model, self.drafter, self.graphs = model, drafter, graphs
        self.capacity = capacity  # positions the KV caches hold
        self.seq = torch.zeros(1, capacity + 1, dtype=torch.long, device=dev)  # +1: padding lands past L
        self.L = torch.zeros(1, dtype=torch.long, device=dev)  # tokens so far; the last is pending
        self.stop_at = torch.full((1,), _NONE, dtype=torch.long, device=dev)  # first stop position
        self.accepted = torch.zeros(1, dtype=torch.long, device=dev)
        self.stops = torch.full((max_stops,), -1, dtype=torch.long, device=dev)
        self.temp, self.top_k, self.top_p = SamplingParams().tensors(1, dev)
        self.race = torch.ones(1, V, device=dev)  # the target's draw (bonus, resample or decode)
        self._noise: dict[tuple[str, int], torch.Tensor] = {}  # per k: draft races, accept uniforms
        self._steps: dict[tuple[str, int], Callable[[], None]] = {}
        self._pool = pool if pool is not None or not graphs else torch.cuda.graph_pool_handle()
        self.captures = 0  # graphs captured (on the CPU: steps prepared) so far

    def has(self, mode: str, k: int) -> bool:
        return (mode, k) in self._steps

    def prepare(self, keys: dict[tuple[str, int], SamplingParams]) -> None:
        """Capture the steps ``keys`` (mode, k) -> settings of that mode, on a scratch state (the
        caches must be installed; what the warm-ups write is overwritten by the next request)."""
        first = next(iter(keys.values()), SamplingParams())
        self.start(torch.zeros(1, 2, dtype=torch.long, device=self.seq.device), 2, first, set())
        for (mode, k), params in keys.items():
            assert mode_of(params) == mode, (mode, params)
            self._steps[mode, k] = self._capture(partial(self._run, k, params))

    # --- per request ----------------------------------------------------------------------
    def start(self, seq: torch.Tensor, L: int, params: SamplingParams, stops: set[int]) -> None:
        """Install a prefilled sequence (``seq[:, :L]``, the last token pending) and its settings."""
        self.seq.zero_()
        self.seq[:, :L] = seq[:, :L]
        self.L.fill_(L)
        self.stop_at.fill_(_NONE)
        self.accepted.zero_()
        if len(stops) > self.stops.numel():  # a bigger buffer: the captured steps point at the old one
            self.stops, self._steps = torch.full((len(stops),), -1, dtype=torch.long, device=self.seq.device), {}
            # (Engine makes a loop with room for them before a request starts: nothing is captured here.)
        self.stops.fill_(-1)
        if stops:
            self.stops[: len(stops)] = torch.tensor(sorted(stops), dtype=torch.long)
        for buf, value in zip((self.temp, self.top_k, self.top_p), params.tensors(1, self.seq.device), strict=True):
            buf.copy_(value)
        if isinstance(self.drafter, ModelDrafter) and not self.drafter.shares_cache and L > 2:
            self.drafter.logits_at(self.seq[:, : L - 2], 0)  # its steps re-read positions L-2, L-1

    def step(self, k: int, params: SamplingParams, noise: Noise) -> None:
        """Launch one step (k = 0: plain decode); nothing is read back."""
        if not params.greedy:
            noise.fill_exponential(self.race)
            if k:
                noise.fill_exponential(self._scratch("race", k))
                noise.fill_accept_uniform(self._scratch("accept", k))
        key = (mode_of(params), k)  # the branch a graph takes; values come from the buffers
        if key not in self._steps:
            self._steps[key] = self._capture(lambda: self._run(k, params))
        self._steps[key]()

    def read(self, known: int, upto: int) -> tuple[int, int, int, list[int]]:
        """One host sync: (length, first stop position or -1, accepted drafts, tokens known..upto)."""
        vals = torch.cat([self.L, self.stop_at, self.accepted, self.seq[0, known:upto]]).tolist()
        stop = vals[1] if vals[1] != _NONE else -1
        return vals[0], stop, vals[2], vals[3:]

    # --- the steps (captured) -------------------------------------------------------------
    def _run(self, k: int, params: SamplingParams) -> None:
        if k == 0:
            self._commit(self._decode(params), torch.zeros_like(self.L), 1)
            return
        block, pos = self._block(k)
        q = self._draft(block, pos, k, params)
        out, n = self._verify(block, pos, q, k, params)
        self._commit(out, n, k + 1)
        self.accepted.add_(n)

    def parts(self, k: int, params: SamplingParams) -> dict[str, Callable[[], None]]:
        """The pieces of a step, as :meth:`_run` runs them, without its commit (so that each may be
        replayed over and over at the same position): "target" (a target-only decode: forward at
        T=1 and the draw) and, for k > 0, "draft" (the k proposals) and "verify" (the target's
        pass over k+1 positions, the distributions and the acceptance). Leviathan's prediction
        for a speculative step is draft + verify."""
        def target() -> None:
            self._decode(params)

        out: dict[str, Callable[[], None]] = {"target": target}
        if k and self.drafter is not None:
            V = self.race.shape[-1]
            q = torch.full((1, k, V), 1.0 / V, device=self.seq.device)  # stands in for the drafts' q

            def draft() -> None:
                block, pos = self._block(k)
                self._draft(block, pos, k, params)

            def verify() -> None:
                block, pos = self._block(k)
                self._verify(block, pos, q, k, params)

            out.update(draft=draft, verify=verify)
        return out

    def _decode(self, params: SamplingParams) -> torch.Tensor:
        """The next token (1,1) after the pending one, from the target alone."""
        pos = self.L - 1
        logits = self.model(self.seq.gather(1, pos[:, None]), pos, last_only=True)[:, -1]
        return torch.argmax(logits if params.greedy else self._probs(logits, params) / self.race, dim=-1)[:, None]

    def _block(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k+1 positions [pending, x_1..x_k] and their tokens (the drafts are filled in)."""
        pos = (self.L - 1) + torch.arange(k + 1, device=self.L.device)
        return self.seq.gather(1, pos[None]), pos

    def _verify(self, block: torch.Tensor, pos: torch.Tensor, q: torch.Tensor, k: int, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
        """One target pass over ``block``: the accepted drafts and the next token, and how many."""
        logits = self.model(block, pos[:1])
        p = self._probs(logits[0], params)[None]
        if params.greedy:  # one-hot p and q: any positive noise agrees
            u, race = torch.ones(1, k, device=p.device), torch.ones_like(self.race)
        else:
            u, race = self._scratch("accept", k), self.race
        verdict: tuple[torch.Tensor, torch.Tensor] = self.model.ops.verify_chain(block[:, 1:], q, p, u, race)
        return verdict

    def _draft(self, block: torch.Tensor, pos: torch.Tensor, k: int, params: SamplingParams) -> torch.Tensor:
        """Fill ``block[:, 1:]`` with k proposals; returns their draft distributions (1,k,V)."""
        V = self.race.shape[-1]
        d = self.drafter
        if isinstance(d, NgramDrafter):
            block[:, 1:] = d.lookup(self.seq, self.L, k)
            return one_hot(block[:, 1:], V)
        assert isinstance(d, ModelDrafter)
        qs = []
        for i in range(k):
            if i == 0 and not d.shares_cache:  # its own cache: redo the last two positions
                logits = d.logits_at(self.seq.gather(1, (pos[:1] - 1) + torch.arange(2, device=pos.device)[None]), pos[:1] - 1)
            else:
                logits = d.logits_at(block[:, i : i + 1], pos[i : i + 1])
            q = self._probs(logits, params)
            block[:, i + 1] = torch.argmax(q if params.greedy else q / self._scratch("race", k)[i : i + 1], dim=-1)
            qs.append(q)
        return torch.stack(qs, dim=1)

    def _probs(self, logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
        return probs(logits, params, (self.temp, self.top_k, self.top_p), self.model.ops)

    def _commit(self, out: torch.Tensor, n: torch.Tensor, width: int) -> None:
        """Write ``out`` (1,width: n accepted, then one drawn, then -1) at L.. and advance L by n+1."""
        at = self.L + torch.arange(width, device=out.device)
        self.seq.scatter_(1, at[None], out)  # the -1 padding lands past the new length
        is_stop = (out[0, :, None] == self.stops).any(-1)  # not torch.isin: it syncs to sort
        hit = is_stop & (torch.arange(width, device=out.device) <= n)
        self.stop_at.copy_(torch.minimum(self.stop_at, torch.where(hit, at, _NONE).min()))
        self.L.add_(n + 1)

    def _scratch(self, name: str, k: int) -> torch.Tensor:
        """A static noise buffer of k rows ("race": (k,V), "accept": (1,k)), refilled by ``step``."""
        if (name, k) not in self._noise:
            shape = (k, self.race.shape[-1]) if name == "race" else (1, k)
            self._noise[name, k] = torch.ones(shape, device=self.race.device)
        return self._noise[name, k]

    def _capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        """``fn`` as a CUDA-graph replay (warmed up first: Triton compiles on first call). The
        warm-up advances the state; it is put back (slots past L it wrote are rewritten later)."""
        self.captures += 1
        if not self.graphs:
            return fn
        saved = [t.clone() for t in (self.L, self.stop_at, self.accepted)]
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                fn()
                for t, s in zip((self.L, self.stop_at, self.accepted), saved, strict=True):
                    t.copy_(s)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            fn()
        return graph.replay

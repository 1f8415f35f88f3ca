"""Speed and acceptance of drafters against target-only decoding, on the same prompts and weights.

Honest by construction: every configuration decodes every prompt once per round, and the order of
the configurations rotates from round to round, so on a shared, noisy machine they all see the same
load. A configuration is exactly what ``ponder local generate`` runs for the same flags (an engine
of its own on the same weights, same ``k`` and adaptive rule), and tokens/s is measured the same
way (generated tokens over prefill + decode time, from ``GenerationStats``), so the two agree.
Each engine is built, its caches allocated and (on a GPU) its step graphs captured, before any
timed run; that time is reported apart, as ``capture_s``.

:func:`step_times` times the pieces of one step (draft, verify, a target-only decode) exactly as an
engine's device loop runs them, for Leviathan's prediction of the speculative speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ._engine import Engine, GenerationStats, _on_device, make_drafter
from ._sampling import SamplingParams

# A fixed, offline prompt set: short reasoning questions and a summary of a long input.
DEFAULT_PROMPTS = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?",
    "Summarize the following text in two sentences.\n\n"
    "The city council met on Tuesday to discuss the new public library. The library will be built "
    "next to the central park and will have three floors. The first floor will hold children's "
    "books and a play area, the second floor will hold fiction and non-fiction for adults, and the "
    "third floor will have study rooms and computers. The council expects the library to open in "
    "two years and to cost twelve million dollars, paid for by a state grant and a local tax.",
)


@dataclass
class BenchRow:
    draft: str  # "target" for target-only decoding
    k: int | None
    tokens: int = 0
    seconds: float = 0.0
    drafted: int = 0
    accepted: int = 0
    steps: int = 0
    tokens_match: bool = True  # every prompt produced exactly the target-only tokens
    capture_s: float = 0.0  # building the engine: caches and (on a GPU) graphs, outside the timed runs

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def mean_accepted(self) -> float:
        return self.accepted / self.steps if self.steps else 0.0


Progress = Callable[[int, int, str], None]  # (runs done, runs in all, what just ran)


def run_bench(
    engine: Engine,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    drafts: Sequence[str] = ("ngram",),
    ks: Sequence[int] = (2, 4, 8),
    max_tokens: int = 64,
    adaptive: bool = True,
    rounds: int = 2,
    progress: Progress | None = None,
) -> list[BenchRow]:
    """Greedy decoding of every prompt by target-only and each drafter at each k, interleaved.

    Row 0 is target-only; ``tokens_match`` compares each row's tokens with it, prompt by prompt."""
    tok = engine.tokenizer
    if tok is None:
        raise ValueError("the bench needs an engine with a tokenizer")
    ids = [tok.encode_chat([{"role": "user", "content": p}]) for p in prompts]
    params = SamplingParams()
    context = max(len(i) for i in ids) + max_tokens

    def build(row: BenchRow, drafter: Any) -> tuple[BenchRow, Engine]:
        t0 = time.perf_counter()
        k = row.k or 1
        e = Engine(
            engine.model, engine.tokenizer, drafter, k=k, k_max=2 * k, adaptive=adaptive,
            backend=engine.backend, loop=engine._loop, read_every=engine.read_every,
            context=min(context, engine.model.args.max_position),
        )  # fmt: skip
        row.capture_s = time.perf_counter() - t0
        return row, e

    configs = [build(BenchRow("target", None), None)]
    for draft in drafts:
        drafter = make_drafter(draft, engine.model, dtype=getattr(engine.model, "dtype", torch.float32))  # built once
        configs += [build(BenchRow(draft, k), drafter) for k in ks]
    reference: dict[int, list[int]] = {}
    outputs: dict[tuple[int, int], list[int]] = {}

    def run(c: int, p: int) -> None:
        row, eng = configs[c]
        out, _, st = eng.generate_ids(ids[p], max_tokens, params)
        row.tokens += st.new_tokens
        row.seconds += st.prefill_s + st.decode_s
        row.drafted, row.accepted, row.steps = row.drafted + st.drafted, row.accepted + st.accepted, row.steps + st.target_steps
        row.capture_s += st.capture_s  # none once built; counted apart if any
        outputs[(c, p)] = out

    for c in range(len(configs)):  # warm-up: first-call costs (kernel compiles, page faults)
        run(c, 0)
    for row, _ in configs:
        row.tokens = row.drafted = row.accepted = row.steps = 0
        row.seconds = 0.0
    total, done = rounds * len(ids) * len(configs), 0
    for r in range(rounds):
        for p in range(len(ids)):
            for i in range(len(configs)):
                c = (i + r + p) % len(configs)  # rotate who goes first
                run(c, p)
                if c == 0:
                    reference[p] = outputs[(0, p)]
                done += 1
                if progress is not None:
                    row = configs[c][0]
                    progress(done, total, row.draft if row.k is None else f"{row.draft} k={row.k}")
    for (c, p), out in outputs.items():
        if out != reference[p]:
            configs[c][0].tokens_match = False
    return [row for row, _ in configs]


def step_times(
    engine: Engine, prompt: Sequence[int], k: int, params: SamplingParams, *, at: int | None = None, reps: int = 30,
) -> dict[str, float]:
    """Median seconds of the pieces of one step of ``engine``'s device loop at position ``at``
    (default: the end of ``prompt``): "target" (a target-only decode), and with a drafter "draft"
    (k proposals) and "verify" (the target's pass over k+1 positions and the acceptance).

    They run on one of the engine's own cache sets, through the engine's own loop (the same
    forward, fused or not, the same kernels and cache capacity), each captured in a CUDA graph
    the way the loop captures its steps (on a GPU; called directly on the CPU). Leviathan's
    prediction of a speculative step is draft + verify; the loop's own bookkeeping (commit, noise,
    read-backs) is what a measured step spends beyond it."""
    if engine.loop == "host":
        raise ValueError("step_times times the device loop (Engine(loop='device'))")
    P, dev = len(prompt), engine.model.device
    at = P if at is None else at
    last = engine.context + engine.k_max - k  # a step at ``at`` writes positions at - 1 .. at + k - 1
    if not P <= at <= last:
        raise ValueError(f"position {at} is outside [{P}, {last}] (the prompt, the engine's context)")
    caches = engine._take_caches(at + k, params, 0, GenerationStats())
    try:
        with torch.inference_mode():
            loop = caches.loop
            assert loop is not None
            with _on_device(dev, exclusive=False):
                caches.install()
                seq = torch.tensor([list(prompt)], dtype=torch.long, device=dev)
                if P > 1:
                    engine.model(seq[:, : P - 1], 0)  # a real context before the timed positions
                loop.start(seq, P, params, set())
                loop.L.fill_(at)
            with _on_device(dev, exclusive=True):
                runs = {name: loop._capture(fn) for name, fn in loop.parts(k, params).items()}
            with _on_device(dev, exclusive=False):
                return {name: _median_s(fn, dev, reps) for name, fn in runs.items()}
    finally:
        engine._caches.give_back(caches)


def _median_s(fn: Callable[[], Any], dev: torch.device, reps: int, warmup: int = 3) -> float:
    """Median seconds of one call (CUDA events around each on a GPU, the wall clock elsewhere)."""
    for _ in range(min(warmup, reps)):
        fn()
    times: list[float] = []
    for _ in range(reps):
        if dev.type == "cuda":
            a = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            b = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]

"""Speed and acceptance of drafters against target-only decoding, on the same prompts and weights.

Honest by construction: every configuration decodes every prompt once per round, and the order of
the configurations rotates from round to round, so on a shared, noisy machine they all see the same
load. A configuration is exactly what ``ponder local generate`` runs for the same flags (same
engine, same ``k`` and adaptive rule), and tokens/s is measured the same way (generated tokens
over prefill + decode time, from ``GenerationStats``), so the two agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._drafters import Drafter
from ._engine import Engine, make_drafter
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
    configs: list[tuple[BenchRow, Drafter | None]] = [(BenchRow("target", None), None)]
    for draft in drafts:
        drafter = make_drafter(draft, engine.model)  # built once: a draft model loads weights
        configs += [(BenchRow(draft, k), drafter) for k in ks]
    reference: dict[int, list[int]] = {}
    outputs: dict[tuple[int, int], list[int]] = {}

    def run(c: int, p: int) -> None:
        row, drafter = configs[c]
        engine.drafter = drafter
        engine.k, engine.k_max, engine.adaptive = row.k or 1, 2 * (row.k or 1), adaptive
        out, _, st = engine.generate_ids(ids[p], max_tokens, params)
        row.tokens += st.new_tokens
        row.seconds += st.prefill_s + st.decode_s
        row.drafted, row.accepted, row.steps = row.drafted + st.drafted, row.accepted + st.accepted, row.steps + st.target_steps
        outputs[(c, p)] = out

    try:
        for c in range(len(configs)):  # warm-up: first-call costs (allocation, page faults)
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
    finally:
        engine.drafter = None
    return [row for row, _ in configs]

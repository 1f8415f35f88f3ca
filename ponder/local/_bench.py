"""Speed and acceptance of drafters against target-only decoding, on the same prompts and weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    tokens: int
    seconds: float
    acceptance: float
    mean_accepted: float
    tokens_match: bool  # every prompt produced exactly the target-only tokens

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def run_bench(
    engine: Engine,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    drafts: Sequence[str] = ("layers:27", "ngram"),
    ks: Sequence[int] = (2, 4, 8),
    max_tokens: int = 64,
    adaptive: bool = False,
) -> list[BenchRow]:
    """Greedy decoding of every prompt: target-only first, then each drafter at each k."""
    tok = engine.tokenizer
    assert tok is not None
    ids = [tok.encode_chat([{"role": "user", "content": p}]) for p in prompts]
    params = SamplingParams()
    engine.generate_ids(ids[0], 4, params)  # warm-up (allocation, first-call overheads)

    def run(draft: str | None, k: int) -> tuple[list[list[int]], BenchRow]:
        engine.drafter = make_drafter(draft, engine.model)
        engine.k, engine.k_max, engine.adaptive = k, 2 * k if adaptive else k, adaptive
        outs, n, secs, drafted, accepted, steps = [], 0, 0.0, 0, 0, 0
        for p in ids:
            out, _, st = engine.generate_ids(p, max_tokens, params)
            outs.append(out)
            n, secs = n + st.new_tokens, secs + st.prefill_s + st.decode_s
            drafted, accepted, steps = drafted + st.drafted, accepted + st.accepted, steps + st.target_steps
        row = BenchRow(draft or "target", k if draft else None, n, secs,
                       accepted / drafted if drafted else 0.0, accepted / steps if steps else 0.0, True)
        return outs, row

    reference, base = run(None, 1)
    rows = [base]
    for draft in drafts:
        for k in ks if draft else (1,):
            outs, row = run(draft, k)
            row.tokens_match = outs == reference
            rows.append(row)
    engine.drafter = None
    return rows

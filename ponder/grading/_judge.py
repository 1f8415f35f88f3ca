"""An LLM as the grader, through any provider via :class:`ponder.Client` (so through its cache).

One pure plan per row (:meth:`JudgeGrader.requests`: which prompts to send) and one pure verdict
(:meth:`JudgeGrader.verdict`: what the replies mean); ``grade`` and ``agrade`` are thin loops
around them, so sync and async grading cannot drift.

Three modes, each a prompt template a user can replace (``str.format`` placeholders):

* ``correctness`` (the row has a ``reference``): is the response correct? ``{query}``,
  ``{response}``, ``{reference}``; the judge ends with ``[[yes]]`` or ``[[no]]``.
* ``rubric`` (no reference): an MT-Bench-style rating 1-10, normalised to [0, 1] as
  (rating - 1) / 9. ``{query}``, ``{response}``; the judge ends with ``[[N]]``.
* ``pairwise`` (``baseline`` set): the response against the baseline model's answer to the same
  query, asked in both orders so position bias cancels; score = mean of win 1 / tie 0.5 /
  loss 0. ``{query}``, ``{answer_a}``, ``{answer_b}``; the judge ends with ``[[A]]``, ``[[B]]``
  or ``[[C]]`` (tie).

A reply without its verdict gives a NaN score with the reason; judge calls run at temperature 0
and their cost is reported apart from the graded model's.
"""

from __future__ import annotations

import asyncio
import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError
from .._types import ChatRequest, Completion, ModelSpec
from ._base import Grade, text

MODES = ("correctness", "rubric", "pairwise")
PLACEHOLDERS = {
    "correctness": ("query", "response", "reference"),
    "rubric": ("query", "response"),
    "pairwise": ("query", "answer_a", "answer_b"),
}
_SYSTEM = "You are a careful, impartial grader of AI assistant answers."

DEFAULT_TEMPLATES = {
    "correctness": """\
Decide whether the assistant's answer to the question is correct, using the reference answer.
Judge only the final answer's correctness, not its style or length.

[Question]
{query}

[The Start of Reference Answer]
{reference}
[The End of Reference Answer]

[The Start of Assistant's Answer]
{response}
[The End of Assistant's Answer]

Explain briefly, then end with your verdict in exactly this format: [[yes]] if the answer is \
correct, [[no]] if it is not.""",
    "rubric": """\
Please act as an impartial judge and evaluate the quality of the response provided by an AI \
assistant to the user question below. Consider helpfulness, relevance, accuracy, depth, \
creativity and level of detail. Be as objective as possible.

[Question]
{query}

[The Start of Assistant's Answer]
{response}
[The End of Assistant's Answer]

Explain briefly, then rate the response on a scale of 1 to 10 in exactly this format: \
"Rating: [[5]]".""",
    "pairwise": """\
Please act as an impartial judge and compare the two AI assistants' answers to the user question \
below. Choose the assistant that follows the instructions and answers the question better. \
Do not let the order of the answers, their length or the assistants' names influence you.

[User Question]
{query}

[The Start of Assistant A's Answer]
{answer_a}
[The End of Assistant A's Answer]

[The Start of Assistant B's Answer]
{answer_b}
[The End of Assistant B's Answer]

Explain briefly, then output your final verdict in exactly this format: "[[A]]" if assistant A \
is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.""",
}

_YES_NO = re.compile(r"\[\[\s*(yes|no)\s*\]\]", re.IGNORECASE)
_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?\]\]")
_AB = re.compile(r"\[\[\s*([ABC])\s*\]\]")


def check_template(mode: str, template: str, *, source: str | None = None) -> str:
    """``template`` if it only uses the placeholders of ``mode``, else ConfigError."""
    if mode not in MODES:
        raise ConfigError(f"unknown judge template {mode!r}; use one of {', '.join(MODES)}",
                          file=source)
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ConfigError(f"invalid {mode} template: {exc} (write a literal brace as {{{{ or }}}})",
                          file=source) from None
    unknown = sorted(names - set(PLACEHOLDERS[mode]))
    if unknown:
        raise ConfigError(f"unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)} in "
                          f"the {mode} template; it may use "
                          f"{', '.join('{' + n + '}' for n in PLACEHOLDERS[mode])}", file=source)
    return template


def load_template(mode: str, path: str | Path) -> str:
    path = Path(path)
    try:
        raw = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the judge template: {exc}", file=str(path)) from None
    return check_template(mode, raw, source=str(path))


@dataclass
class JudgeGrader:
    """Grades with an LLM ``model`` (``provider:model`` or a config alias) through ``client``.

    ``baseline`` (a model name in the table) switches to pairwise mode: the row must then carry
    the baseline's answer as ``baseline_response`` (``grade_table`` fills it in).
    ``templates`` replaces some of :data:`DEFAULT_TEMPLATES` (keys: correctness, rubric, pairwise).
    """

    model: str | ModelSpec
    client: Any = None
    baseline: str | None = None
    templates: Mapping[str, str] = field(default_factory=dict)
    max_tokens: int | None = 1024
    name: str = "judge"
    requires: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for mode, template in self.templates.items():
            check_template(mode, template)
        self._templates = {**DEFAULT_TEMPLATES, **self.templates}

    def _client(self) -> Any:
        if self.client is None:
            from .._client import Client

            self.client = Client()
        return self.client

    # ---- the pure core --------------------------------------------------------------------
    def mode(self, row: Mapping[str, Any]) -> str:
        if self.baseline is not None:
            return "pairwise"
        return "correctness" if text(row.get("reference")).strip() else "rubric"

    def requests(self, response: str, row: Mapping[str, Any]) -> list[ChatRequest]:
        """The prompts to send for this row (two, in both orders, for pairwise)."""
        mode, query = self.mode(row), text(row.get("query"))
        template = self._templates[mode]
        if mode == "pairwise":
            base = text(row.get("baseline_response"))
            if text(row.get("model")) == self.baseline or not base.strip():
                return []  # nothing to ask: see verdict
            prompts = [template.format(query=query, answer_a=response, answer_b=base),
                       template.format(query=query, answer_a=base, answer_b=response)]
        else:
            prompts = [template.format(query=query, response=response,
                                       reference=text(row.get("reference")))]
        return [ChatRequest.of([{"role": "system", "content": _SYSTEM},
                                {"role": "user", "content": p}],
                               temperature=0.0, max_tokens=self.max_tokens) for p in prompts]

    def verdict(self, row: Mapping[str, Any], replies: Sequence[Completion]) -> Grade:
        """What the judge's replies mean, with their cost (pure: no calls)."""
        cost = sum(c.cost_usd for c in replies)
        cached = sum(int(c.cached) for c in replies)
        mode = self.mode(row)
        if mode == "pairwise" and not replies:
            if text(row.get("model")) == self.baseline:
                return Grade(0.5, "is the baseline (a tie with itself)")
            return Grade(math.nan, f"no answer from the baseline {self.baseline} for this query")
        score, reason = self._score(mode, [c.text for c in replies])
        return Grade(score, reason, cost_usd=cost, calls=len(replies), cached=cached)

    @staticmethod
    def _score(mode: str, texts: list[str]) -> tuple[float, str]:
        if mode == "correctness":
            found = _YES_NO.findall(texts[0])
            if not found:
                return math.nan, f"unparseable judge reply (no [[yes]]/[[no]]): {_snippet(texts[0])}"
            yes = found[-1].lower() == "yes"
            return (1.0 if yes else 0.0), ("judge: correct" if yes else "judge: incorrect")
        if mode == "rubric":
            ratings = _RATING.findall(texts[0])
            rating = float(ratings[-1]) if ratings else math.nan
            if not 1 <= rating <= 10:
                return math.nan, f"unparseable judge reply (no [[1-10]] rating): {_snippet(texts[0])}"
            return (rating - 1) / 9, f"judge: rated {rating:g}/10"
        # pairwise: reply 0 has the response as A, reply 1 has it as B
        picks = [(_AB.findall(t) or [None])[-1] for t in texts]
        if None in picks:
            bad = texts[picks.index(None)]
            return math.nan, f"unparseable judge reply (no [[A]]/[[B]]/[[C]]): {_snippet(bad)}"
        ours = ("A", "B")
        points = [1.0 if p == ours[i] else 0.5 if p == "C" else 0.0 for i, p in enumerate(picks)]
        words = {1.0: "win", 0.5: "tie", 0.0: "loss"}
        return sum(points) / 2, f"judge vs baseline: {words[points[0]]} as A, {words[points[1]]} as B"

    # ---- thin loops -----------------------------------------------------------------------
    def grade(self, response: str, row: Mapping[str, Any]) -> Grade:
        client = self._client()
        return self.verdict(row, [client.complete(r, model=self.model)
                                  for r in self.requests(response, row)])

    async def agrade(self, response: str, row: Mapping[str, Any]) -> Grade:
        client = self._client()
        replies = await asyncio.gather(*[client.acomplete(r, model=self.model)
                                         for r in self.requests(response, row)])
        return self.verdict(row, replies)


def _snippet(s: str) -> str:
    s = " ".join(s.split())
    return repr(s[:60] + ("…" if len(s) > 60 else ""))

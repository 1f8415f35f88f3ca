"""Live verification signals for a rung: ``samples = n`` answers and token log-probabilities.

Asked as ``ponder collect`` asks (:func:`ponder.collect.plan_jobs`, :func:`~ponder.collect.job_request`,
missing samples asked again one at a time) and merged into one :class:`~ponder.Completion`, so the
scorer sees live what it saw on the recorded table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._exceptions import ProviderError
from .._types import ChatRequest, Completion, Usage
from ..collect import CollectPrompt, Job, honours, job_request, plan_jobs, supports_n

if TYPE_CHECKING:
    from ..evaluation import OutcomeTable
    from ..scorers import AnswerScorer
    from ._policy import Rung

__all__ = ["acomplete_rung", "complete_rung", "rung_signal_settings"]


def _jobs(client: Any, request: ChatRequest, rung: Rung) -> list[Job]:
    prompt = CollectPrompt(id="live", request=request, query=request.query)
    return plan_jobs([prompt], [rung.live], set(), samples=rung.samples,
                     supports_n=lambda m: supports_n(client, m))


def _owed(job: Job, result: Completion) -> list[Job]:
    """Single-sample jobs for the samples a provider did not answer (as ``ponder collect``)."""
    got = len(result.samples or (result.text,))
    return [Job(job.prompt, job.model, (i,)) for i in job.samples[got:]]


def _merge(parts: Sequence[Completion]) -> Completion:
    head = parts[0]
    if len(parts) == 1:
        return head
    texts = tuple(t for c in parts for t in (c.samples or (c.text,)))
    usage = Usage(input_tokens=sum(c.usage.input_tokens for c in parts),
                  output_tokens=sum(c.usage.output_tokens for c in parts),
                  cached_input_tokens=sum(c.usage.cached_input_tokens for c in parts))
    return head.model_copy(update={
        "samples": texts, "usage": usage, "cost_usd": sum(c.cost_usd for c in parts),
        "saved_usd": sum(c.saved_usd for c in parts),
        "cost_estimated": any(c.cost_estimated for c in parts),
        "latency_s": sum(c.latency_s for c in parts), "cached": all(c.cached for c in parts)})


def _request(client: Any, job: Job, rung: Rung) -> ChatRequest:
    return job_request(job, temperature=None, max_tokens=None, logprobs=rung.logprobs,
                       seeds=honours(client, job.model, "seed"))


def complete_rung(client: Any, request: ChatRequest, rung: Rung) -> Completion:
    """``rung``'s answer with the samples and logprobs it wants; a later sample's failure leaves it out."""
    if rung.samples <= 1 and not rung.logprobs:
        completion: Completion = client.complete(request, model=rung.live)
        return completion
    queue = _jobs(client, request, rung)
    parts: list[Completion] = []
    while queue:
        job = queue.pop(0)
        try:
            result = client.complete(_request(client, job, rung), model=job.model)
        except ProviderError:
            if not parts:
                raise
            continue
        parts.append(result)
        queue[:0] = _owed(job, result)
    return _merge(parts)


async def acomplete_rung(client: Any, request: ChatRequest, rung: Rung) -> Completion:
    """Async twin of :func:`complete_rung`: the first call, then the other samples concurrently."""
    if rung.samples <= 1 and not rung.logprobs:
        completion: Completion = await client.acomplete(request, model=rung.live)
        return completion
    jobs = _jobs(client, request, rung)
    first = await client.acomplete(_request(client, jobs[0], rung), model=jobs[0].model)
    rest = _owed(jobs[0], first) + jobs[1:]
    parts = [first]
    while rest:
        results = await asyncio.gather(
            *[client.acomplete(_request(client, j, rung), model=j.model) for j in rest],
            return_exceptions=True)
        owed: list[Job] = []
        for job, res in zip(rest, results, strict=True):
            if isinstance(res, Completion):
                parts.append(res)
                owed += _owed(job, res)
            elif not isinstance(res, ProviderError):
                raise res
        rest = owed
    return _merge(parts)  # gather keeps the jobs' order, so the samples keep theirs


def rung_signal_settings(table: OutcomeTable, model: str, scorer: AnswerScorer | None
                         ) -> tuple[int, bool]:
    """``(samples, logprobs)`` a rung for ``model`` asks for so its scorer sees live what it saw in
    ``table`` (the recorded samples when it uses self-consistency; logprobs when recorded)."""
    used = set(getattr(scorer, "signals_", ()) or ())
    if scorer is None or not used or model not in table.models:
        return 1, False
    m = table.models.index(model)
    samples = 1
    if used & {"sc_agree", "sc_pairwise"}:
        counts = [len(s) for s in table.samples[:, m] if len(s)]
        samples = int(np.median(counts)) if counts else 1
    logprobs = bool(used & {"logprob_mean", "logprob_min"}) and bool(
        np.isfinite(table.logprob_mean[:, m]).any())
    return max(samples, 1), logprobs

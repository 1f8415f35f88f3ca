"""The plan, pure: which calls are still missing (:func:`plan_jobs`) and the request for each
(:func:`job_request`). Cascades ask for ``samples`` and log-probabilities through these same two
steps, so a live rung and ``ponder collect`` send the same requests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._exceptions import PonderError
from .._types import ChatRequest
from ._input import CollectPrompt

if TYPE_CHECKING:
    from .._client import Client


Key = tuple[str, str, int]  # (query_id, model, sample)


@dataclass(frozen=True)
class Job:
    """One call: ``model`` answers ``prompt`` for these sample indices (``n`` at once)."""

    prompt: CollectPrompt
    model: str
    samples: tuple[int, ...]

    @property
    def id(self) -> str:
        """A stable id within what batch APIs accept (Anthropic: ``[a-zA-Z0-9_-]{1,64}``)."""
        key = json.dumps([self.prompt.id, self.model, list(self.samples)], ensure_ascii=False)
        return "collect-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]


def plan_jobs(prompts: Sequence[CollectPrompt], models: Sequence[str], done: set[Key], *,
              samples: int = 1, supports_n: Callable[[str], bool] = lambda m: False) -> list[Job]:
    """For every prompt and model, the sample indices not in ``done``: one job for all of them
    where the provider answers ``n`` at once (the input paid once), else one per sample."""
    jobs: list[Job] = []
    for model in models:
        batched = samples > 1 and supports_n(model)
        for p in prompts:
            missing = tuple(i for i in range(samples) if (p.id, model, i) not in done)
            groups = [missing] if batched and missing else [(i,) for i in missing]
            jobs.extend(Job(p, model, g) for g in groups)
    return jobs


def job_request(job: Job, *, temperature: float | None, max_tokens: int | None,
                logprobs: bool, seeds: bool = True) -> ChatRequest:
    """The request for a job. A job from a later sample carries ``seed = index`` (unless the
    prompt sets one, or ``seeds=False``): another cache key, and a reproducible other answer."""
    update: dict[str, Any] = {k: v for k, v in {"temperature": temperature, "max_tokens": max_tokens,
                                                 "logprobs": logprobs or None}.items() if v is not None}
    if len(job.samples) > 1:
        update["n"] = len(job.samples)
    if seeds and job.samples[0] > 0 and job.prompt.request.seed is None:
        # also for a resumed n-job (samples 1..k): a server that ignores n answers it once, and
        # that answer must not be an unseeded draw that repeats sample 0
        update["seed"] = job.samples[0]
    # only what the row set: a field dumped as None would be sent upstream as null
    return ChatRequest.model_validate({**job.prompt.request.model_dump(exclude_unset=True), **update})



def _provider(client: Client, model: str) -> Any:
    """The provider that answers ``model`` (under the CachedProvider wrapper), or None."""
    try:
        provider = client.provider(client.resolve(model).provider)
    except PonderError:
        return None
    return getattr(provider, "provider", provider)


def honours(client: Client, model: str, field: str) -> bool:
    """Whether the model's provider honours request field ``field`` (see ``refuse_unsupported``)."""
    provider = _provider(client, model)
    if provider is None:
        return False
    accepts = getattr(provider, "accepts", None)
    return accepts is None or field in accepts


def supports_n(client: Client, model: str) -> bool:
    """Whether the model's provider answers ``n`` samples in one request (OpenAI-compatible)."""
    return bool(getattr(_provider(client, model), "supports_n", False))

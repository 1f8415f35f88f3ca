"""The run: what the missing answers would cost (:func:`estimate_collect`), and the loops that
make the calls (:func:`acollect`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._batch import BatchSummary, _Writer, drain, run_sync
from .._exceptions import PonderError
from .._pricing import estimate_tokens
from .._types import ChatRequest, Completion, Usage
from ._input import PromptsIn, as_prompts
from ._plan import Job, honours, job_request, plan_jobs, supports_n
from ._records import answer_records, build_table, error_records, num, progress_path, read_collected

if TYPE_CHECKING:
    from .._client import Client
    from ..evaluation import OutcomeTable

DEFAULT_OUTPUT_GUESS = 256  # tokens per answer assumed by estimates when nothing better is known
_MESSAGE_OVERHEAD = 4  # tokens per chat message beyond its text (role and separators), roughly


@dataclass
class CollectSummary(BatchSummary):
    """What a run did, in calls; ``answers`` counts the samples planned, ``skipped`` those already
    collected."""

    answers: int = 0
    output: str | None = None

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.failed


@dataclass(frozen=True)
class CollectEstimate:
    """The expected cost of one model's missing answers; output length is a guess."""

    model: str
    calls: int
    answers: int
    input_tokens: int
    output_tokens: int
    output_guess: int  # tokens per answer assumed
    guess_source: str  # "--max-tokens", "measured mean of N answers", "default"
    cost_usd: float | None  # None when the price table has no price for the model


def _prompt_tokens(request: ChatRequest) -> int:
    tokens = sum(estimate_tokens(m.text) + _MESSAGE_OVERHEAD for m in request.messages)
    for extra in (request.tools, request.response_format):  # tool and schema definitions are input too
        if extra:
            tokens += estimate_tokens(json.dumps(extra, ensure_ascii=False))
    return tokens


def _client(client: Client | None) -> nullcontext[Client] | Client:
    """The caller's client as it is, or one of ours, closed when the run ends."""
    from .._client import Client

    return nullcontext(client) if client is not None else Client()


class _Run:
    """One collect run, planned from what earlier runs left: records go to the pool and the
    progress file as they arrive."""

    def __init__(self, prompts: PromptsIn, models: Sequence[str], client: Client,
                 output: str | Path | None, samples: int) -> None:
        if not models:
            raise PonderError("give at least one model (provider:model)")
        self.prompts = as_prompts(prompts)
        self.models = list(dict.fromkeys(str(client.resolve(m)) for m in models))
        # sample records: from the output table, then the progress file (whose records are kept
        # when it is rewritten)
        self.existing, self.pool, self.sidecar = (read_collected(Path(output)) if output is not None
                                                  else (None, {}, []))
        self.touched = {(r["query_id"], r["model"]) for r in self.sidecar}  # pairs in the progress file
        done = {k for k, r in self.pool.items() if r.get("error") is None}
        self.jobs = plan_jobs(self.prompts, self.models, done, samples=samples,
                              supports_n=lambda m: supports_n(client, m))
        self.summary = CollectSummary(total=len(self.jobs), answers=sum(len(j.samples) for j in self.jobs),
                                      output=None if output is None else str(output))
        self.summary.skipped = len(self.prompts) * len(self.models) * samples - self.summary.answers
        self.writer: _Writer | None = None
        self.on_result: Callable[[CollectSummary], None] | None = None
        self.start = time.perf_counter()

    def estimate(self, client: Client, max_tokens: int | None, provider_batch: bool) -> list[CollectEstimate]:
        """Expected cost per model of the jobs from the prompts' estimated tokens and the price table.
        Output length: ``max_tokens``, else this model's mean answer so far, else a default."""
        out = []
        for model in self.models:
            mine = [j for j in self.jobs if j.model == model]
            # sample records: the first of a call carries all its output tokens, so sum / count is
            # the mean per answer
            answered = [r for (_, m, _), r in self.pool.items()
                        if m == model and r.get("error") is None]
            if max_tokens is not None:
                guess, source = max_tokens, "--max-tokens"
            elif answered:
                n_out = sum(int(num(r.get("output_tokens"))) for r in answered)
                guess = max(1, round(n_out / len(answered)))
                source = f"measured mean of {len(answered)} answers"
            else:
                guess, source = DEFAULT_OUTPUT_GUESS, "default"
            spec = client.resolve(model)
            price = client.prices.lookup(spec.provider, spec.model)
            tin = sum(_prompt_tokens(j.prompt.request) for j in mine)
            answers = sum(len(j.samples) for j in mine)
            tout = guess * answers
            cost = None
            if price is not None:
                rate = client.prices.batch_rate(spec.provider) if provider_batch else 1.0
                usage = Usage(input_tokens=tin, output_tokens=tout)
                cost = 0.0 if not mine else price.cost(usage, rate=rate) + price.per_request * (len(mine) - 1)
            out.append(CollectEstimate(model=model, calls=len(mine), answers=answers, input_tokens=tin,
                                       output_tokens=tout, output_guess=guess, guess_source=source,
                                       cost_usd=cost))
        return out

    def record(self, job: Job, result: Completion | BaseException) -> list[Job]:
        """Store a job's outcome; returns the jobs still owed where fewer than ``n`` came back."""
        s = self.summary
        s.count(result)
        if isinstance(result, Completion):
            recs = answer_records(job, result)
            owed = [Job(job.prompt, job.model, (i,)) for i in job.samples[len(recs):]]
        else:
            recs, owed = error_records(job, job.samples, result), []
        for r in recs:
            self.pool[(job.prompt.id, job.model, int(r["sample"]))] = r
            if self.writer is not None:
                self.writer.write(r)
        self.touched.add((job.prompt.id, job.model))
        s.total += len(owed)
        s.elapsed_s = time.perf_counter() - self.start
        if self.on_result is not None:
            self.on_result(s)
        return owed

    async def calls(self, client: Client, request_for: Callable[[Job], ChatRequest], concurrency: int,
                    max_cost: float | None) -> None:
        async def call(job: Job) -> list[Job]:
            try:
                result: Completion | BaseException = await client.acomplete(request_for(job), model=job.model)
            except PonderError as exc:
                result = exc
            return self.record(job, result)  # the samples still owed are queued again

        await drain(self.jobs, call, self.summary, concurrency=concurrency, max_cost=max_cost)

    async def provider_batch(self, client: Client, request_for: Callable[[Job], ChatRequest],
                             state_path: Path, poll_s: float) -> None:
        from .._provider_batch import BatchItem, run_provider_batch

        items = [BatchItem(custom_id=j.id, model=j.model, request=request_for(j)) for j in self.jobs]

        def progress(done: int, total: int) -> None:
            if self.on_result is not None:
                self.on_result(self.summary)

        results = await asyncio.to_thread(run_provider_batch, client, items, state_path=state_path,
                                          poll_s=poll_s, on_progress=progress)
        for job in self.jobs:
            got = results.get(job.id)
            self.record(job, got if got is not None else
                        PonderError(f"the provider batch returned no result for {job.id}"))


def estimate_collect(prompts: PromptsIn, models: Sequence[str], *, client: Client | None = None,
                     output: str | Path | None = None, samples: int = 1,
                     max_tokens: int | None = None, provider_batch: bool = False) -> list[CollectEstimate]:
    """What :func:`collect` would spend on the answers still missing, per model; calls nothing."""
    with _client(client) as used:
        return _Run(prompts, models, used, output, samples).estimate(used, max_tokens, provider_batch)


async def acollect(
    prompts: PromptsIn,
    models: Sequence[str],
    *,
    client: Client | None = None,
    output: str | Path | None = None,
    concurrency: int = 8,
    samples: int = 1,
    temperature: float | None = None,
    max_tokens: int | None = None,
    logprobs: bool = False,
    max_cost: float | None = None,
    provider_batch: bool = False,
    batch_poll_s: float = 5.0,
    on_start: Callable[[CollectSummary], None] | None = None,
    on_result: Callable[[CollectSummary], None] | None = None,
) -> OutcomeTable:
    """Answer every prompt with every model (``samples`` answers each) into an ungraded outcome
    table; with ``output``, resumably (see :mod:`ponder.collect`). ``max_cost`` stops starting
    calls once this run paid that many USD; ``provider_batch`` uses the providers' batch APIs.

    A row's cost and tokens are what all its samples were billed (a cache hit keeps the cost);
    ``response`` and the logprob columns are the first sample's, ``samples`` all (a JSON list);
    ``tool_calls`` / ``sample_tool_calls`` the answers' calls, ``response_format`` the prompt's
    (what ``ponder grade --grader json`` checks), ``error`` a failed call's message."""
    from ..evaluation._table import OutcomeTable, write_table

    if concurrency < 1:
        raise PonderError("concurrency must be at least 1")
    if samples < 1:
        raise PonderError("samples must be at least 1")
    async with _client(client) as used:
        run = _Run(prompts, models, used, output, samples)
        summary = run.summary
        if on_start is not None:
            on_start(summary)

        def request_for(job: Job) -> ChatRequest:
            return job_request(job, temperature=temperature, max_tokens=max_tokens, logprobs=logprobs,
                               seeds=honours(used, job.model, "seed"))

        run.writer = _Writer(progress_path(output), run.sidecar) if output is not None and run.jobs else None
        run.on_result, run.start = on_result, time.perf_counter()
        try:
            if provider_batch and run.jobs:
                est = sum(e.cost_usd or 0.0 for e in run.estimate(used, max_tokens, True))
                if max_cost is not None and est > max_cost:
                    summary.stopped = (f"the estimated cost ${est:.4f} exceeds the budget of ${max_cost:g}; "
                                       "nothing was submitted")
                else:
                    stem = output if output is not None else ".ponder-collect"
                    await run.provider_batch(used, request_for, Path(f"{stem}.batches.json"), batch_poll_s)
            elif run.jobs:
                await run.calls(used, request_for, concurrency, max_cost)
        finally:
            if run.writer is not None:
                run.writer.close()
            df = build_table(run.prompts, run.models, run.existing, run.pool, run.touched)
            summary.elapsed_s = time.perf_counter() - run.start
            if output is not None:
                write_table(df, output)
                wanted = {(p.id, m) for p in run.prompts for m in run.models}
                if df["error"].isna().all() and run.touched <= wanted and not summary.stopped:
                    progress_path(output).unlink(missing_ok=True)  # the table holds every answer
        return OutcomeTable.read(df, name=Path(output).name if output is not None else "collected",
                                 graded=False)


def collect(prompts: PromptsIn, models: Sequence[str], **kw: Any) -> OutcomeTable:
    """The synchronous twin of :func:`acollect` (see :func:`ponder._batch.run_sync`)."""
    return run_sync(acollect(prompts, models, **kw), lambda: [kw.get("client")])

"""Collect an outcome table from your own prompts: every model answers every prompt, resumably.

One decision core and thin loops around it, one module per job (``_input``: the prompt file;
``_plan``: the calls; ``_records``: records, progress file and output table; ``_run``: the loops):

* :func:`read_prompts` validates the whole input first (a bad row fails before anything is paid);
* :func:`plan_jobs` is pure: given the prompts, the models and the (query, model, sample) triples
  already answered, it says which calls are missing (one call per model and prompt where the
  provider answers ``n`` samples at once, else one call per sample);
* :func:`acollect` runs the jobs N at a time (or through the providers' batch APIs), and
  :func:`collect` is ``asyncio.run`` around it.

Resume: each answered sample is appended to ``<output>.progress.jsonl`` as soon as it arrives
(one flushed JSON line, the same writer as ``ponder run``), and the output table is rewritten from
it when the run ends. A rerun skips every triple found in the output table or the progress file,
so nothing is written or paid twice; answers that were paid but not yet written come back free
from the completion cache (sampled ones only with ``cache_sampled``). Failed calls are recorded
with their error and retried by the next run. The progress file is removed once the output table
holds every answer without errors. A progress record that cannot be used (a torn line, missing
fields) is dropped with a warning naming its line, and its answer is asked again.
"""

from ._input import CollectPrompt, read_prompts
from ._plan import Job, Key, honours, job_request, plan_jobs, supports_n
from ._records import progress_path
from ._run import CollectEstimate, CollectSummary, acollect, collect, estimate_collect

__all__ = [
    "CollectEstimate",
    "CollectPrompt",
    "CollectSummary",
    "Job",
    "Key",
    "acollect",
    "collect",
    "estimate_collect",
    "honours",
    "job_request",
    "plan_jobs",
    "progress_path",
    "read_prompts",
    "supports_n",
]

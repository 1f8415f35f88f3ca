"""Collect an outcome table from your own prompts: every model answers every prompt, resumably.

:func:`read_prompts` validates the whole input first (a bad row fails before anything is paid);
:func:`plan_jobs` is pure: given what is already answered, the calls still missing (one per
model and prompt where the provider answers ``n`` samples at once, else one per sample);
:func:`acollect` runs them N at a time (or through the providers' batch APIs).

Resume: each answered sample is appended to ``<output>.progress.jsonl`` as it arrives (the
writer of ``ponder run``), and the output table is rebuilt from it when the run ends. A rerun
skips every (query, model, sample) in the output table or the progress file, so nothing is paid
twice; answers paid but not yet written come back free from the completion cache (sampled ones
only with ``cache_sampled``). Failed calls are recorded with their error and retried next run.
The progress file goes once the table holds every answer without errors; an unusable progress
record (a torn line, missing fields) is dropped with a warning and its answer asked again.
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

"""Collect an outcome table from your own prompts: every model answers every prompt, resumably.

:func:`read_prompts` validates the whole input before anything is paid, :func:`plan_jobs` (pure)
lists the calls still missing, :func:`acollect` makes them (or through the providers' batch APIs).

Resume: each answered sample is appended to ``<output>.progress.jsonl`` as it arrives, and the
table is rebuilt from it when the run ends. A rerun skips every (query, model, sample) in the table
or the progress file, so nothing is paid twice (answers paid but not written come back free from
the cache; sampled ones only with ``cache_sampled``); failed calls are retried. The progress file
goes once the table holds every answer without errors; an unusable record is dropped with a
warning and its answer asked again.
"""

from ._input import CollectPrompt, read_prompts
from ._plan import Job, Key, honours, job_request, plan_jobs, supports_n
from ._records import progress_path
from ._run import CollectEstimate, CollectSummary, acollect, collect, estimate_collect

__all__ = [
    "CollectEstimate", "CollectPrompt", "CollectSummary", "Job", "Key", "acollect", "collect",
    "estimate_collect", "honours", "job_request", "plan_jobs", "progress_path", "read_prompts",
    "supports_n",
]

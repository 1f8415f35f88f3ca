"""Collect an outcome table from your own prompts: every model answers every prompt, resumably.

Each answered sample is appended to ``<output>.progress.jsonl`` as it arrives and the table rebuilt
from it at the end; a rerun skips every (query, model, sample) in either, so nothing is paid twice
(answers paid but not written come back from the cache; sampled ones only with ``cache_sampled``),
and retries failed calls. The progress file goes once the table holds every answer without errors.
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

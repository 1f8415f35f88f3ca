"""ponder: spend expensive LLM compute only where a query needs it.

The public API is listed here; everything else lives in private modules. ``import ponder`` never
imports torch, triton or transformers (the self-hosted engine is ``ponder.local``).
"""

from ._batch import BatchSummary, arun_batch, run_batch
from ._cache import CacheBackend, CachedProvider, CacheStats, DiskCacheBackend, cache_key
from ._client import Client
from ._config import CacheSettings, Config, ProviderSettings, config_problems, load_config
from ._exceptions import (
    AllModelsFailed,
    AuthError,
    BadResponse,
    BudgetExceeded,
    CacheDisabled,
    CacheUnavailable,
    ConfigError,
    ContextTooLong,
    DataError,
    ModelFileError,
    PonderError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    UnknownModel,
    UnknownProvider,
    UnsupportedRequest,
)
from ._pricing import Price, PriceTable
from ._types import (
    Answer,
    Attempt,
    ChatRequest,
    Choice,
    Completion,
    LogprobStats,
    Message,
    ModelSpec,
    Usage,
)
from ._verify import verify
from .collect import CollectEstimate, CollectSummary, acollect, collect, estimate_collect
from .grading import (
    Agreement,
    ChoiceGrader,
    CodeGrader,
    ExactMatch,
    Grade,
    Grader,
    GradeSummary,
    JsonGrader,
    JudgeGrader,
    NumberGrader,
    RegexGrader,
    agrade_table,
    agreement,
    grade_table,
    parse_grader,
)
from .providers import Provider
from .strategies import SingleModel, load_strategy

__version__ = "0.1.0"

__all__ = [
    "Client", "ChatRequest", "Message", "Completion", "Choice", "Answer", "Attempt", "LogprobStats",
    "ModelSpec", "Usage", "verify", "Provider", "SingleModel", "load_strategy",
    "Config", "ProviderSettings", "CacheSettings", "config_problems", "load_config", "Price",
    "PriceTable",
    "CacheBackend", "CachedProvider", "CacheStats", "DiskCacheBackend", "cache_key",
    "BatchSummary", "arun_batch", "run_batch", "CollectEstimate", "CollectSummary", "acollect",
    "collect", "estimate_collect",
    "Agreement", "ChoiceGrader", "CodeGrader", "ExactMatch", "Grade", "Grader", "GradeSummary",
    "JsonGrader", "JudgeGrader", "NumberGrader", "RegexGrader", "agrade_table", "agreement",
    "grade_table", "parse_grader",
    "PonderError", "ConfigError", "DataError", "ModelFileError", "NotFittedError", "BudgetExceeded",
    "CacheUnavailable", "CacheDisabled", "UnknownProvider", "UnknownModel", "ProviderError",
    "AuthError", "RateLimited", "ProviderTimeout", "ProviderUnavailable", "ContextTooLong",
    "BadResponse", "UnsupportedRequest", "AllModelsFailed", "__version__",
]


def __getattr__(name: str) -> object:
    # NotFittedError subclasses scikit-learn's, whose import takes about 2 s: built on first use.
    if name == "NotFittedError":
        from . import _exceptions

        return _exceptions.NotFittedError
    raise AttributeError(f"module 'ponder' has no attribute {name!r}")

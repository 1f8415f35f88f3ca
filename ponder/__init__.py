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
    NotFittedError,
    PonderError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    UnknownModel,
    UnknownProvider,
)
from ._pricing import Price, PriceTable
from ._strategies import SingleModel, load_strategy
from ._types import Answer, Attempt, ChatRequest, Completion, Message, ModelSpec, Usage
from .providers import Provider

__version__ = "0.1.0"

__all__ = [
    "AllModelsFailed",
    "Answer",
    "Attempt",
    "AuthError",
    "BadResponse",
    "BatchSummary",
    "BudgetExceeded",
    "CacheDisabled",
    "CacheUnavailable",
    "CacheBackend",
    "CacheSettings",
    "CacheStats",
    "CachedProvider",
    "ChatRequest",
    "Client",
    "Completion",
    "Config",
    "ConfigError",
    "ContextTooLong",
    "DataError",
    "DiskCacheBackend",
    "Message",
    "ModelFileError",
    "ModelSpec",
    "NotFittedError",
    "PonderError",
    "Price",
    "PriceTable",
    "Provider",
    "ProviderError",
    "ProviderSettings",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "SingleModel",
    "UnknownModel",
    "UnknownProvider",
    "Usage",
    "arun_batch",
    "cache_key",
    "config_problems",
    "load_config",
    "load_strategy",
    "run_batch",
    "__version__",
]

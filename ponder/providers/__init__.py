"""Providers: one Protocol, sync and async, priced Completions, errors translated at the boundary."""

from ._base import BaseProvider, Provider, Reply, RetryPolicy, retry_delay
from ._registry import BUILTIN, build_provider

__all__ = ["BUILTIN", "BaseProvider", "Provider", "Reply", "RetryPolicy", "build_provider", "retry_delay"]

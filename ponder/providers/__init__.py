"""Providers: one Protocol, sync and async, priced Completions, errors translated at the boundary."""

from ._base import BaseProvider, Provider, Reply, RetryPolicy, retry_delay
from ._registry import build_provider, provider_kinds, register

__all__ = ["BaseProvider", "Provider", "Reply", "RetryPolicy", "build_provider", "provider_kinds", "register",
           "retry_delay"]

"""ponder's errors, one tree.

    PonderError
    ├── ConfigError(file, key)            a config file or value is wrong
    ├── DataError(file, row, column)      an outcome table or input row is wrong
    ├── ModelFileError(path)              a scorer/router/model file is tampered, foreign or too new
    ├── NotFittedError                    an estimator was used before ``fit`` (also sklearn's NotFittedError)
    ├── BudgetExceeded                    a batch ran out of budget (``ponder run --max-cost``)
    ├── CacheUnavailable(where, reason)   the cache cannot be opened, read or written (ponder goes on without it)
    ├── CacheDisabled                     the cache is turned off, so it has no statistics
    ├── UnknownProvider / UnknownModel    a ``provider:model`` spec cannot be resolved
    └── ProviderError(provider, model)    a provider call failed
        ├── AuthError                     wrong or missing credentials
        ├── RateLimited(retry_after)      HTTP 429
        ├── ProviderTimeout               the request timed out
        ├── ProviderUnavailable           connection refused / 5xx after retries
        ├── ContextTooLong                the prompt does not fit the model
        ├── BadResponse                   the provider answered with something unusable
        ├── UnsupportedRequest(param)     a field or content part this provider/model cannot honour
        └── AllModelsFailed(errors)       every rung of a cascade or fallback chain failed

SDK exceptions become these at the provider boundary. Messages (and ``reason``) are scrubbed of
credentials when the error is built, so whatever renders one (CLI, traces, HTTP, logs) is clean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._secrets import scrub

__all__ = [
    "PonderError", "ConfigError", "DataError", "ModelFileError", "NotFittedError",
    "BudgetExceeded", "CacheUnavailable", "CacheDisabled", "UnknownProvider", "UnknownModel",
    "ProviderError", "AuthError", "RateLimited", "ProviderTimeout", "ProviderUnavailable",
    "ContextTooLong", "BadResponse", "UnsupportedRequest", "AllModelsFailed",
]


class PonderError(Exception):
    """Base of every error ponder raises on purpose."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(scrub(a) if isinstance(a, str) else a for a in args))
        reason = getattr(self, "reason", None)  # subclasses set it before calling here
        if isinstance(reason, str):
            self.reason = scrub(reason)


def _at(where: str | None, message: str) -> str:
    return f"{where}: {message}" if where else message


class ConfigError(PonderError):
    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file, self.key, self.reason = file, key, message
        super().__init__(_at(": ".join(p for p in (file, key) if p), message))


class DataError(PonderError):
    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 column: str | None = None) -> None:
        self.file, self.row, self.column, self.reason = file, row, column, message
        parts = [str(file) if file else "", "" if row is None else f"row {row}",
                 f"column {column!r}" if column else ""]
        super().__init__(_at(", ".join(p for p in parts if p), message))


class ModelFileError(PonderError):
    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(_at(path, message))


if TYPE_CHECKING:
    from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

    class NotFittedError(PonderError, _SklearnNotFittedError):  # type: ignore[misc]  # sklearn is untyped
        """Raised when an estimator is used before ``fit``."""

else:

    def __getattr__(name: str) -> object:
        # NotFittedError subclasses scikit-learn's, and importing scikit-learn costs ~1.5 s (it
        # loads scipy.stats), so the class is built on first use rather than at ``import ponder``.
        if name != "NotFittedError":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

        class NotFittedError(PonderError, _SklearnNotFittedError):
            """Raised when an estimator is used before ``fit`` (scikit-learn's error too)."""

        NotFittedError.__module__, NotFittedError.__qualname__ = __name__, "NotFittedError"
        # A module global, so later look-ups (and pickle) skip this; setdefault: one class per race.
        return globals().setdefault("NotFittedError", NotFittedError)


class BudgetExceeded(PonderError):
    """A spending limit stopped the work (``ponder run --max-cost``; ``run_batch`` sets ``stopped``)."""


class CacheUnavailable(PonderError):
    """The cache failed at ``where`` (a file, or a URL without its password) for ``reason``."""

    def __init__(self, where: str, reason: str, fix: str = "") -> None:
        self.where, self.reason, self.fix = where, reason, fix
        super().__init__(f"cache at {where} is unavailable ({reason})" + (f"; {fix}" if fix else ""))


class CacheDisabled(PonderError):
    """The cache is turned off (``cache=False`` or ``[cache] enabled = false``): it has no statistics."""


class UnknownProvider(PonderError):
    pass


class UnknownModel(PonderError):
    pass


class ProviderError(PonderError):
    """A provider call failed. Carries the provider and model, never the key."""

    def __init__(self, message: str, *, provider: str = "", model: str = "") -> None:
        self.provider, self.model, self.reason = provider, model, message
        super().__init__(_at(f"{provider}:{model}" if provider and model else (provider or model),
                             message))


class AuthError(ProviderError):
    pass


class RateLimited(ProviderError):
    def __init__(self, message: str, *, provider: str = "", model: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(message, provider=provider, model=model)
        self.retry_after = retry_after


class ProviderTimeout(ProviderError):
    pass


class ProviderUnavailable(ProviderError):
    pass


class ContextTooLong(ProviderError):
    pass


class BadResponse(ProviderError):
    pass


class UnsupportedRequest(ProviderError):
    """Refused before sending (never dropped silently): a strategy falls through to a rung that can
    serve it, a server answers 400 naming ``param`` when none can."""

    def __init__(self, message: str, *, param: str | None = None, provider: str = "",
                 model: str = "") -> None:
        super().__init__(message, provider=provider, model=model)
        self.param = param


class AllModelsFailed(ProviderError):
    """Every rung failed (``errors``: (model, error) in order); not a ProviderUnavailable, since
    every rung was already retried and nothing should retry the whole chain."""

    def __init__(self, errors: Sequence[tuple[str, Exception]]) -> None:
        self.errors = list(errors)
        detail = "; ".join(f"{m}: {getattr(e, 'reason', None) or e}" for m, e in self.errors)
        super().__init__(f"all {len(self.errors)} models failed ({detail})")

    @property
    def uniform(self) -> type[Exception] | None:
        """The rate limit or timeout class every rung shares, else None (a server's one status)."""
        kinds = {type(e) for _, e in self.errors}
        kind = kinds.pop() if len(kinds) == 1 else None
        return kind if kind and issubclass(kind, (RateLimited, ProviderTimeout)) else None

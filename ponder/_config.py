"""One TOML file, validated by pydantic: providers, prices, the cache, model aliases, strategies."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from ._catalog import Capabilities
from ._exceptions import ConfigError
from ._persist import _matches
from ._pricing import Price, PriceTable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REDIS_SCHEMES = ("redis", "rediss", "unix")


def url_problem(value: str, schemes: tuple[str, ...]) -> str | None:
    """Why ``value`` is not a URL with one of ``schemes`` and a host (unix://: a path), else None."""
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        return f"{value!r} is not a valid URL ({exc})"
    want = " or ".join(f"{s}://" for s in schemes)
    if parts.scheme.lower() not in schemes:
        return f"must be a URL starting with {want}, got {value!r}"
    if parts.scheme.lower() == "unix":
        return None if parts.path else f"{value!r} needs a socket path (unix:///path/to/socket)"
    return None if parts.hostname else f"{value!r} has no host"


def _url(value: str | None, schemes: tuple[str, ...]) -> str | None:
    reason = None if value is None else url_problem(value, schemes)
    if reason:
        raise ValueError(reason)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderSettings(_Strict):
    """How to build one provider; ``type`` defaults to the section name."""

    type: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    base_url: str | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=20)
    backoff_initial_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    max_concurrency: int = Field(default=16, ge=1)
    path: str | None = None  # replay: outcome table; local: model file/folder
    draft: str | None = None  # local: drafter spec (PATH, layers:N, ngram)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is not None and value not in PROVIDER_TYPES:
            raise ValueError(f"unknown provider type {value!r}; use one of {', '.join(PROVIDER_TYPES)}")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _url(value, ("http", "https"))


# Provider type -> ``builder(name, settings, prices, common)``, filled by
# ``@ponder.providers.register``; it lives here, below the providers, so the config can check ``type``.
Builder = Callable[[str, ProviderSettings, PriceTable, dict[str, Any]], Any]
PROVIDER_TYPES: dict[str, Builder] = {}


class CacheSettings(_Strict):
    enabled: bool = True
    backend: Literal["disk", "redis"] = "disk"
    path: str | None = None  # disk: folder (default ~/.cache/ponder or $PONDER_CACHE_DIR)
    url: str | None = None  # redis: redis://host:port/db
    size_limit_mb: int = Field(default=1024, gt=0)
    ttl_s: float | None = Field(default=None, gt=0)
    cache_sampled: bool = False  # cache requests with temperature > 0 too

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        return _url(value, REDIS_SCHEMES)

    def resolved_path(self) -> Path:
        base = self.path or os.environ.get("PONDER_CACHE_DIR") or "~/.cache/ponder"
        return Path(base).expanduser()


class StrategySettings(_Strict):
    path: str
    description: str = ""


class Config(_Strict):
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    prices: dict[str, Price] = Field(default_factory=dict)
    capabilities: dict[str, Capabilities] = Field(default_factory=dict)  # over ponder/models.toml
    cache: CacheSettings = Field(default_factory=CacheSettings)
    models: dict[str, str] = Field(default_factory=dict)  # alias -> provider:model
    strategies: dict[str, StrategySettings] = Field(default_factory=dict)
    graders: dict[str, str] = Field(default_factory=dict)  # task -> grader spec ("default": the rest)
    source: str | None = Field(default=None, exclude=True)

    def provider_settings(self, name: str) -> ProviderSettings:
        return self.providers.get(name, ProviderSettings())


def _semantic_problems(raw: dict[str, Any], base: Path) -> list[tuple[str, str]]:
    """(key, reason) for values that depend on others, from the raw TOML so it runs beside the
    schema's errors (a wrong type is left to the schema's message)."""
    out: list[tuple[str, str]] = []
    providers, aliases, strategies = (v if isinstance(v := raw.get(key), dict) else {}
                                      for key in ("providers", "models", "strategies"))
    defaults = ProviderSettings()
    for name, sp in providers.items():
        if not isinstance(sp, dict):
            continue
        if name != name.lower():
            out.append((f"providers.{name}", f"model specs are matched in lower case: name the "
                                              f"section [providers.{name.lower()}]"))
        kind = sp.get("type", name)
        if "type" not in sp and name not in PROVIDER_TYPES:
            out.append((f"providers.{name}.type", f"unknown provider type {name!r}; set type to "
                                                  f"one of {', '.join(PROVIDER_TYPES)}"))
        if kind == "replay" and not sp.get("path"):
            out.append((f"providers.{name}.path", "a replay provider needs path = <outcome table>"))
        lo = sp.get("backoff_initial_s", defaults.backoff_initial_s)
        hi = sp.get("backoff_max_s", defaults.backoff_max_s)
        if _matches(lo, float) and _matches(hi, float) and lo > hi:  # else the schema says why
            key = "backoff_initial_s" if "backoff_initial_s" in sp else "backoff_max_s"
            out.append((f"providers.{name}.{key}", f"backoff_initial_s ({lo:g}) is larger than "
                                                   f"backoff_max_s ({hi:g})"))
    known = sorted(set(PROVIDER_TYPES) | {str(n).lower() for n in providers})
    for alias, spec in aliases.items():
        if not isinstance(spec, str):
            continue
        provider, sep, model = spec.partition(":")
        if not sep or not provider.strip() or not model.strip():
            out.append((f"models.{alias}", f"{spec!r} must look like 'provider:model'"))
        elif provider.strip().lower() not in known:
            out.append((f"models.{alias}", f"{spec!r}: unknown provider {provider.strip()!r}; use "
                                           f"one of {', '.join(known)} or add "
                                           f"[providers.{provider.strip().lower()}]"))
    for name, st in strategies.items():
        if not isinstance(st, dict) or not isinstance(st.get("path"), str):
            continue
        p = Path(st["path"])
        if not (p if p.is_absolute() else base / p).exists():
            out.append((f"strategies.{name}.path", f"strategy file {st['path']!r} not found"))
    return out


def config_problems(path: str | Path) -> list[ConfigError]:
    """Every problem in a config file (schema and semantic), each with file, key and reason."""
    path = Path(path)
    if not path.exists():
        return [ConfigError("file not found", file=str(path))]
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        return [ConfigError(f"invalid TOML: {exc}", file=str(path))]
    except (OSError, UnicodeDecodeError) as exc:
        return [ConfigError(f"cannot read: {exc}", file=str(path))]
    problems: list[ConfigError] = []
    try:
        Config.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            reason = str(err["msg"]).removeprefix("Value error, ")
            key = ".".join(str(p) for p in err["loc"])
            problems.append(ConfigError(reason, file=str(path), key=key))
    problems += [ConfigError(reason, file=str(path), key=key)
                 for key, reason in _semantic_problems(raw, path.parent)]
    return problems


def load_config(path: str | Path | None = None) -> Config:
    """``path``, ``$PONDER_CONFIG`` or ``./ponder.toml``, else the defaults; ConfigError with the
    first problem (``ponder config check`` lists them all)."""
    if path is None:
        local = "ponder.toml" if Path("ponder.toml").exists() else None
        path = os.environ.get("PONDER_CONFIG") or local
        if path is None:
            return Config()
    problems = config_problems(path)
    if problems:
        extra = f" (and {len(problems) - 1} more; run 'ponder config check')" if len(problems) > 1 else ""
        first = problems[0]
        raise ConfigError(first.reason + extra, file=first.file, key=first.key)
    raw = tomllib.loads(Path(path).read_text("utf-8"))
    return Config.model_validate(raw).model_copy(update={"source": str(path)})

"""One TOML file, validated by pydantic: providers, prices, the cache, model aliases, strategies."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from ._exceptions import ConfigError
from ._pricing import Price

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROVIDER_TYPES = ("openai", "anthropic", "replay", "local")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderSettings(_Strict):
    """How to build one provider. ``type`` defaults to the section name (``[providers.openai]``)."""

    type: Literal["openai", "anthropic", "replay", "local"] | None = None
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


class CacheSettings(_Strict):
    enabled: bool = True
    backend: Literal["disk", "redis"] = "disk"
    path: str | None = None  # disk: folder (default ~/.cache/ponder or $PONDER_CACHE_DIR)
    url: str | None = None  # redis: redis://host:port/db
    size_limit_mb: int = Field(default=1024, gt=0)
    ttl_s: float | None = Field(default=None, gt=0)
    cache_sampled: bool = False  # cache requests with temperature > 0 too

    def resolved_path(self) -> Path:
        base = self.path or os.environ.get("PONDER_CACHE_DIR") or "~/.cache/ponder"
        return Path(base).expanduser()


class StrategySettings(_Strict):
    path: str
    description: str = ""


class Config(_Strict):
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    prices: dict[str, Price] = Field(default_factory=dict)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    models: dict[str, str] = Field(default_factory=dict)  # alias -> provider:model
    strategies: dict[str, StrategySettings] = Field(default_factory=dict)
    source: str | None = Field(default=None, exclude=True)

    def provider_settings(self, name: str) -> ProviderSettings:
        return self.providers.get(name, ProviderSettings())


def _format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def config_problems(path: str | Path) -> list[ConfigError]:
    """Every problem in a config file, each with its file, key and reason (empty list = valid)."""
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
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            problems.append(ConfigError(err["msg"], file=str(path), key=_format_loc(err["loc"])))
        return problems
    for alias, spec in cfg.models.items():
        if ":" not in spec:
            problems.append(ConfigError(f"{spec!r} must look like 'provider:model'",
                                        file=str(path), key=f"models.{alias}"))
    for name, sp in cfg.providers.items():
        kind = sp.type or name
        if kind not in PROVIDER_TYPES:
            problems.append(ConfigError(
                f"unknown provider type {kind!r}; set type to one of {', '.join(PROVIDER_TYPES)}",
                file=str(path), key=f"providers.{name}.type"))
        if kind == "replay" and not sp.path:
            problems.append(ConfigError("a replay provider needs path = <outcome table>",
                                        file=str(path), key=f"providers.{name}.path"))
    for name, st in cfg.strategies.items():
        p = (path.parent / st.path) if not Path(st.path).is_absolute() else Path(st.path)
        if not p.exists():
            problems.append(ConfigError(f"strategy file {st.path!r} not found", file=str(path),
                                        key=f"strategies.{name}.path"))
    return problems


def load_config(path: str | Path | None = None) -> Config:
    """Load a config file, or the default one if it exists, or the built-in defaults.

    Looks at ``path``, then ``$PONDER_CONFIG``, then ``./ponder.toml``. Raises ConfigError with the
    first problem (``ponder config check`` lists them all).
    """
    if path is None:
        env = os.environ.get("PONDER_CONFIG")
        if env:
            path = env
        elif Path("ponder.toml").exists():
            path = "ponder.toml"
        else:
            return Config()
    problems = config_problems(path)
    if problems:
        extra = f" (and {len(problems) - 1} more; run 'ponder config check')" if len(problems) > 1 else ""
        first = problems[0]
        raise ConfigError(first.reason + extra, file=first.file, key=first.key)
    raw = tomllib.loads(Path(path).read_text("utf-8"))
    cfg = Config.model_validate(raw)
    return cfg.model_copy(update={"source": str(path)})

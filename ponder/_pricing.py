"""Prices as data, and cost as a pure function of usage and price."""

from __future__ import annotations

import math
import sys
from importlib import resources
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ._types import Completion, Usage

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_PER = 1_000_000
V = TypeVar("V")


class Price(BaseModel):
    """USD per 1M tokens, plus a flat fee per request."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    per_request: float = Field(default=0.0, ge=0)
    source: str = ""

    def cost(self, usage: Usage, *, rate: float = 1.0) -> float:
        """Cached input tokens at the cached rate; ``rate`` (a batch API's) scales all but the fee."""
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return rate * (
            (usage.input_tokens - cached) * self.input
            + cached * cached_rate
            + usage.output_tokens * self.output
        ) / _PER + self.per_request


class BatchRate(BaseModel):
    """What a provider's batch API bills, as a fraction of its list prices (0.5 = half price)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    rate: float = Field(gt=0, le=1)
    source: str = ""


class PriceTable:
    """``provider:model`` → Price (longest prefix); ``batch``: provider → its batch API's rate."""

    def __init__(self, prices: dict[str, Price], as_of: str = "",
                 batch: dict[str, BatchRate] | None = None) -> None:
        self.prices = {k.lower(): v for k, v in prices.items()}
        self.as_of = as_of
        self.batch = {k.lower(): v for k, v in (batch or {}).items()}

    @classmethod
    def default(cls) -> PriceTable:
        raw = packaged_toml("prices.toml")
        prices = {k: Price(**v) for k, v in raw["prices"].items()}
        batch = {k: BatchRate(**v) for k, v in raw.get("batch", {}).items()}
        return cls(prices, as_of=str(raw.get("table", {}).get("as_of", "")), batch=batch)

    def with_overrides(self, overrides: dict[str, Price]) -> PriceTable:
        merged = {**self.prices, **{k.lower(): v for k, v in overrides.items()}}
        return PriceTable(merged, as_of=self.as_of, batch=self.batch)

    def batch_rate(self, provider: str) -> float:
        """The fraction of list price that ``provider``'s batch API bills (1.0 when unknown)."""
        rate = self.batch.get(provider.lower())
        return rate.rate if rate else 1.0

    def cost(self, provider: str, model: str, usage: Usage, *, batch: bool = False) -> float:
        """What ``usage`` costs on ``provider:model`` (0 for an unlisted model)."""
        price = self.lookup(provider, model)
        if price is None:
            return 0.0
        return price.cost(usage, rate=self.batch_rate(provider) if batch else 1.0)

    def lookup(self, provider: str, model: str) -> Price | None:
        return longest_prefix(self.prices, provider, model)

    def rows(self) -> list[tuple[str, Price]]:
        return sorted(self.prices.items())


def packaged_toml(name: str) -> dict[str, Any]:
    """A TOML file shipped inside the package (``prices.toml``, ``models.toml``)."""
    raw: dict[str, Any] = tomllib.loads(resources.files("ponder").joinpath(name).read_text("utf-8"))
    return raw


def longest_prefix(table: dict[str, V], provider: str, model: str) -> V | None:
    """``provider:model``'s entry, else the longest (lower-case) key it starts with at a version boundary."""
    key = f"{provider}:{model}".lower()
    found = key if key in table else max((k for k in table if key.startswith(k) and key[len(k)] in "-@:."),
                                         key=len, default=None)
    return None if found is None else table[found]


def estimate_tokens(text: str) -> int:
    """Rough token count (~4 characters per token) for when a provider reports no usage."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def price_completion(table: PriceTable, *, provider: str, model: str, usage: Usage | None,
                     prompt_text: str, text: str, batch: bool = False, **fields: Any) -> Completion:
    """A Completion with its cost; missing usage is estimated (every sample, the input once)."""
    estimated = usage is None
    if usage is None:
        outputs = fields.get("samples") or (text,)
        usage = Usage(input_tokens=estimate_tokens(prompt_text),
                      output_tokens=sum(estimate_tokens(t) for t in outputs))
    cost = table.cost(provider, model, usage, batch=batch)
    return Completion(text=text, model=model, provider=provider, usage=usage, cost_usd=cost,
                      cost_estimated=estimated, **fields)

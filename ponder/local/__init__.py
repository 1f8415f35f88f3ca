"""Self-hosted, lossless speculative decoding (needs the ``local`` extra: torch, safetensors, gguf,
tokenizers, jinja2).

    from ponder.local import Engine, SamplingParams
    engine = Engine.load("SmolLM2-135M-Instruct.Q4_1.gguf", draft="ngram", k=4)
    print(engine.generate("What is 2 + 2?", max_tokens=64).text)

Pieces: ``_model`` (compact Llama-family decoder, static KV cache), ``_loading`` (HF folder or
GGUF), ``_tokenizer`` (tokenizer + chat template), ``_sampling``, ``_drafters`` (draft model,
layer-cut self-speculation, prompt lookup), ``_speculative`` (the step), ``_engine`` (the loop),
``_provider`` (the ``local:`` provider) and ``kernels`` (torch/Triton dispatch). The CPU default
(a GGUF without a GPU) runs in ``_llamacpp`` + ``_llamacpp_engine`` (llama.cpp and numpy: the
``llamacpp`` extra, no torch); ``load_engine`` (``_runtime``) picks the engine. Names resolve
lazily, so ``import ponder.local`` alone does not import torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from .._exceptions import PonderError

_EXTRA_MODULES = ("torch", "safetensors", "gguf", "tokenizers", "jinja2")


def require_extra() -> None:
    """Name the extra to install, not a bare ``ModuleNotFoundError: torch``, when one is missing."""
    missing = [m for m in _EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise PonderError(
            f"ponder's self-hosted engine needs the 'local' extra, which is not installed (missing: "
            f"{', '.join(missing)}): pip install 'ponder[local]' (torch first, e.g. pip install "
            f"torch==2.13.0 for a CPU build); add the 'llamacpp' extra for the faster CPU runtime of "
            f"GGUF files"
        )

_EXPORTS = {
    "Engine": "_engine",
    "Generation": "_engine",
    "GenerationStats": "_engine",
    "make_drafter": "_engine",
    "SamplingParams": "_sampling",
    "ModelDrafter": "_drafters",
    "NgramDrafter": "_drafters",
    "ModelArgs": "_model",
    "Transformer": "_model",
    "Tokenizer": "_tokenizer",
    "load_model": "_loading",
    "export_hf_folder": "_loading",
    "default_model_path": "_runtime",
    "load_engine": "_runtime",
    "LlamaCppEngine": "_llamacpp_engine",
    "LocalProvider": "_provider",
    "speculative_step": "_speculative",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        try:
            module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        except ModuleNotFoundError:
            require_extra()  # names the extra when one of its modules is what is missing
            raise
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

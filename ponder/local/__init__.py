"""Self-hosted, lossless speculative decoding (needs the ``local`` extra: torch, safetensors, gguf,
tokenizers, jinja2).

    from ponder.local import Engine, SamplingParams
    engine = Engine.load("SmolLM2-135M-Instruct.Q4_1.gguf", draft="ngram", k=4)
    print(engine.generate("What is 2 + 2?", max_tokens=64).text)

Pieces: ``_model`` (compact Llama-family decoder, static KV cache), ``_loading`` (HF folder or
GGUF), ``_tokenizer`` (tokenizer + chat template), ``_sampling``, ``_drafters`` (draft model,
layer-cut self-speculation, prompt lookup), ``_speculative`` (the step), ``_engine`` (the loop),
``_provider`` (the ``local:`` provider) and ``kernels`` (torch/Triton dispatch). Names resolve
lazily, so ``import ponder.local`` alone does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

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
    "default_model_path": "_loading",
    "LocalProvider": "_provider",
    "speculative_step": "_speculative",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

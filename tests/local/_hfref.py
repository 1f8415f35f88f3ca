"""transformers reading a GGUF itself: the reference the real-checkpoint tests compare against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch


def hf_from_gguf(gguf: Path) -> Any:
    """A float32 ``AutoModelForCausalLM`` built from the GGUF's config, weights loaded by
    transformers' own GGUF reader (skips when transformers is absent)."""
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = transformers.AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    hf = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=hf)["tensors"]
    hf.load_state_dict(state, strict=False)
    hf.tie_weights()
    hf.eval()
    return hf


def hf_greedy(hf: Any, ids: list[int], n: int) -> list[int]:
    """transformers' greedy continuation of ``ids``: exactly ``n`` tokens (no stop token)."""
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                          max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()

"""A GGUF model run by llama.cpp in process (``llama-cpp-python``), shaped like ``Transformer``.

The CPU path. Decoding one token reads every weight once, so on a CPU its speed is set by the
bytes per token: llama.cpp reads the GGUF's 4-bit weights as they are (about 85 MB for
SmolLM2-135M), where the torch path reads the weights dequantised to float32 (540 MB). The engine
loop (sampling, drafters, speculative verification) is ponder's and stays the same: this class
only answers ``model(tokens, start_pos)`` with logits, like ``Transformer.forward``, and gives each
stream a KV cache of its own (a llama.cpp context; the weights are loaded once and shared).

Measured choice (benchmarks/bench_local_cpu.py, RESULTS.md "Self-hosted engine"): weight-only
int8 matmuls in torch were slower than float32 on this CPU, llama.cpp several times faster.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._exceptions import ConfigError, ModelFileError
from ._tokenizer import Tokenizer
from .kernels import get_ops

__all__ = ["LlamaCppModel", "llama_cpp_available"]

N_CTX_MIN = 512  # contexts are allocated at least this long, so most streams can reuse one
N_BATCH = 512  # prompt tokens per llama_decode call, as llama.cpp's default (the split changes rounding)


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


@dataclass
class LlamaCppArgs:
    """The part of ``ModelArgs`` the engine reads."""

    vocab_size: int
    max_position: int
    n_layers: int


@dataclass
class _Context:
    ctx: Any  # llama_cpp._internals.LlamaContext
    batch: Any  # llama_cpp._internals.LlamaBatch
    capacity: int


class LlamaCppModel:
    """``model(tokens (1,T), start_pos, last_only=...) -> float logits (1,T|1,V)`` by llama.cpp."""

    def __init__(self, path: str | Path, *, n_threads: int | None = None) -> None:
        if not llama_cpp_available():
            raise ConfigError("runtime 'llama.cpp' needs llama-cpp-python (pip install llama-cpp-python)")
        import llama_cpp
        from llama_cpp import _internals, _logger

        _logger.set_verbose(False)  # llama.cpp's own log (context set-up, timings) stays quiet
        self.path = str(path)
        if not Path(self.path).is_file() or not self.path.endswith(".gguf"):
            raise ModelFileError("runtime 'llama.cpp' needs a .gguf file", path=self.path)
        params = llama_cpp.llama_model_default_params()
        if hasattr(params, "use_extra_bufts"):
            # Some VMs report AMX but trap its instructions: no repacking into AMX tiles.
            params.use_extra_bufts = False
        try:
            self._model = _internals.LlamaModel(path_model=self.path, params=params, verbose=False)
        except ValueError as exc:
            raise ModelFileError(f"llama.cpp could not load it: {exc}", path=self.path) from None
        self.n_threads = n_threads or torch.get_num_threads()
        self.args = LlamaCppArgs(self._model.n_vocab(), self._model.n_ctx_train(), 0)
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.ops = get_ops("cpu", "torch")  # sampling and verification run in torch
        self._ctx: _Context | None = None

    def tokenizer(self) -> Tokenizer:
        # the same header reader as the torch loader's
        from ._loading import _gguf_tokenizer, _open_gguf

        fields, _ = _open_gguf(self.path)
        tok = _gguf_tokenizer(fields, self.path)
        if tok is None:
            raise ModelFileError("the GGUF carries no tokenizer", path=self.path)
        return tok

    # --- KV caches: one llama.cpp context per stream ----------------------------------------
    def new_cache(self, max_seq: int) -> _Context:
        import llama_cpp
        from llama_cpp import _internals

        n_ctx = min(max(N_CTX_MIN, -(-max_seq // N_CTX_MIN) * N_CTX_MIN), max(self.args.max_position, max_seq))
        p = llama_cpp.llama_context_default_params()
        p.n_ctx, p.n_batch, p.n_ubatch = n_ctx, N_BATCH, N_BATCH
        p.n_threads = p.n_threads_batch = self.n_threads
        # Flash attention on: each query row is then computed alone, so verifying k+1 drafted
        # tokens in one pass gives the logits that k+1 single-token passes give, and drafting
        # stays lossless. Without it llama.cpp's batched attention rounds differently and greedy
        # drafts changed 3 of 5 answers (benchmarks/RESULTS.md). (llama-cpp-python's ``Llama``
        # defaults to it off; ``Llama(flash_attn=True)`` decodes the same tokens as this runtime.)
        p.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        ctx = _internals.LlamaContext(model=self._model, params=p, verbose=False)
        batch = _internals.LlamaBatch(n_tokens=N_BATCH, embd=0, n_seq_max=1, verbose=False)
        self._ctx = _Context(ctx, batch, n_ctx)
        return self._ctx

    def use_cache(self, state: _Context) -> None:
        self._ctx = state

    def setup_caches(self, max_batch: int, max_seq_len: int, backend: str = "auto") -> None:
        if max_batch != 1:
            raise ConfigError("the llama.cpp runtime decodes one sequence at a time")
        if self._ctx is None or self._ctx.capacity < max_seq_len:
            self.new_cache(max_seq_len)

    # --- forward -----------------------------------------------------------------------------
    def __call__(self, tokens: torch.Tensor, start_pos: int, n_layers: int | None = None, last_only: bool = False) -> torch.Tensor:
        if n_layers is not None:
            raise ConfigError("layers:N drafting needs the torch runtime (llama.cpp runs whole models)")
        if self._ctx is None:
            raise RuntimeError("no KV cache: call setup_caches or new_cache first")
        c, ids = self._ctx, tokens[0].tolist()
        T, V = len(ids), self.args.vocab_size
        if start_pos + T > c.capacity:
            raise ValueError(f"sequence of {start_pos + T} tokens exceeds the KV cache ({c.capacity})")
        c.ctx.kv_cache_seq_rm(-1, start_pos, -1)  # forget rejected drafts past start_pos
        rows = []
        for i in range(0, T, N_BATCH):
            chunk = ids[i : i + N_BATCH]
            c.batch.set_batch(chunk, n_past=start_pos + i, logits_all=not last_only)
            c.ctx.decode(c.batch)
            if not last_only:
                n = len(chunk)
                rows.append(np.ctypeslib.as_array(c.ctx.get_logits(), shape=(n * V,)).reshape(n, V).copy())
        if last_only:
            rows.append(np.ctypeslib.as_array(c.ctx.get_logits_ith(-1), shape=(V,)).reshape(1, V).copy())
        return torch.from_numpy(np.concatenate(rows))[None]

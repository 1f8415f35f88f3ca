"""A GGUF model run by llama.cpp in process (``llama-cpp-python``), with llama.cpp's own vocabulary.

The CPU path. Decoding one token reads every weight once, so on a CPU its speed is set by the
bytes per token: llama.cpp reads the GGUF's 4-bit weights as they are (about 85 MB for
SmolLM2-135M), where the torch path reads the weights dequantised to float32 (540 MB). This class
answers ``logits(ids, start_pos)`` in numpy and gives each stream a KV cache of its own (a
llama.cpp context; the weights are loaded once and shared). :class:`~._llamacpp_engine.LlamaCppEngine`
runs ponder's loop (sampling, prompt-lookup drafting, verification) over it in numpy, so the CPU
default never imports torch; ``model(tokens, start_pos)`` answers in torch as ``Transformer.forward``
does, for the torch ``Engine`` (a torch draft model on a llama.cpp target).

The tokenizer is llama.cpp's, read from the model already loaded: building the Hugging Face
tokenizer from the GGUF's metadata cost a second read of the header and, for SentencePiece
vocabularies (Gemma), transformers and torch (issue 23). The chat template, special tokens and
stop tokens are chosen as :meth:`Tokenizer.from_gguf` chooses them, and tests check that both
give the same ids.

Measured choice (benchmarks/bench_local_cpu.py, RESULTS.md "Self-hosted engine"): weight-only
int8 matmuls in torch were slower than float32 on this CPU, llama.cpp several times faster.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .._exceptions import ConfigError, ModelFileError
from ._tokenizer import _BUILTIN_TEMPLATES, Tokenizer

__all__ = ["LlamaCppModel", "llama_cpp_available", "default_threads"]

N_CTX_MIN = 512  # contexts are allocated at least this long, so most streams can reuse one
N_BATCH = 512  # prompt tokens per llama_decode call, as llama.cpp's default (the split changes rounding)


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def default_threads() -> int:
    """The CPUs this process may run on (what torch's default reads on Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
    """``logits(ids, start_pos, last_only=...) -> float32 (T|1, V)`` by llama.cpp."""

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
        self.n_threads = n_threads or default_threads()
        self.args = LlamaCppArgs(self._model.n_vocab(), self._model.n_ctx_train(), 0)
        self._ctx: _Context | None = None

    # --- what the torch Engine reads (torch is imported only when it asks) -------------------
    @property
    def device(self) -> Any:
        import torch

        return torch.device("cpu")

    @property
    def dtype(self) -> Any:
        import torch

        return torch.float32

    @property
    def ops(self) -> Any:
        from .kernels import get_ops

        return get_ops("cpu", "torch")  # sampling and verification run in torch

    # --- the vocabulary -----------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        """A metadata value of the GGUF as llama.cpp prints it (arrays are summarised)."""
        import llama_cpp

        size = 256
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_model_meta_val_str(self._model.model, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", errors="replace")
            size = n + 1

    def tokenizer(self) -> Tokenizer:
        kind = self.meta("tokenizer.ggml.model")
        if kind is None:
            raise ModelFileError("the GGUF carries no tokenizer", path=self.path)
        template = self.meta("tokenizer.chat_template") or _BUILTIN_TEMPLATES.get(self.meta("general.architecture") or "")
        bos, eos, add_bos = (self.meta(f"tokenizer.ggml.{k}") for k in ("bos_token_id", "eos_token_id", "add_bos_token"))
        return Tokenizer(
            LlamaVocab(self._model),
            bos_id=int(bos) if bos is not None else None,
            eos_id=int(eos) if eos is not None else None,
            # Tokenizer.from_gguf's defaults: BPE ("gpt2") vocabularies add none, SentencePiece ones do
            add_bos=add_bos == "true" if add_bos is not None else kind != "gpt2",
            chat_template=template,
        )

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
    def logits(self, ids: Sequence[int], start_pos: int, last_only: bool = False, cache: _Context | None = None) -> np.ndarray:
        """float32 (T, V) logits of ``ids`` at ``start_pos`` (or (1, V) for the last one), in
        ``cache`` (default: the installed one). Positions from ``start_pos`` on are overwritten."""
        c = cache or self._ctx
        if c is None:
            raise RuntimeError("no KV cache: call setup_caches or new_cache first")
        T, V = len(ids), self.args.vocab_size
        if start_pos + T > c.capacity:
            raise ValueError(f"sequence of {start_pos + T} tokens exceeds the KV cache ({c.capacity})")
        c.ctx.kv_cache_seq_rm(-1, start_pos, -1)  # forget rejected drafts past start_pos
        rows = []
        for i in range(0, T, N_BATCH):
            chunk = list(ids[i : i + N_BATCH])
            c.batch.set_batch(chunk, n_past=start_pos + i, logits_all=not last_only)
            c.ctx.decode(c.batch)
            if not last_only:
                n = len(chunk)
                rows.append(np.ctypeslib.as_array(c.ctx.get_logits(), shape=(n * V,)).reshape(n, V).copy())
        if last_only:
            rows.append(np.ctypeslib.as_array(c.ctx.get_logits_ith(-1), shape=(V,)).reshape(1, V).copy())
        return rows[0] if len(rows) == 1 else np.concatenate(rows)

    def __call__(self, tokens: Any, start_pos: int, n_layers: int | None = None, last_only: bool = False) -> Any:
        """``Transformer.forward``'s shape for the torch Engine: tokens (1,T) -> logits (1,T|1,V)."""
        import torch

        if n_layers is not None:
            raise ConfigError("layers:N drafting needs the torch runtime (llama.cpp runs whole models)")
        return torch.from_numpy(self.logits(tokens[0].tolist(), start_pos, last_only))[None]


class _Encoding(NamedTuple):
    ids: list[int]


class LlamaVocab:
    """llama.cpp's tokenizer behind the part of ``tokenizers.Tokenizer`` that :class:`Tokenizer`
    uses: special tokens written in the text are parsed as such (the chat template writes them),
    and decoding leaves control tokens out (``skip_special_tokens``)."""

    def __init__(self, model: Any) -> None:
        self._model = model  # llama_cpp._internals.LlamaModel: it owns the vocabulary, so it stays alive
        self.vocab = model.vocab

    def get_vocab_size(self, with_added_tokens: bool = True) -> int:
        import llama_cpp

        return int(llama_cpp.llama_vocab_n_tokens(self.vocab))

    def id_to_token(self, token: int) -> str:
        import llama_cpp

        return bytes(llama_cpp.llama_vocab_get_text(self.vocab, token)).decode("utf-8", errors="replace")

    def token_to_id(self, text: str) -> int | None:
        """The id of the token spelled ``text`` exactly, or None (it would take several)."""
        for special in (True, False):
            ids = self._tokenize(text, special)
            if len(ids) == 1 and self.id_to_token(ids[0]) == text:
                return ids[0]
        return None

    def encode(self, text: str, add_special_tokens: bool = False) -> _Encoding:
        return _Encoding(self._tokenize(text, True, add_special_tokens))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        import llama_cpp

        tokens = (llama_cpp.llama_token * len(ids))(*ids)
        size = 8 * len(ids) + 16
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_detokenize(self.vocab, tokens, len(ids), buf, size, False, not skip_special_tokens)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = -n

    def _tokenize(self, text: str, special: bool, add_special: bool = False) -> list[int]:
        import llama_cpp

        data = text.encode("utf-8")
        size = len(data) + 8
        while True:
            out = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), out, size, add_special, special)
            if n >= 0:
                return list(out[:n])
            size = -n

"""The generation loop: prefill, then speculative (or plain) steps until a stop token or the limit."""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from .._exceptions import ConfigError, ContextTooLong
from ._device_loop import MODES, DeviceLoop, k_choices, mode_of
from ._drafters import Drafter, ModelDrafter, NgramDrafter
from ._generation import Generation, GenerationStats, TokenStream, prompt_ids
from ._loading import load_model
from ._model import Transformer
from ._sampling import Noise, SamplingParams, sample
from ._speculative import speculative_step
from ._tokenizer import Tokenizer
from .kernels import get_ops

__all__ = ["Engine", "Generation", "GenerationStats", "TokenStream", "make_drafter", "device_guard"]

DEFAULT_CONTEXT = 8192  # positions per stream on the device loop unless ``context`` says otherwise


# What ``Transformer.setup_caches`` allocates; anything else it rebinds is picked up as well.
_CACHE_ATTRS = ("caches", "max_seq_len", "rope_cos", "rope_sin", "rope_cast", "ops")


def device_guard(device: torch.device) -> AbstractContextManager[Any]:
    """Make ``device`` the current CUDA device: streams, graph capture and Triton launches use the
    current device, not the tensors' (work for cuda:1 would otherwise go to cuda:0)."""
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


class _Turns:
    """Decoding on any number of threads, or one graph capture alone. A CUDA graph records every
    launch and allocation on the device while it captures, so another model's worker must not
    allocate or launch then; steps of different engines may interleave freely otherwise."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared: dict[int, int] = {}  # thread id -> depth
        self._owner: int | None = None  # the thread capturing
        self._waiting = 0  # captures waiting: they go before new decoding

    @contextmanager
    def shared(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            while self._owner not in (None, me) or (self._waiting and self._owner != me and me not in self._shared):
                self._cond.wait()
            self._shared[me] = self._shared.get(me, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._shared[me] -= 1
                if not self._shared[me]:
                    del self._shared[me]
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if me in self._shared and self._owner != me:
                raise RuntimeError("a graph capture was asked for inside a decoding step")
            self._waiting += 1
            try:
                while self._owner not in (None, me) or any(t != me for t in self._shared):
                    self._cond.wait()
            finally:
                self._waiting -= 1
            outer, self._owner = self._owner, me
        try:
            yield
        finally:
            with self._cond:
                self._owner = outer
                self._cond.notify_all()


_TURNS = _Turns()  # one per process: every engine, every device


@contextmanager
def _on_device(device: torch.device, *, exclusive: bool) -> Iterator[None]:
    """``device`` current, and either a turn among decoders or the device alone (a capture)."""
    with device_guard(device), (_TURNS.exclusive() if exclusive else _TURNS.shared()):
        yield


def _cache_bytes(model: Any, positions: int) -> int | None:
    """Bytes of one stream's KV cache of ``positions`` (keys, values and RoPE tables); None when
    the model does not say (llama.cpp sizes its own contexts)."""
    if not isinstance(model, Transformer):
        return None
    a = model.args
    kv = 2 * a.n_layers * a.n_kv_heads * a.head_dim * model.dtype.itemsize
    rope = 2 * a.head_dim * (4 + model.dtype.itemsize) * (2 if a.sliding_layers else 1)
    return positions * (kv + rope)


def _free_bytes(device: torch.device) -> int | None:
    """Memory a new cache may take on ``device``: free device memory plus what torch's allocator
    holds unused; on the CPU, Linux's MemAvailable. None when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu" and os.path.exists("/proc/meminfo"):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _new_cache(model: Any, max_seq: int, backend: str) -> Any:
    """A KV cache of its own for one stream (``model`` keeps it installed)."""
    if hasattr(model, "new_cache"):  # llama.cpp: a context of its own
        return model.new_cache(max_seq)
    before = dict(model.__dict__)
    model.caches = []  # force a fresh allocation: the installed one belongs to another stream
    model.setup_caches(1, max_seq, backend)
    changed = {k for k, v in model.__dict__.items() if before.get(k) is not v}
    return {k: model.__dict__[k] for k in changed | set(_CACHE_ATTRS) if k in model.__dict__}


def _capacity(state: Any, asked: int) -> int:
    """How many positions a cache made by :func:`_new_cache` holds (at least ``asked``)."""
    return int(state["max_seq_len"]) if isinstance(state, dict) and "max_seq_len" in state else int(getattr(state, "capacity", asked))


def _install(model: Any, state: Any) -> None:
    if hasattr(model, "use_cache"):
        model.use_cache(state)
    else:
        model.__dict__.update(state)


class _StreamCaches:
    """The KV caches one stream uses: the target's and, for a draft model, the drafter's.
    ``pinned``: made when the engine was built (with its captured graphs), kept for good."""

    def __init__(self, models: list[Any], max_seq: int, backend: str, *, pinned: bool = False) -> None:
        self.models, self.pinned = models, pinned
        self.states = [_new_cache(m, max_seq, backend) for m in models]
        self.capacity = min(_capacity(s, max_seq) for s in self.states)
        self.loop: DeviceLoop | None = None  # the device loop's buffers and graphs point here

    def install(self) -> None:
        for m, state in zip(self.models, self.states, strict=True):
            _install(m, state)


class _CachePool:
    """Caches of finished streams, reused by the next ones (allocation and capture are not free):
    the pinned ones always, others up to ``keep`` sets in all."""

    def __init__(self, keep: int = 1) -> None:
        self.keep, self._free, self._lock = keep, list[_StreamCaches](), threading.Lock()

    def take(self, models: list[Any], max_seq: int) -> _StreamCaches | None:
        """A free set of these models' caches holding ``max_seq`` positions, or None."""
        with self._lock:
            for i, c in enumerate(self._free):
                if c.capacity >= max_seq and len(c.models) == len(models) and all(a is b for a, b in zip(c.models, models, strict=True)):
                    return self._free.pop(i)
        return None

    def give_back(self, caches: _StreamCaches) -> None:
        with self._lock:
            self._free.insert(0, caches)
            extra = len(self._free) - self.keep
            if extra > 0:  # drop the oldest unpinned sets
                drop = {id(c) for c in [c for c in self._free if not c.pinned][-extra:]}
                self._free = [c for c in self._free if id(c) not in drop]


def make_drafter(spec: str | None, target: Transformer, *, dtype: torch.dtype = torch.float32) -> Drafter | None:
    """``None`` | ``"ngram"`` | ``"layers:N"`` | a path to a draft model sharing the tokenizer."""
    if spec is None or spec in ("", "none"):
        return None
    V = target.args.vocab_size
    if spec == "ngram":
        return NgramDrafter(V)
    if spec.startswith("layers:"):
        if not isinstance(target, Transformer):
            raise ConfigError(f"draft spec {spec!r}: layers:N drafting needs the torch runtime")
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError as exc:
            raise ConfigError(f"draft spec {spec!r}: N in layers:N must be an integer") from exc
        try:
            return ModelDrafter.layers(target, n)
        except ValueError as exc:
            raise ConfigError(f"draft spec {spec!r}: {exc}") from exc
    if not Path(spec).exists():
        raise ConfigError(f"draft {spec!r} is neither 'ngram', 'layers:N' nor an existing model path")
    draft, _ = load_model(spec, dtype=dtype, device=str(target.device))
    return ModelDrafter(draft, V, name=Path(spec).name)


RUNTIMES = ("auto", "torch", "llama.cpp")
LOOPS = ("auto", "host", "device")


def placement(device: str | None = None, dtype: str | torch.dtype | None = None, *, key: str | None = None) -> tuple[str, torch.dtype]:
    """(device, dtype) with the defaults filled in: CUDA in bfloat16 when a GPU is present, else
    the CPU in float32. ``dtype`` may be a name ("bfloat16", "bf16", "float16", "float32")."""
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: torch sees no CUDA GPU", key=key)
    if dtype is None or dtype == "auto":
        return device, torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return device, dtype
    resolved = getattr(torch, _DTYPE_ALIASES.get(dtype, dtype), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ConfigError(f"unknown dtype {dtype!r}; use bfloat16, float16 or float32", key=key)
    return device, resolved


_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}


def choose_runtime(model_path: str | Path, draft: str | None, device: str, runtime: str = "auto") -> str:
    """"auto" runs a GGUF on the CPU through llama.cpp when llama-cpp-python is installed (it
    decodes from the 4-bit weights; the torch path reads them dequantised, several times the
    bytes per token: RESULTS.md), and everything else (GPUs, HF folders, ``layers:N``) in torch."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    if runtime != "auto":
        if runtime == "llama.cpp" and not str(device).startswith("cpu"):
            raise ConfigError(f"runtime 'llama.cpp' runs on the CPU, not on {device!r}")
        return runtime
    from ._llamacpp import llama_cpp_available

    gguf_on_cpu = str(device).startswith("cpu") and str(model_path).endswith(".gguf")
    layers = bool(draft) and str(draft).startswith("layers:")
    return "llama.cpp" if gguf_on_cpu and not layers and llama_cpp_available() else "torch"


class Engine:
    """A target model, its tokenizer and an optional drafter; ``k`` adapts unless ``adaptive=False``.

    ``loop``: "host" runs each step from Python and reads its result back (the CPU default);
    "device" keeps positions, acceptance and stop detection on the device and reads back once
    every ``read_every`` steps, each step a captured CUDA graph on a GPU (the CUDA default, with
    the fused layer kernels when the kernels are Triton's); "auto" picks by device. See
    :mod:`._device_loop`.

    ``streams``: how many streams hold KV caches at once without allocating (the ``local:``
    provider's ``max_concurrency``). ``context``: the most positions (prompt + new tokens) one
    stream may use: the model's limit by default on the host loop, whose caches are sized per
    request; at most ``DEFAULT_CONTEXT`` by default on the device loop, whose ``streams`` cache
    sets of ``context`` positions are allocated, and all their step graphs captured, here, when
    the engine is built (``capture_s`` says how long that took), never inside a request. A request
    that does not fit the context or the free memory is refused before anything is allocated.
    """

    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer | None = None,
        drafter: Drafter | None = None,
        *,
        k: int = 4,
        adaptive: bool = True,
        k_max: int | None = None,
        backend: str = "auto",
        loop: str = "auto",
        read_every: int = 8,
        streams: int = 1,
        context: int | None = None,
    ) -> None:
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        if loop not in LOOPS:
            raise ConfigError(f"unknown loop {loop!r}; use one of {', '.join(LOOPS)}")
        if read_every < 1:
            raise ConfigError(f"read_every must be >= 1, got {read_every}")
        if streams < 1:
            raise ConfigError(f"streams must be >= 1, got {streams}")
        self.model, self.tokenizer, self.drafter = model, tokenizer, drafter
        self.k, self.adaptive = k, adaptive
        self.k_max = max(k_max or 2 * k, k)
        self.backend = backend
        self.read_every = read_every
        self.streams = streams
        self._caches = _CachePool(keep=streams)
        on_gpu = isinstance(model, Transformer) and model.device.type == "cuda"
        if loop == "device" and not isinstance(model, Transformer):
            raise ConfigError("loop 'device' needs the torch runtime")
        self._loop = "host" if not isinstance(model, Transformer) else loop if loop != "auto" else "device" if on_gpu else "host"
        limit = model.args.max_position
        if context is None:
            context = limit if self._loop == "host" else min(limit, DEFAULT_CONTEXT)
        if not 1 <= context <= limit:
            raise ConfigError(f"context must be between 1 and the model's {limit} positions, got {context}")
        self.context = context
        self.capture_s = 0.0  # seconds spent building the device loop's caches and graphs at load
        self._graph_pool: Any = None
        if self._loop == "device" and get_ops(model.device, backend).name == "triton":
            for m in (model, getattr(drafter, "model", None)):  # launches, not bytes, bound a small step
                if isinstance(m, Transformer):
                    m.fused = True
        if self._loop == "device":
            self._prepare()

    def _turn(self) -> AbstractContextManager[Any]:
        """Where a chunk of decoding runs: on the model's device, never during a capture."""
        return _on_device(self.model.device, exclusive=False)

    def _prepare(self) -> None:
        """The device loop's ``streams`` cache sets, each with every step graph it can replay
        (each sampling mode at each draft length), made now so that no request pays for them."""
        capacity = self.context + self.k_max + 1
        short = self._memory_short(capacity, self.streams, "streams")
        if short:
            raise ConfigError(short)
        t0 = time.perf_counter()
        with _on_device(self.model.device, exclusive=True), torch.inference_mode():
            if self.model.device.type == "cuda":
                self._graph_pool = torch.cuda.graph_pool_handle()  # one pool: streams replay in turn
            for _ in range(self.streams):
                caches = _StreamCaches(self._cache_models(self.drafter), capacity, self.backend, pinned=True)
                self._ready_loop(caches, list(MODES.values()))
                self._caches.give_back(caches)
        self.capture_s = time.perf_counter() - t0

    def _cache_models(self, drafter: Drafter | None) -> list[Any]:
        if isinstance(drafter, ModelDrafter) and not drafter.shares_cache:
            return [self.model, drafter.model]
        return [self.model]

    def _graph_keys(self, params: SamplingParams) -> list[tuple[str, int]]:
        ks = k_choices(self.k, self.k_max) if self.drafter is not None else ()
        return [(mode_of(params), k) for k in (0, *ks)]

    def _ready_loop(self, caches: _StreamCaches, params: Sequence[SamplingParams], stops: int = 0) -> None:
        """Give ``caches`` a device loop for the engine's drafter with the graphs of ``params``."""
        loop = caches.loop
        if loop is None or loop.drafter is not self.drafter or stops > loop.stops.numel():
            caches.install()
            caches.loop = loop = DeviceLoop(
                self.model, self.drafter, caches.capacity, graphs=self.model.device.type == "cuda",
                pool=self._graph_pool, max_stops=max(16, stops),
            )
        missing = {key: p for p in params for key in self._graph_keys(p) if not loop.has(*key)}
        if missing:
            caches.install()
            loop.prepare(missing)

    def _memory_short(self, positions: int, sets: int, what: str) -> str | None:
        """Why ``sets`` caches of ``positions`` would not fit in free memory (None if they fit or
        nobody can tell): checked before anything is allocated."""
        per = [_cache_bytes(m, positions) for m in self._cache_models(self.drafter)]
        free = _free_bytes(self.model.device)
        if free is None or any(b is None for b in per):
            return None
        need = sets * sum(b for b in per if b is not None)
        if need <= free:
            return None
        return (
            f"{sets} KV cache set(s) of {positions} positions need {_gib(need)}; {_gib(free)} is free "
            f"on {self.model.device} (lower the context or {what})"
        )

    @classmethod
    def load(
        cls, model_path: str | Path, draft: str | None = None, *, dtype: torch.dtype = torch.float32,
        device: str = "cpu", runtime: str = "auto", threads: int | None = None, **kwargs: Any,
    ) -> Engine:
        """``runtime``: "torch", "llama.cpp" (a GGUF on the CPU) or "auto" (see :func:`choose_runtime`)."""
        runtime = choose_runtime(model_path, draft, device, runtime)
        if runtime == "llama.cpp":
            from ._llamacpp import LlamaCppModel

            target: Any = LlamaCppModel(model_path, n_threads=threads)
            return cls(target, target.tokenizer(), make_drafter(draft, target, dtype=dtype), **kwargs)
        model, tok = load_model(model_path, dtype=dtype, device=device)
        return cls(model, tok, make_drafter(draft, model, dtype=dtype), **kwargs)

    @property
    def runtime(self) -> str:
        return "torch" if isinstance(self.model, Transformer) else "llama.cpp"

    @property
    def loop(self) -> str:
        """"host", "device" (no capture: the CPU) or "device+graphs" (CUDA graphs)."""
        if self._loop == "host":
            return "host"
        return "device+graphs" if self.model.device.type == "cuda" else "device"

    def generate_ids(
        self,
        prompt: Sequence[int],
        max_tokens: int = 256,
        params: SamplingParams | None = None,
        *,
        seed: int | None = None,
        stop_ids: Sequence[int] | None = None,
    ) -> tuple[list[int], str, GenerationStats]:
        """Token ids in -> (new token ids, finish reason, stats). ``stop_ids=()`` never stops early."""
        stream = self.stream(prompt, max_tokens, params, seed=seed, stop_ids=stop_ids)
        out = [t for chunk in stream for t in chunk]
        return out, stream.finish_reason, stream.stats

    def stream(
        self,
        prompt: Sequence[int],
        max_tokens: int = 256,
        params: SamplingParams | None = None,
        *,
        seed: int | None = None,
        stop_ids: Sequence[int] | None = None,
    ) -> TokenStream:
        """The new token ids as they are produced: one list per target step on the host loop
        (several tokens when drafts are accepted), one per read-back (up to ``read_every`` steps)
        on the device loop. Streams on one engine may be advanced in turn: each holds its own KV
        cache (and drafter state), installed before each of its chunks.

        A request longer than ``context``, or whose cache the free memory cannot hold, is refused
        here with :class:`ContextTooLong`, before anything is allocated."""
        params = params or SamplingParams()
        stops = set(stop_ids) if stop_ids is not None else set(self.tokenizer.stop_ids) if self.tokenizer else set()
        P = len(prompt)
        if P == 0:
            raise ConfigError("the prompt is empty")
        limit = self.context
        if P + max_tokens > limit:
            where = "context" if limit == self.model.args.max_position else "engine's context (Engine(context=...))"
            raise ContextTooLong(f"{P} prompt + {max_tokens} new tokens exceed the {where} of {limit}", provider="local")
        stream = TokenStream(P, self._turn)
        caches = self._take_caches(P + max_tokens + self.k_max + 1, params, len(stops), stream.stats)
        stream._gen = self._steps(stream, caches, list(prompt), max_tokens, params, seed, stops)
        stream._release = lambda: self._caches.give_back(caches)
        return stream

    def _take_caches(self, max_seq: int, params: SamplingParams, n_stops: int, stats: GenerationStats) -> _StreamCaches:
        """A free cache set for ``max_seq`` positions, or a new one; on the device loop, with the
        graphs this request replays (captured at load: any capture here is timed in ``stats``)."""
        models = self._cache_models(self.drafter)
        caches = self._caches.take(models, max_seq)
        device = self._loop == "device"
        if caches is not None and (not device or self._loop_ready(caches, params, n_stops)):
            return caches
        t0 = time.perf_counter()
        try:
            if caches is None:
                capacity = self.context + self.k_max + 1 if device else max_seq
                short = self._memory_short(capacity, 1, "the request's max_tokens")
                if short:
                    raise ContextTooLong(short, provider="local")
            with _on_device(self.model.device, exclusive=device), torch.inference_mode():
                if caches is None:
                    caches = _StreamCaches(models, capacity, self.backend)
                if device:
                    self._ready_loop(caches, [params], n_stops)
        except BaseException:
            if caches is not None:
                self._caches.give_back(caches)
            raise
        if device:
            stats.capture_s += time.perf_counter() - t0
        return caches

    def _loop_ready(self, caches: _StreamCaches, params: SamplingParams, n_stops: int) -> bool:
        loop = caches.loop
        return (
            loop is not None and loop.drafter is self.drafter and n_stops <= loop.stops.numel()
            and all(loop.has(*key) for key in self._graph_keys(params))
        )

    @torch.inference_mode()
    def _steps(
        self, stream: TokenStream, caches: _StreamCaches, prompt: list[int], max_tokens: int,
        params: SamplingParams, seed: int | None, stops: set[int],
    ) -> Iterator[list[int]]:
        model, stats, P = self.model, stream.stats, len(prompt)
        drafter = copy.copy(self.drafter)  # per-stream position bookkeeping; weights are shared
        max_seq = P + max_tokens + self.k_max + 1
        try:
            caches.install()
            noise = Noise(seed, model.device)
            seq = torch.zeros(1, max_seq, dtype=torch.long, device=model.device)
            seq[0, :P] = torch.tensor(prompt, dtype=torch.long)

            t0 = time.perf_counter()
            logits = model(seq[:, :P], 0, last_only=True)[:, -1]
            first = int(sample(model.ops, logits, params, noise)[0])
            stats.prefill_s = time.perf_counter() - t0
            seq[0, P] = first
            if first in stops:
                stream.finish_reason = "stop"
                return
            yield [first]
            caches.install()  # another stream may have run while this one waited
            if self._loop == "device":
                steps = self._device_steps(stream, caches, seq, P, max_tokens, params, noise, stops)
            else:
                steps = self._host_steps(stream, caches, drafter, seq, P, max_tokens, params, noise, stops)
            yield from steps
        finally:
            stream._give_back()

    def _host_steps(
        self, stream: TokenStream, caches: _StreamCaches, drafter: Drafter | None, seq: torch.Tensor,
        P: int, max_tokens: int, params: SamplingParams, noise: Noise, stops: set[int],
    ) -> Iterator[list[int]]:
        """One step at a time, its result read back to the host (one sync per step)."""
        model, stats = self.model, stream.stats
        if drafter is not None:
            drafter.reset(seq.shape[1], P)
        n_out, L, k = 1, P + 1, self.k
        while n_out < max_tokens:
            t0 = time.perf_counter()
            caches.install()  # another stream may have run since our last step
            room = max_tokens - n_out  # a step emits at most k + 1 tokens
            if drafter is None or room == 1:
                logits = model(seq[:, L - 1 : L], L - 1, last_only=True)[:, -1]
                new = [int(sample(model.ops, logits, params, noise)[0])]
            else:
                k_step = min(k, room - 1)
                out_t, n_t, drafted = speculative_step(model, drafter, seq, L, k_step, params, noise)
                n = int(n_t[0])  # the one host sync per step: how far the sequence advanced
                new = out_t[0, : n + 1].tolist()
                stats.drafted += drafted
                stats.accepted += n
                stats.k_history.append(k_step)
                drafter.commit(L + n)  # the target's cache now holds [0, L + n)
                if self.adaptive and drafted:  # grow k after a full accept, shrink after a miss
                    k = min(k + 1, self.k_max) if n == drafted else max(1, k - 1)
            stats.target_steps += 1
            seq[0, L : L + len(new)] = torch.tensor(new, dtype=torch.long)
            L += len(new)
            hit = next((i for i, t in enumerate(new) if t in stops), None)
            emit = new if hit is None else new[:hit]
            n_out += len(new) if hit is None else hit + 1
            stats.decode_s += time.perf_counter() - t0
            if emit:
                yield emit
            if hit is not None:
                stream.finish_reason = "stop"
                return

    def _device_steps(
        self, stream: TokenStream, caches: _StreamCaches, seq: torch.Tensor, P: int, max_tokens: int,
        params: SamplingParams, noise: Noise, stops: set[int],
    ) -> Iterator[list[int]]:
        """Launch up to ``read_every`` steps, then read back once; k adapts between read-backs."""
        stats, loop = stream.stats, caches.loop
        assert loop is not None  # made ready by stream()
        drafter = loop.drafter
        end = P + max_tokens  # the sequence is complete at this length
        ks = k_choices(self.k, self.k_max) if drafter is not None else (0,)
        k = self.k if drafter is not None else 0
        known = P + 1
        loop.start(seq, known, params, stops)
        while known < end:
            t0 = time.perf_counter()
            caches.install()  # another stream may have run since our last read-back
            bound, launched, drafted = known, 0, 0
            while launched < self.read_every and bound < end:  # each step adds 1..k+1 tokens
                room = end - known - launched  # the fewest tokens still wanted
                step_k = max(c for c in ks if c <= min(k, room - 1)) if k and room > 1 else 0
                loop.step(step_k, params, noise)
                bound, launched, drafted = bound + step_k + 1, launched + 1, drafted + step_k
                if step_k:
                    stats.k_history.append(step_k)
            L, stop, accepted, tokens = loop.read(known, bound)
            stop = stop if stop < end else -1  # a stop past the limit is not reached
            new = tokens[: (stop if stop >= 0 else min(L, end)) - known]
            stats.target_steps += launched
            stats.drafted += drafted
            just_accepted, stats.accepted = accepted - stats.accepted, accepted
            stats.decode_s += time.perf_counter() - t0
            if new:
                yield new
            if stop >= 0:
                stream.finish_reason = "stop"
                return
            known = L
            if self.adaptive and drafted:  # up a size after a full accept, down after a poor one
                i = ks.index(k)
                k = ks[min(i + 1, len(ks) - 1)] if just_accepted == drafted else ks[max(i - 1, 0)] if 2 * just_accepted < drafted else k

    def generate(
        self,
        prompt: str | Sequence[dict[str, str]],
        max_tokens: int = 256,
        params: SamplingParams | None = None,
        *,
        chat: bool = True,
        seed: int | None = None,
    ) -> Generation:
        """Text (or chat messages) in, text out. ``chat=True`` applies the model's chat template."""
        if self.tokenizer is None:
            raise ConfigError("this engine has no tokenizer; use generate_ids")
        ids = prompt_ids(self.tokenizer, prompt, chat)
        tokens, reason, stats = self.generate_ids(ids, max_tokens, params, seed=seed)
        return Generation(tokens, self.tokenizer.decode(tokens), reason, stats)

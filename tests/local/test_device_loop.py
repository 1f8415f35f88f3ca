"""The device loop (``Engine(loop="device")``): positions, acceptance, commits and stop detection on
the device, one read-back every few steps. On a GPU each step is a captured CUDA graph; here the
same loop runs uncaptured, so its logic is checked against the host loop token for token, and its
sampling against the exact target distribution."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
stats = pytest.importorskip("scipy.stats")

from ponder._exceptions import ConfigError  # noqa: E402
from ponder.local._device_loop import DeviceLoop, k_choices  # noqa: E402
from ponder.local._drafters import ModelDrafter, NgramDrafter  # noqa: E402
from ponder.local._engine import Engine, make_drafter  # noqa: E402
from ponder.local._model import ModelArgs, Transformer  # noqa: E402
from ponder.local._sampling import Noise, SamplingParams  # noqa: E402

from . import test_local_distribution as dist  # noqa: E402
from .conftest import tiny_model  # noqa: E402

PROMPT = [5, 9, 12, 40, 7, 33, 5, 9, 12, 40, 21, 3, 17, 5, 9, 2, 50, 61, 5, 9, 12]


def drafter_for(kind: str | None, target: Transformer):
    if kind == "model":
        return ModelDrafter(tiny_model(seed=99, dim=32, n_layers=2, n_heads=2, n_kv_heads=1), 64)
    return make_drafter(kind, target)


def gemma_like(seed: int = 5) -> Transformer:
    """Gemma 3's switches (q/k norms, (1 + w) norms, sliding layers shorter than the sequence)."""
    args = ModelArgs(
        vocab_size=64, dim=64, n_layers=4, n_heads=4, n_kv_heads=2, intermediate_size=128, head_dim=16,
        qk_norm=True, gemma=True, tie_embeddings=True, max_position=1024, sliding_window=8,
        sliding_layers=(True, True, False, True), rope_local_theta=10000.0, rope_theta=1e6,
    )  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    model = Transformer(args)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.15 * torch.randn(p.shape, generator=g))
    return model.double().eval().requires_grad_(False)


TARGETS = {
    "llama-gqa": lambda: tiny_model(seed=0),
    "qwen2-bias": lambda: tiny_model(seed=2, qkv_bias=True, n_kv_heads=1),
    "gemma-window": gemma_like,
}


@pytest.mark.parametrize("target_name", TARGETS)
def test_a_tensor_position_forward_equals_the_int_one(target_name: str) -> None:
    model = TARGETS[target_name]()
    tokens = torch.tensor([PROMPT + PROMPT[:9]])
    model.setup_caches(1, 64)
    want = model(tokens, 0)
    model.setup_caches(1, 64)
    model(tokens[:, :20], 0)
    got = [model(tokens[:, 20:21], torch.tensor([20])), model(tokens[:, 21:30], torch.tensor([21]))]
    assert torch.allclose(torch.cat(got, dim=1), want[:, 20:30], atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("target_name", TARGETS)
@pytest.mark.parametrize("draft", [None, "ngram", "layers:1", "model"])
@pytest.mark.parametrize("k,adaptive,read_every", [(1, False, 1), (3, False, 8), (4, True, 3)])
def test_greedy_device_loop_equals_the_host_loop(target_name: str, draft: str | None, k: int, adaptive: bool, read_every: int) -> None:
    target = TARGETS[target_name]()
    expected, _, _ = Engine(target, loop="host").generate_ids(PROMPT, 40, stop_ids=())
    engine = Engine(target, drafter=drafter_for(draft, target), k=k, adaptive=adaptive, loop="device", read_every=read_every)
    assert engine.loop == "device"
    got, reason, st = engine.generate_ids(PROMPT, 40, stop_ids=())
    assert got == expected and reason == "length" and st.new_tokens == 40
    if draft is None:
        assert st.target_steps == 39 and st.drafted == 0
    else:
        assert st.drafted > 0 and st.target_steps < 40
        assert set(st.k_history) <= set(k_choices(k, 2 * k))


def test_a_draft_equal_to_the_target_is_always_accepted() -> None:
    target, twin = tiny_model(seed=3), tiny_model(seed=3)
    expected, _, _ = Engine(target).generate_ids(PROMPT, 48, stop_ids=())
    engine = Engine(target, drafter=ModelDrafter(twin, 64), k=4, adaptive=False, loop="device")
    got, _, st = engine.generate_ids(PROMPT, 48, stop_ids=())
    assert got == expected
    assert st.acceptance_rate == 1.0 and st.target_steps == 10  # ceil(47 / 5)


def test_adaptive_k_grows_within_its_set_when_every_draft_is_accepted() -> None:
    target, twin = tiny_model(seed=3), tiny_model(seed=3)
    engine = Engine(target, drafter=ModelDrafter(twin, 64), k=2, k_max=8, loop="device", read_every=2)
    _, _, st = engine.generate_ids(PROMPT, 120, stop_ids=())
    assert st.k_history[:2] == [2, 2] and 8 in st.k_history
    assert set(st.k_history) <= {1, 2, 4, 8}


@pytest.mark.parametrize("draft", [None, "ngram", "layers:2"])
def test_stop_tokens_end_generation_where_the_host_loop_ends_it(draft: str | None) -> None:
    target = tiny_model(seed=0)
    free, _, _ = Engine(target).generate_ids(PROMPT, 40, stop_ids=())
    stop = free[17]
    want = free[: free.index(stop)]
    for loop in ("host", "device"):
        engine = Engine(target, drafter=drafter_for(draft, target), k=3, loop=loop, read_every=4)
        got, reason, st = engine.generate_ids(PROMPT, 40, stop_ids=[stop, 63])
        assert (got, reason) == (want, "stop"), loop
        assert st.new_tokens == len(want)
    # A stop token that would come only after the limit is not reached.
    got, reason, _ = Engine(target, loop="device").generate_ids(PROMPT, free.index(stop), stop_ids=[stop])
    assert (got, reason) == (want, "length")


@pytest.mark.parametrize("draft", [None, "ngram", "layers:2", "model"])
def test_streams_in_turn_on_the_device_loop_equal_each_alone(draft: str | None) -> None:
    target = tiny_model(seed=4)
    engine = Engine(target, drafter=drafter_for(draft, target), k=3, loop="device", read_every=2)
    params = SamplingParams(temperature=0.9, top_p=0.95)
    prompts = [PROMPT, [1, 2, 3, 4, 1, 2, 3], PROMPT[::-1]]
    lengths = [30, 45, 12]
    alone = [engine.generate_ids(p, n, params, seed=i, stop_ids=())[0] for i, (p, n) in enumerate(zip(prompts, lengths, strict=True))]
    streams = [engine.stream(p, n, params, seed=i, stop_ids=()) for i, (p, n) in enumerate(zip(prompts, lengths, strict=True))]
    got: list[list[int]] = [[] for _ in streams]
    live = set(range(3))
    while live:
        for i in sorted(live):
            try:
                got[i] += next(streams[i])
            except StopIteration:
                live.discard(i)
    assert got == alone and [len(g) for g in got] == lengths


def test_seeded_sampling_on_the_device_loop_is_reproducible() -> None:
    target = tiny_model(seed=6)
    engine = Engine(target, drafter=NgramDrafter(64), k=3, loop="device")
    params = SamplingParams(temperature=0.8, top_k=20)
    a = engine.generate_ids(PROMPT, 30, params, seed=7, stop_ids=())[0]
    b = engine.generate_ids(PROMPT, 30, params, seed=7, stop_ids=())[0]
    c = engine.generate_ids(PROMPT, 30, params, seed=8, stop_ids=())[0]
    assert a == b and a != c and len(a) == 30


def test_ngram_lookup_on_the_device_proposes_what_the_host_lookup_proposes() -> None:
    d = NgramDrafter(64)
    seq = torch.tensor([PROMPT + [0] * 10])
    noise = Noise(0, torch.device("cpu"))
    for L in range(3, len(PROMPT) + 1):
        host, _ = d.propose(seq[:, :L], 4, SamplingParams(), noise)
        dev = d.lookup(seq, torch.tensor([L]), 4)
        n = host.shape[1]
        assert dev.shape == (1, 4) and dev[0, :n].tolist() == host[0].tolist(), L
        if n == 0:  # no match: the last token, repeated (any proposal is lossless)
            assert dev[0].tolist() == [PROMPT[L - 1]] * 4


def _device_joint(target, drafter, params: SamplingParams, k: int, n: int, seed: int) -> torch.Tensor:
    """(n, 2): the first two tokens after the prompt from one speculative step (and a decode step,
    which supplies the second token when the first draft was rejected) of the device loop."""
    L = len(dist.PROMPT)
    target.setup_caches(1, 64)
    loop = DeviceLoop(target, drafter, 64, graphs=False)
    seq = torch.tensor([dist.PROMPT])
    target(seq[:, : L - 1], 0)
    noise = Noise(seed, torch.device("cpu"))
    out = torch.empty(n, 2, dtype=torch.long)
    for i in range(n):
        loop.start(seq, L, params, set())
        loop.step(k, params, noise)
        loop.step(0, params, noise)
        out[i] = torch.tensor(loop.read(L, L + 2)[3])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("drafter_kind,params_name,k", [("model", "t1", 2), ("layers:1", "t0.7-topk3", 3), ("ngram", "t1.3-topp0.8", 2)])
def test_sampled_device_steps_have_the_target_distribution(drafter_kind: str, params_name: str, k: int) -> None:
    params = dist.PARAMS[params_name]
    target = dist.target_model()
    joint = dist.exact_joint(target, params)
    drafter = dist.make_drafter(drafter_kind, target)
    if isinstance(drafter, ModelDrafter) and not drafter.shares_cache:
        drafter.model.setup_caches(1, 64)
    samples = _device_joint(target, drafter, params, k, 3000, seed=k)
    assert dist.chi_square_pvalue(samples, joint) > 1e-4
    assert dist.V == joint.shape[0]


def test_loop_settings_are_checked() -> None:
    target = tiny_model(seed=0)
    with pytest.raises(ConfigError, match="unknown loop"):
        Engine(target, loop="gpu")
    with pytest.raises(ConfigError, match="read_every"):
        Engine(target, loop="device", read_every=0)
    assert Engine(target).loop == "host"  # the CPU default: one step at a time from Python
    assert k_choices(4, 8) == (1, 2, 4, 8) and k_choices(3, 6) == (1, 2, 3, 4)


@pytest.mark.slow
def test_the_fused_layer_kernels_compute_the_same_forward_and_keep_greedy_identity() -> None:
    """What the GPU runs: the Triton ops and fused layer kernels (here under the interpreter)."""
    pytest.importorskip("triton")
    target = tiny_model(seed=0, dtype=torch.float32)
    target.setup_caches(1, 64, backend="triton")
    tokens = torch.tensor([PROMPT])
    want = target(tokens, 0)
    target.fused = True
    assert target.fusable
    target.setup_caches(1, 64, backend="triton")
    target(tokens[:, :15], 0)
    got = torch.cat([target(tokens[:, 15:16], torch.tensor([15])), target(tokens[:, 16:], torch.tensor([16]))], 1)
    assert torch.allclose(got, want[:, 15:], atol=1e-4)
    plain = Engine(target, loop="device", backend="triton").generate_ids(PROMPT, 12, stop_ids=())[0]
    spec = Engine(target, drafter=make_drafter("layers:1", target), k=3, loop="device", backend="triton")
    got_ids, _, st = spec.generate_ids(PROMPT, 12, stop_ids=())
    assert got_ids == plain and st.drafted > 0


# Operations whose result size or value the host must know: each one is a host sync on a GPU,
# which stalls the loop and breaks CUDA-graph capture. Seen at two levels: the Python API (a value
# read back: item, tolist, bool(...)) and aten, run without inference_mode so that composite ops
# show the ops they are made of (torch.where(mask) is nonzero; F.one_hot checks its range with
# .item() on the CPU), and boolean-mask indexing, which aten calls plain ``index``.
_SYNCING = {"_local_scalar_dense", "nonzero", "_unique", "_unique2", "unique_consecutive", "unique_dim",
            "masked_select", "isin", "equal", "is_nonzero", "bincount", "histc", "argwhere", "allclose"}  # fmt: skip
_READS = {"item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "__len__"}


def host_syncs(fn) -> list[str]:  # type: ignore[no-untyped-def]
    """What in ``fn()`` makes the host wait for the device (run under no_grad, not inference_mode)."""
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    found: list[str] = []

    class Reads(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            name = getattr(func, "__name__", "")
            if name in _READS and args and isinstance(args[0], torch.Tensor):
                found.append(f"Tensor.{name}")
            return func(*args, **(kwargs or {}))

    class Aten(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            name = func._overloadpacket.__name__
            if name in _SYNCING:
                found.append(name)
            elif name in ("index", "index_put", "index_put_", "_index_put_impl_"):
                masks = [i for i in args[1] if isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)]
                if masks:
                    found.append(f"{name} with a boolean mask")
            elif name == "repeat_interleave" and isinstance(args[0], torch.Tensor) and "output_size" not in (kwargs or {}):
                if len(args) == 1 or isinstance(args[1], torch.Tensor):
                    found.append("repeat_interleave with tensor repeats")
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Reads(), Aten():
        fn()
    return found


def test_the_sync_check_sees_composite_ops_and_boolean_masks() -> None:
    import torch.nn.functional as F

    x, m, i = torch.randn(10), torch.randn(10) > 0, torch.tensor([1, 2])
    syncing = {
        "mask index": lambda: x[m],
        "mask assignment": lambda: x.clone().__setitem__(m, 0.0),
        "where(mask)": lambda: torch.where(m),
        "argwhere": lambda: torch.argwhere(m),
        "one_hot": lambda: F.one_hot(i, 5),
        "item": lambda: x.sum().item(),
        "tolist": lambda: x.tolist(),
        "bool": lambda: bool(x.sum() > 0),
        "int": lambda: int(i[0]),
        "unique": lambda: torch.unique(i),
        "repeat_interleave": lambda: torch.repeat_interleave(i, i),
        "isin": lambda: torch.isin(i, i),
    }
    for name, fn in syncing.items():
        assert host_syncs(fn), name
    free = {
        "where(mask, a, b)": lambda: torch.where(m, x, 0.0),
        "index with positions": lambda: x[i],
        "gather/scatter": lambda: torch.zeros(10).scatter_(0, i, x.gather(0, i)),
        "repeat_interleave by an int": lambda: x.repeat_interleave(2),
        "argmax": lambda: torch.argmax(x),
    }
    for name, fn in free.items():
        assert not host_syncs(fn), name


@pytest.mark.parametrize("draft", [None, "ngram", "layers:2", "model"])
@pytest.mark.parametrize("params", [SamplingParams(), SamplingParams(temperature=0.8), SamplingParams(temperature=0.8, top_p=0.9), SamplingParams(temperature=0.8, top_k=5)])
def test_a_step_never_waits_for_the_host(draft: str | None, params: SamplingParams) -> None:
    target = tiny_model(seed=1)
    drafter = drafter_for(draft, target)
    with torch.no_grad():  # not inference_mode: composite ops must show their parts
        target.setup_caches(1, 64)
        if isinstance(drafter, ModelDrafter) and not drafter.shares_cache:
            drafter.model.setup_caches(1, 64)
        loop = DeviceLoop(target, drafter, 64, graphs=False)
        seq = torch.tensor([PROMPT])
        target(seq[:, :-1], 0)
        loop.start(seq, len(PROMPT), params, {7})
    for k in (0, 3):
        if k and draft is None:
            continue
        assert not host_syncs(lambda k=k: loop._run(k, params)), (k, params)
    with torch.no_grad():
        loop.step(0, params, Noise(0, torch.device("cpu")))  # and the step as launched (noise refill included) still runs


def test_a_planted_sync_in_a_step_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a commit that finds stops with a boolean mask is a host sync."""
    target = tiny_model(seed=1)
    real = DeviceLoop._commit

    def commit_with_mask(self: DeviceLoop, out: torch.Tensor, n: torch.Tensor, width: int) -> None:
        _ = out[0][out[0] >= 0]  # the emitted tokens, by mask: its size is data-dependent
        real(self, out, n, width)

    monkeypatch.setattr(DeviceLoop, "_commit", commit_with_mask)
    with torch.no_grad():
        target.setup_caches(1, 64)
        loop = DeviceLoop(target, NgramDrafter(64), 64, graphs=False)
        loop.start(torch.tensor([PROMPT]), len(PROMPT), SamplingParams(), set())
    assert host_syncs(lambda: loop._run(2, SamplingParams())) == ["index with a boolean mask"]


@pytest.mark.slow
def test_a_sampled_step_on_the_triton_kernels_sorts_nothing() -> None:
    """Top-k/top-p at every draft and verify row: thresholds, not a sort of the vocabulary (what
    a GPU runs; here under the interpreter), and still no host sync."""
    pytest.importorskip("triton")
    from torch.utils._python_dispatch import TorchDispatchMode

    target = tiny_model(seed=1, dtype=torch.float32)
    params = SamplingParams(temperature=0.8, top_k=20, top_p=0.9)
    with torch.no_grad():
        target.setup_caches(1, 64, backend="triton")
        loop = DeviceLoop(target, make_drafter("layers:2", target), 64, graphs=False)
        seq = torch.tensor([PROMPT])
        target(seq[:, :-1], 0)
        loop.start(seq, len(PROMPT), params, set())
    seen: set[str] = set()

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            seen.add(func._overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Ops():
        loop._run(2, params)
    assert seen and not seen & {"sort", "topk", "argsort", "msort"}, seen
    assert not host_syncs(lambda: loop._run(2, params))

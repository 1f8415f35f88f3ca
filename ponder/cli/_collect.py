"""``ponder collect``: every model answers every prompt, into an ungraded outcome table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .._config import load_config
from ._common import (
    ConfigOpt,
    app,
    base_urls,
    paid_run,
    report_run,
    say,
    say_err,
    stdout,
)


@app.command("collect")
def collect(
    ctx: typer.Context,
    prompts: Path = typer.Argument(..., metavar="PROMPTS",
                                   help="JSONL, CSV or Parquet rows: id, prompt or messages; optional "
                                        "reference, task, tests, and tools, tool_choice, "
                                        "response_format as in OpenAI's API (JSON in a CSV cell)."),
    model: list[str] = typer.Option(..., "--model", "-m", help="provider:model to ask (repeatable)."),
    output: Path = typer.Option(..., "--output", "-o",
                                help="The outcome table (.parquet, .csv or .jsonl); rerun to resume."),
    concurrency: int = typer.Option(8, "--concurrency", "-n", min=1, max=1024),
    samples: int = typer.Option(1, "--samples", min=1, max=128,
                                help="Answers per prompt and model (one request with n where the API has it)."),
    temperature: float | None = typer.Option(None, "--temperature", "-t", min=0.0, max=2.0),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1),
    logprobs: bool = typer.Option(False, "--logprobs",
                                  help="Store token log-probability statistics where the provider returns them."),
    max_cost: float | None = typer.Option(None, "--max-cost", min=0.0,
                                          help="Stop starting calls once this many USD are spent."),
    estimate: bool = typer.Option(False, "--estimate", help="Print the expected cost per model and exit."),
    provider_batch: bool = typer.Option(False, "--provider-batch",
                                        help="Use the providers' batch APIs (cheaper, slower; resumable)."),
    base_url: str | None = typer.Option(None, "--base-url", help="Base URL of an OpenAI-compatible server."),
    no_cache: bool = typer.Option(False, "--no-cache",
                                  help="Bypass the completion cache (resume then relies on the output files only)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    config: Path | None = ConfigOpt,
) -> None:
    """Ask every model every prompt into an outcome table (score empty until `ponder grade`)."""
    from .._client import Client
    from ..collect import CollectSummary, estimate_collect
    from ..collect import collect as run_collect

    urls = base_urls(model, base_url)
    if samples > 1 and not temperature:
        say_err(f"warning: --samples {samples} at temperature 0 gives near-identical answers; "
                "set --temperature", style="yellow")
    cfg = load_config(config)
    with Client(cfg, cache=False if no_cache else None, base_urls=urls) as client:
        if estimate:
            rows = estimate_collect(prompts, model, client=client, output=output, samples=samples,
                                    max_tokens=max_tokens, provider_batch=provider_batch)
            _render_estimate(rows, provider_batch)
            return
        started: list[CollectSummary] = []
        def on_start(s: CollectSummary) -> None:
            started.append(s)
            bar.update(task, total=s.total)

        def on_result(s: CollectSummary) -> None:
            bar.update(task, total=s.total, completed=s.done + s.failed, cost=s.cost_usd, failed=s.failed)

        def interrupted() -> str:
            done = f"{started[0].done} calls answered in this run; " if started else ""
            return (f"interrupted: {done}every answer received is kept in {output} and its "
                    "progress file")

        with paid_run(ctx, progress, interrupted) as (bar, task):
            run_collect(prompts, model, client=client, output=output, concurrency=concurrency,
                        samples=samples, temperature=temperature, max_tokens=max_tokens,
                        logprobs=logprobs, max_cost=max_cost, provider_batch=provider_batch,
                        on_start=on_start, on_result=on_result)
    s = started[0]
    report_run(output, s, [f"{s.done} calls answered", f"{s.failed} failed",
                           f"{s.skipped} answers already collected", f"cost ${s.cost_usd:.6f}"],
               "calls", then="; grade it with `ponder grade`",
               failed_rows="their rows carry the error; ")


def _render_estimate(rows: list[Any], provider_batch: bool) -> None:
    from rich.table import Table

    rate = " at the batch rate" if provider_batch else ""
    t = Table(title=f"Expected cost of the missing answers{rate} (nothing was called)")
    for col in ("model", "calls", "answers", "input tokens", "output tokens", "cost USD"):
        t.add_column(col, justify="left" if col == "model" else "right")
    total = 0.0
    for r in rows:
        total += r.cost_usd or 0.0
        t.add_row(r.model, str(r.calls), str(r.answers), str(r.input_tokens), str(r.output_tokens),
                  "no price" if r.cost_usd is None else f"{r.cost_usd:.6f}")
    stdout.print(t)
    say(f"total ${total:.6f}. Input tokens are counted from the prompts (~4 characters per "
        "token); output length is a guess:")
    for r in rows:
        what = "a fixed default" if r.guess_source == "default" else r.guess_source
        say(f"  {r.model}: {r.output_guess} tokens per answer ({what})")
    if any(r.cost_usd is None for r in rows):
        say("models without a price cost 0 here; add them under [prices] in the config")

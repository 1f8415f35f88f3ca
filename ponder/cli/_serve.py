"""``ponder serve`` (the OpenAI-compatible routing server) and ``ponder run`` (batch runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from .._config import load_config
from .._exceptions import ConfigError
from .._types import ModelSpec
from ._common import (
    AllowOutsideOpt,
    ConfigOpt,
    app,
    base_urls,
    fail,
    paid_run,
    report_run,
    say_err,
)


@app.command("serve")
def serve(
    config: Path | None = ConfigOpt,
    model: list[str] | None = typer.Option(None, "--model", "-m", help="Serve this provider:model (repeatable)."),
    base_url: str | None = typer.Option(None, "--base-url", help="Upstream base URL for the --model provider(s)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    api_key_env: str | None = typer.Option(None, "--api-key-env", help="Require 'Authorization: Bearer $VAR' from clients."),
    max_body_mb: float = typer.Option(4.0, "--max-body-mb", min=0.001, help="Largest request body accepted."),
    max_messages: int = typer.Option(2048, "--max-messages", min=1,
                                     help="Most messages (and content parts, in all) one request may hold."),
    allow_outside: bool = AllowOutsideOpt,
    log_level: str = typer.Option("info", "--log-level"),
    access_log: bool = typer.Option(False, "--access-log/--no-access-log"),
) -> None:
    """Serve strategies and models behind an OpenAI-compatible /v1/chat/completions."""
    from ..server import create_app
    from ..server import serve as run_server

    models = list(model or [])
    cfg = load_config(config)
    if not models and not cfg.strategies and not cfg.models:
        fail("nothing to serve: give --model provider:model, or a config with [strategies] or [models]")
    api_key = os.environ.get(api_key_env) if api_key_env else None
    if api_key_env and not api_key:
        raise ConfigError(f"environment variable {api_key_env} is empty or not set", key="--api-key-env")
    app = create_app(cfg, models=[str(ModelSpec.parse(m)) for m in models], api_key=api_key,
                     max_body_bytes=int(max_body_mb * 1024 * 1024), max_messages=max_messages,
                     base_urls=base_urls(models, base_url), allow_outside=allow_outside)
    routes = app.state.routes
    say_err(f"ponder serving {len(routes)} model ids on http://{host}:{port}/v1 "
            f"({', '.join(list(routes)[:6])}{', …' if len(routes) > 6 else ''})")
    run_server(app, host=host, port=port, log_level=log_level, access_log=access_log)


@app.command("run")
def run(
    ctx: typer.Context,
    input_path: Path = typer.Argument(..., metavar="INPUT.jsonl", help="One JSON object per line: id + prompt or messages."),
    output: Path = typer.Option(..., "--output", "-o", help="Results, one JSON line per row (appended as they finish)."),
    concurrency: int = typer.Option(8, "--concurrency", "-n", min=1, max=1024),
    model: str | None = typer.Option(None, "--model", "-m", help="provider:model"),
    strategy: str | None = typer.Option(None, "--strategy", "-s", help="A strategy file, or a [strategies] name in the config."),
    base_url: str | None = typer.Option(None, "--base-url", help="Base URL of an OpenAI-compatible server."),
    max_cost: float | None = typer.Option(None, "--max-cost", min=0.0, help="Stop starting rows once this many USD are spent."),
    retry_failed: bool = typer.Option(True, "--retry-failed/--keep-failed", help="Retry rows that failed in an earlier run."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Bypass the completion cache (resume then relies on the output file only)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    allow_outside: bool = AllowOutsideOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Answer every row of a JSONL file; rerun the same command to resume without paying twice."""
    from .._batch import BatchSummary, run_batch
    from .._client import Client
    from ..strategies import resolve

    if (model is None) == (strategy is None):
        fail("give exactly one of --model provider:model or --strategy FILE|NAME")
    urls = base_urls([model] if model else [], base_url)
    cfg = load_config(config)
    started: list[BatchSummary] = []  # the live summary, for the Ctrl-C message
    with Client(cfg, cache=False if no_cache else None, base_urls=urls) as client:
        live = resolve(strategy if strategy is not None else str(model or ""), cfg, allow_outside=allow_outside)

        def on_start(s: Any) -> None:
            started.append(s)
            bar.update(task, total=s.total, completed=s.skipped)

        def on_result(rec: dict[str, Any], s: Any) -> None:
            bar.update(task, completed=s.skipped + s.done + s.failed, cost=s.cost_usd, failed=s.failed)

        def interrupted() -> str:
            if not started:
                return f"interrupted before any row was written to {output}"
            s = started[0]
            return (f"interrupted: {s.skipped + s.done + s.failed} of {s.total} rows are written to "
                    f"{output} ({s.done} answered, {s.failed} failed in this run; rows in flight "
                    "were not written)")

        with paid_run(ctx, progress, interrupted) as (bar, task):
            s = run_batch(input_path, output, live, client, concurrency=concurrency,
                          retry_failed=retry_failed, max_cost_usd=max_cost,
                          on_start=on_start, on_result=on_result)
    report_run(output, s, [f"{s.done} answered", f"{s.failed} failed", f"{s.skipped} already done",
                           f"cost ${s.cost_usd:.6f}"], "rows")

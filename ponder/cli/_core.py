"""``ponder ask``, ``ponder models``, ``ponder cache …`` and ``ponder config check``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .._client import Client
from .._config import config_problems, load_config
from .._pricing import PriceTable
from .._types import Answer, ChatRequest
from ..strategies import resolve
from ._common import AllowOutsideOpt, ConfigOpt, app, base_urls, fail, say, say_err, stdout

cache_app = typer.Typer(help="Inspect or clear the completion cache.", no_args_is_help=True)
config_app = typer.Typer(help="Validate configuration.", no_args_is_help=True)


@app.command("ask")
def ask(
    prompt: str = typer.Argument(..., help="The prompt, or a JSON list of chat messages."),
    model: str | None = typer.Option(None, "--model", "-m", help="provider:model, e.g. openai:gpt-4o-mini"),
    strategy: Path | None = typer.Option(None, "--strategy", "-s", help="A saved strategy file (cascade or router)."),
    base_url: str | None = typer.Option(None, "--base-url", help="Base URL of an OpenAI-compatible server."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", min=0.0, max=2.0),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1),
    system: str | None = typer.Option(None, "--system", help="A system message."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Bypass the completion cache."),
    allow_outside: bool = AllowOutsideOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    config: Path | None = ConfigOpt,
) -> None:
    """Answer a prompt with one model or a saved strategy; print the answer and its exact cost."""
    if (model is None) == (strategy is None):
        fail("give exactly one of --model provider:model or --strategy FILE")
    urls = base_urls([model] if model else [], base_url)
    cfg = load_config(config)
    request = ChatRequest.of(prompt, temperature=temperature, max_tokens=max_tokens)
    if system:
        request = ChatRequest.model_validate({**request.model_dump(), "messages": (
            {"role": "system", "content": system}, *request.messages)})
    with Client(cfg, cache=False if no_cache else None, base_urls=urls) as client:
        live = resolve(strategy if strategy is not None else str(model or ""), cfg, allow_outside=allow_outside)
        answer: Answer = live.run(request, client)
    c = answer.completion
    if as_json:
        print(json.dumps({
            "text": c.text, "model": c.spec, "cost_usd": answer.cost_usd, "cached": c.cached,
            "saved_usd": c.saved_usd, "cost_estimated": c.cost_estimated,
            "usage": c.usage.model_dump(), "latency_s": round(c.latency_s, 6),
            "finish_reason": c.finish_reason,
            "trace": [a.model_dump() for a in answer.trace] if len(answer.trace) > 1 or answer.strategy != c.spec else [],
        }, ensure_ascii=False))
        return
    say(c.text)
    if len(answer.trace) > 1:
        for a in answer.trace:
            mark = "accepted" if a.accepted else (f"error: {a.error}" if a.error else "rejected")
            score = f" score={a.score:.3f}" if a.score is not None else ""
            say_err(f"  {a.model}{score} ${a.cost_usd:.6f} {mark}")
    note = f"cached, saved ${c.saved_usd:.6f}" if c.cached else f"{c.usage.input_tokens} in / {c.usage.output_tokens} out"
    est = " (estimated)" if c.cost_estimated else ""
    say_err(f"[{c.spec}] cost ${answer.cost_usd:.6f}{est} ({note}), {c.latency_s:.2f}s")


@app.command("models")
def models(config: Path | None = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Known models and their prices (USD per 1M tokens)."""
    cfg = load_config(config)
    table = PriceTable.default().with_overrides(cfg.prices)
    rows = table.rows()
    if as_json:
        print(json.dumps({"as_of": table.as_of, "models": [{"model": k, **p.model_dump()} for k, p in rows]}))
        return
    from ._tables import NAME_MIN, fitted_table

    t = fitted_table(f"Prices, USD per 1M tokens (as of {table.as_of})",
                     ["model", "input", "output", "cached\ninput", "per\nrequest", "source"],
                     [([k, f"{p.input:g}", f"{p.output:g}",
                        "" if p.cached_input is None else f"{p.cached_input:g}",
                        f"{p.per_request:g}" if p.per_request else "", p.source], None)
                      for k, p in rows], names={0: NAME_MIN, 5: 12}, edge=False)
    stdout.print(t)
    if cfg.models:
        stdout.print("aliases: " + ", ".join(f"{a} = {s}" for a, s in cfg.models.items()))


app.add_typer(cache_app, name="cache")
app.add_typer(config_app, name="config")


@cache_app.command("stats")
def cache_stats_cmd(config: Path | None = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Hits, misses, and the cost the hits saved."""
    from .._exceptions import CacheDisabled

    cfg = load_config(config)
    try:
        with Client(cfg) as client:
            s = client.cache_stats()
    except CacheDisabled:
        if as_json:
            print(json.dumps({"enabled": False}))
        else:
            say(f"the cache is disabled ([cache] enabled = false in {cfg.source or 'the config'})")
        return
    data = {k: getattr(s, k) for k in ("hits", "misses", "hit_rate", "saved_usd", "entries", "size_bytes")}
    if as_json:
        print(json.dumps({"enabled": True, **data}))
        return
    for k, v in data.items():
        stdout.print(f"{k:>10}: {v:.6f}" if isinstance(v, float) else f"{k:>10}: {v}")


@cache_app.command("clear")
def cache_clear_cmd(config: Path | None = ConfigOpt) -> None:
    """Delete every cached completion and reset the statistics; a cache too damaged to open is removed."""
    from .._exceptions import CacheUnavailable

    with Client(load_config(config), cache=True) as client:
        backend = client.cache
        assert backend is not None
        try:
            n = backend.clear()
        except CacheUnavailable as exc:
            reset = getattr(backend, "reset", None)
            removed = reset() if reset is not None else []
            if not removed:  # nothing to remove: the cause lies elsewhere (Redis down, not a folder)
                raise
            say(f"the cache at {exc.where} was unreadable ({exc.reason}); removed {len(removed)} "
                f"files: {', '.join(map(str, removed))}")
            return
    stdout.print(f"removed {n} entries")


@config_app.command("check")
def config_check(path: Path = typer.Argument(Path("ponder.toml"), help="The config file to check.")) -> None:
    """Report every problem in a config file with its file, key and reason."""
    problems = config_problems(path)
    if not problems:
        return stdout.print(f"{path}: ok")
    for p in problems:
        say_err(f"error: {p}", style="red")
    raise typer.Exit(1)

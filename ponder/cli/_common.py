"""Shared CLI plumbing: one error line on stderr, a traceback only with --debug.

The consoles print text as it is (no ``[markup]``, no ``:emoji:``): it is mostly user data
(``openai:fire``, file names, provider messages); style goes through ``style=`` or rich Text.
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from .._exceptions import PonderError

app = typer.Typer(
    name="ponder",
    help="Spend expensive LLM compute only where a query needs it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Train scorers and routers on outcome tables.", no_args_is_help=True)
app.add_typer(train_app, name="train")

stdout = Console(soft_wrap=True, emoji=False, markup=False)
stderr = Console(stderr=True, soft_wrap=True, emoji=False, markup=False)


def _classes(name: str) -> tuple[type[BaseException], ...]:
    """``name`` from typer's vendored click (typer >= 0.20), from click, and from typer itself."""
    found: list[type[BaseException]] = []
    for module in ("typer._click.exceptions", "click.exceptions", "typer.exceptions"):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in found:
            found.append(cls)
    return tuple(found)


_EXIT, _ABORT, _USAGE = _classes("Exit"), _classes("Abort"), _classes("ClickException")


def run_main(app: typer.Typer) -> int:
    """Run the Typer app; turn any error into one stderr line and a non-zero exit code."""
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
        os.environ["PONDER_DEBUG"] = "1"
    try:
        rv = app(standalone_mode=False)  # click returns the code of typer.Exit here
        return rv if isinstance(rv, int) else 0
    except _ABORT:
        stderr.print("aborted", style="red")
        return 130
    except _EXIT as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except _USAGE as exc:  # usage errors: click's own "Usage: … Error: …" text, exit 2
        click_exc: Any = exc
        # a bare `ponder` (or group): typer's rich help is printed already; plain click carries
        # the help text in the message
        if type(exc).__name__ != "NoArgsIsHelpError" or click_exc.format_message().strip():
            click_exc.show()
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        stderr.print("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if debug:
            raise
        say_err(f"error: {exc}" if isinstance(exc, PonderError) else
                f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", style="red")
        return 1


def say(text: Any, style: str | None = None) -> None:
    """Print ``text`` on stdout as it is (no highlighting of numbers or paths)."""
    stdout.print(text, style=style, highlight=False)


def say_err(text: Any, style: str | None = None) -> None:
    """Print ``text`` on stderr as it is."""
    stderr.print(text, style=style, highlight=False)


def fail(message: str, code: int = 1) -> Any:
    """Print one error line and exit: for problems found while parsing arguments."""
    say_err(f"error: {message}", style="red")
    raise typer.Exit(code)


def base_urls(models: list[str], base_url: str | None) -> dict[str, str]:
    """``--base-url`` for the providers of ``models`` (``openai`` when none); a bad URL fails."""
    from .._config import url_problem
    from .._types import ModelSpec

    if not base_url:
        return {}
    if reason := url_problem(base_url, ("http", "https")):
        fail(f"--base-url {reason}")
    return {p: base_url for p in {ModelSpec.parse(m).provider for m in models} or {"openai"}}


@contextmanager
def paid_run(ctx: typer.Context, progress: bool, interrupted: Callable[[], str]
             ) -> Iterator[tuple[Any, Any]]:
    """A resumable paid run's (``run``, ``collect``) progress bar and task (with ``cost`` and
    ``failed`` fields); on Ctrl-C, what was kept (``interrupted()``) and the command that resumes."""
    import rich.progress as rp

    bar = rp.Progress(rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
                      rp.TextColumn("cost ${task.fields[cost]:.4f}"),
                      rp.TextColumn("failed {task.fields[failed]}"), rp.TimeRemainingColumn(),
                      console=stderr, disable=not progress, transient=False)
    try:
        with bar:
            yield bar, bar.add_task(f"ponder {ctx.info_name}", total=None, cost=0.0, failed=0)
    except KeyboardInterrupt:
        say_err(interrupted())
        say_err(f"resume with: {command_line(ctx)}")
        raise typer.Exit(130) from None


def report_run(output: Path, s: Any, parts: list[str], units: str, then: str = "",
               failed_rows: str = "") -> None:
    """A paid run's summary ``s`` on stderr; a budget stop raises BudgetExceeded, failures exit 2."""
    from .._exceptions import BudgetExceeded

    if s.cached:
        parts.append(f"{s.cached} from cache (saved ${s.saved_usd:.6f})")
    say_err(f"{output}: " + ", ".join(parts) + f", {s.elapsed_s:.1f}s{then}")
    if s.failed:
        kinds = ", ".join(f"{k} x{n}" for k, n in sorted(s.errors.items()))
        say_err(f"{s.failed} {units} failed ({kinds}); {failed_rows}run the same command again "
                "to retry them", style="yellow")
    if s.stopped:
        raise BudgetExceeded(f"{s.stopped} with {s.remaining} {units} left; run the same command "
                             "with a higher --max-cost to go on")
    if s.failed:
        raise typer.Exit(2)


def model_map_option(pairs: list[str]) -> dict[str, str]:
    """``--model-map NAME=provider:model`` (repeatable) as a dict."""
    out = {}
    for p in pairs:
        name, sep, spec = p.partition("=")
        if not sep or not name or ":" not in spec:
            fail(f"--model-map takes NAME=provider:model, got {p!r}")
        out[name] = spec
    return out


def command_line(ctx: typer.Context) -> str:
    """The command being run, rebuilt from its parameters less those at their defaults."""
    names: list[str] = []
    c: Any = ctx
    while c is not None and c.parent is not None:
        names.insert(0, c.info_name)
        c = c.parent
    words = ["ponder", *names]
    for param in ctx.command.params:
        if not param.expose_value or param.name is None:
            continue
        value = ctx.params.get(param.name)
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        values = [v.value if isinstance(v, Enum) else v for v in values if v is not None]
        if param.param_type_name == "argument":
            words += [str(v) for v in values]
            continue
        if value == param.default or not values:
            continue
        opt = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        if getattr(param, "is_flag", False):
            words += [opt] if value else [o for o in param.secondary_opts if o.startswith("--")][:1]
        else:
            words += [w for v in values for w in (opt, str(v))]
    return shlex.join(words)


ConfigOpt = typer.Option(None, "--config", "-c", help="TOML config file (default: $PONDER_CONFIG or ./ponder.toml).")
AllowOutsideOpt = typer.Option(
    False, "--allow-outside",
    help="Let strategy files name model files outside their own folder (only for files you trust).")


def stage_progress() -> Any:
    """The progress bar of offline work in stages (``eval``, ``grade``), gone when done."""
    import rich.progress as rp

    return rp.Progress(rp.TextColumn("{task.description:<11}"), rp.BarColumn(),
                       rp.TextColumn("{task.completed}/{task.total}"), rp.TimeElapsedColumn(),
                       console=stderr, transient=True)

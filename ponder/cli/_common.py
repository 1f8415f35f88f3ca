"""Shared CLI plumbing: one error line on stderr, a traceback only with --debug.

Both consoles print text as it is: no ``[markup]`` and no ``:emoji:`` codes, because what they
print is mostly user data (model names such as ``openai:fire``, file names, provider messages).
Style goes through ``style=`` or :class:`rich.text.Text`, never through markup in a string.
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
from enum import Enum
from typing import Any

import typer
from rich.console import Console

from .._exceptions import PonderError

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


def debug_enabled() -> bool:
    return os.environ.get("PONDER_DEBUG", "") not in ("", "0", "false") or "--debug" in sys.argv


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
        if type(exc).__name__ == "NoArgsIsHelpError":
            # a bare `ponder` (or group): typer's rich help is already printed; plain click
            # carries the help text in the message
            if exc.format_message().strip():  # type: ignore[attr-defined]
                exc.show()  # type: ignore[attr-defined]
        else:
            exc.show()  # type: ignore[attr-defined]
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        stderr.print("interrupted")
        return 130
    except PonderError as exc:
        if debug:
            raise
        stderr.print(f"error: {exc}", style="red", highlight=False)
        return 1
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if debug:
            raise
        stderr.print(
            f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            style="red", highlight=False,
        )
        return 1


def fail(message: str, code: int = 1) -> Any:
    """Print one error line and exit: for problems found while parsing arguments."""
    stderr.print(f"error: {message}", style="red", highlight=False)
    raise typer.Exit(code)


def model_map_option(pairs: list[str]) -> dict[str, str]:
    """``--model-map NAME=provider:model`` (repeatable) as a dict; a malformed pair fails the command."""
    out = {}
    for p in pairs:
        name, sep, spec = p.partition("=")
        if not sep or not name or ":" not in spec:
            fail(f"--model-map takes NAME=provider:model, got {p!r}")
        out[name] = spec
    return out


def command_line(ctx: typer.Context) -> str:
    """The command being run, rebuilt from its parsed parameters: ``ponder run in.jsonl --output …``.

    Options left at their defaults are left out, so it reads like what the user typed.
    """
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
            off = next((o for o in param.secondary_opts if o.startswith("--")), None)
            if value:
                words.append(opt)
            elif off is not None:
                words.append(off)
            continue
        for v in values:
            words += [opt, str(v)]
    return shlex.join(words)


ConfigOpt = typer.Option(None, "--config", "-c", help="TOML config file (default: $PONDER_CONFIG or ./ponder.toml).")
AllowOutsideOpt = typer.Option(
    False, "--allow-outside",
    help="Let strategy files name model files outside their own folder (only for files you trust).")


def cost_progress(description: str, *, enabled: bool) -> tuple[Any, Any]:
    """The progress bar of long paid runs (``run``, ``collect``): done/total, running cost, failures.
    Update it with ``completed=``, ``total=``, ``cost=`` and ``failed=``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("cost ${task.fields[cost]:.4f}"), TextColumn("failed {task.fields[failed]}"),
                   TimeRemainingColumn(), console=stderr, disable=not enabled, transient=False)
    return bar, bar.add_task(description, total=None, cost=0.0, failed=0)

"""Shared CLI plumbing: one error line on stderr, a traceback only with --debug."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
import typer
from rich.console import Console

from .._exceptions import PonderError

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


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
    except click.exceptions.Abort:
        stderr.print("aborted", style="red", markup=False)
        return 130
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.ClickException as exc:  # usage errors
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        stderr.print("interrupted", markup=False)
        return 130
    except PonderError as exc:
        if debug:
            raise
        stderr.print(f"error: {exc}", style="red", markup=False, highlight=False)
        return 1
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if debug:
            raise
        stderr.print(
            f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            style="red", markup=False, highlight=False,
        )
        return 1


def fail(message: str, code: int = 1) -> Any:
    """Print one error line and exit: for problems found while parsing arguments."""
    stderr.print(f"error: {message}", style="red", markup=False, highlight=False)
    raise typer.Exit(code)

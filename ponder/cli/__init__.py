"""The ``ponder`` command. Each command parses, calls the library and renders; errors go to stderr."""

from __future__ import annotations

import importlib
import sys

import typer

from ._common import app, run_main, say
from ._common import train_app as train_app  # ponder.cli.train_app, as before


def _print_version(value: bool) -> None:
    """The installed distribution's version, else the source tree's ``ponder.__version__``."""
    from importlib.metadata import PackageNotFoundError, version

    if value:
        try:
            say(f"ponder {version('ponder')}")
        except PackageNotFoundError:
            from .. import __version__

            say(f"ponder {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                      help="Print the version and exit."),
) -> None:
    pass  # no docstring: the help text is the one given to Typer()


# each module adds its commands to ``app``, in the order of `ponder --help`
for _name in ("_core", "_eval", "_cascade", "_routers", "_serve", "_local", "_grade", "_collect"):
    importlib.import_module(f"{__name__}.{_name}")


def main() -> None:
    sys.exit(run_main(app))

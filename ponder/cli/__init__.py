"""The ``ponder`` command. Each command parses, calls the library and renders; errors go to stderr.

Command groups live in their own modules, each adding its commands to ``app`` as it is imported.
"""

from __future__ import annotations

import importlib
import sys

import typer

from ._common import app, run_main, say
from ._common import train_app as train_app  # ponder.cli.train_app, as before


def version() -> str:
    """The installed distribution's version, else the source tree's ``ponder.__version__``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("ponder")
    except PackageNotFoundError:
        from .. import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        say(f"ponder {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                      help="Print the version and exit."),
) -> None:
    # no docstring: the help text is the one given to Typer() above
    pass

_COMMAND_MODULES = (
    "_core",  # ask, models, cache, config           (foundation)
    "_eval",  # eval, datasets                        (evaluation)
    "_cascade",  # train scorer, optimize              (scorers + cascade)
    "_routers",  # train router                        (routers)
    "_serve",  # serve, run                            (server + batch)
    "_local",  # local generate, local bench           (self-hosted engine)
    "_grade",  # grade                                  (your own data)
    "_collect",  # collect                              (your own data)
)

for _name in _COMMAND_MODULES:  # in this order, the order of `ponder --help`
    importlib.import_module(f"{__name__}.{_name}")


def main() -> None:
    sys.exit(run_main(app))

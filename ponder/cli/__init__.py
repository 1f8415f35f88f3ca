"""The ``ponder`` command. Each command parses, calls the library and renders; errors go to stderr.

Command groups live in their own modules, each exposing ``register(app, train_app)``.
"""

from __future__ import annotations

import importlib
import sys

import typer

from ._common import run_main, say

app = typer.Typer(
    name="ponder",
    help="Spend expensive LLM compute only where a query needs it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Train scorers and routers on outcome tables.", no_args_is_help=True)
app.add_typer(train_app, name="train")


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

for _name in _COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(app, train_app)


def main() -> None:
    sys.exit(run_main(app))

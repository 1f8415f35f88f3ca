"""Commands for this area are added by its issue; see ponder/cli/__init__.py."""

from __future__ import annotations

import typer


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add this module's commands to the ``ponder`` app (and its ``train`` group)."""

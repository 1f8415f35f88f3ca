"""``register_grader`` is the one list of graders: specs, their errors and ``ponder grade --help``."""

from __future__ import annotations

import pytest

from ponder import ConfigError
from ponder.grading import Grade, _spec, grader_specs, parse_grader, register_grader


class Longer:
    name = "longer"

    def __init__(self, n: int) -> None:
        self.n = n

    def grade(self, response: str, row: object) -> Grade:
        return Grade(float(len(response) > self.n))


def test_a_registered_grader_is_parsed_listed_and_checked(monkeypatch):
    monkeypatch.setattr(_spec, "GRADERS", dict(_spec.GRADERS))  # registrations undone after

    @register_grader("longer", "longer:N", about="more than N characters")
    def _longer(arg, options):
        return Longer(int(arg))

    @register_grader("yes")
    def _yes(arg, options):
        return Longer(-1)

    grader = parse_grader("longer:3")
    assert isinstance(grader, Longer) and grader.grade("four", {}).score == 1.0
    assert grader_specs()[-2:] == ("longer:N", "yes")
    assert _spec.grader_help().endswith("longer:N (more than N characters), and yes")
    with pytest.raises(ConfigError, match="takes no argument"):
        parse_grader("yes:1")
    with pytest.raises(ConfigError, match="longer:N, yes"):
        parse_grader("nosuch")


def test_the_cli_help_lists_every_registered_grader():
    from ponder.cli import _grade

    assert _spec.grader_help() in _grade._HELP
    assert all(spec in _grade._HELP for spec in grader_specs())

"""``routers.ROUTER_KINDS`` is the one list of router kinds: the CLI and ``ponder eval`` read it."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ponder.cli import app
from ponder.evaluation import registered_strategies
from ponder.routers import ROUTER_KINDS, UtilityRouter


class Stop(Exception):
    pass


def test_cli_kind_choices_are_the_router_kinds(fixture_path, tmp_path, monkeypatch):
    import ponder.routers._live as train

    monkeypatch.setitem(ROUTER_KINDS, "mine", UtilityRouter)  # a kind added in one place
    seen: list[str] = []

    def fake_train(table, kind, output, **_):
        seen.append(kind)
        raise Stop

    monkeypatch.setattr(train, "train_router", fake_train)
    for kind in ROUTER_KINDS:
        res = CliRunner().invoke(app, ["train", "router", str(fixture_path), "--kind", kind,
                                       "--output", str(tmp_path / "o")])
        assert isinstance(res.exception, Stop), res.output
    assert seen == list(ROUTER_KINDS)
    bad = CliRunner().invoke(app, ["train", "router", str(fixture_path), "--kind", "nosuch",
                                   "--output", str(tmp_path / "o")])
    assert bad.exit_code == 2 and not seen[len(ROUTER_KINDS):]
    assert all(repr(kind) in bad.output for kind in ROUTER_KINDS)


def test_every_router_kind_is_an_eval_strategy(table):
    routers = {name: make for name, make in registered_strategies().items() if name.startswith("router-")}
    kinds = {make(table).make().kind for make in routers.values()}
    assert kinds == set(ROUTER_KINDS)


@pytest.mark.parametrize("kind", list(ROUTER_KINDS))
def test_every_kind_loads_under_its_name(kind):
    assert ROUTER_KINDS[kind].kind == kind

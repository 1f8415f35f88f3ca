"""``ponder train router``: fit a query router on an outcome table and write a strategy file."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from ._common import fail, say, train_app


def _router_kind(value: str) -> str:
    """``--kind``: a kind of ``routers.ROUTER_KINDS``, the one list, read when the option is parsed
    (importing the routers at start-up would cost every command a second)."""
    from ..routers._io import ROUTER_KINDS

    if value not in ROUTER_KINDS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, ROUTER_KINDS))}.")
    return value


class Variant(str, Enum):
    deterministic = "deterministic"
    probabilistic = "probabilistic"
    transformed = "transformed"


def _model_map(value: str | None) -> dict[str, str] | None:
    if not value:
        return None
    text = value
    if not value.lstrip().startswith("{"):
        if not Path(value).exists():
            fail(f"--model-map: {value} is neither a JSON object nor an existing file")
        text = Path(value).read_text("utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--model-map: invalid JSON ({exc.msg} at line {exc.lineno})")
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        fail("--model-map must be a JSON object mapping model names to 'provider:model'")
    return dict(data)


@train_app.command("router")
def train_router_command(
    outcomes: str = typer.Argument(..., metavar="OUTCOMES",
                                   help="Outcome table (CSV/JSONL/Parquet) or bundled dataset name."),
    kind: str = typer.Option(..., "--kind", metavar="KIND", parser=_router_kind,
                             help="Router family: a kind of ponder.routers.ROUTER_KINDS "
                                  "(a wrong one lists them)."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for router/ and router.json."),
    model_map: str = typer.Option(None, "--model-map",
                                  help="JSON object (or file) mapping table model names to "
                                       "live 'provider:model' specs."),
    featurizer: str = typer.Option("tfidf", help="tfidf | tfidf-hashed | minilm | minilm-fast | tfidf+minilm"),
    variant: Variant = typer.Option(Variant.deterministic, help="Pairwise label variant."),
    weak: str = typer.Option(None, help="Pairwise weak model (default: cheapest)."),
    strong: str = typer.Option(None, help="Pairwise strong model (default: best train quality)."),
    strong_share: float = typer.Option(None, help="Calibrate: share of calls to the strong model."),
    budget: float = typer.Option(None, help="Calibrate: mean USD per query."),
    quality_floor: float = typer.Option(None, help="Calibrate: mean quality floor, (ε, δ)-guaranteed."),
    delta: float = typer.Option(0.1, help="Failure probability δ for --quality-floor."),
    calibration_fraction: float = typer.Option(0.25, help="Share of train queries held out to calibrate."),
    seed: int = typer.Option(0, help="Seed for the calibration hold-out."),
    cascade: Path = typer.Option(None, help="A cascade strategy JSON: also write route-cascade.json "
                                            "(the router picks the rung where it starts)."),
    knob: float = typer.Option(None, help="Pin the knob λ in the strategy file (e.g. the one "
                                          "`ponder eval` chose on train) instead of calibrating."),
) -> None:
    """Train a query router on the train rows of OUTCOMES and write a strategy file."""
    from ..evaluation import load_dataset
    from ..routers._live import train_router

    table = load_dataset(outcomes)
    res = train_router(table, kind, output, model_map=_model_map(model_map),
                       strong_share=strong_share, budget=budget, quality_floor=quality_floor,
                       delta=delta, calibration_fraction=calibration_fraction, seed=seed,
                       featurizer=featurizer, variant=variant.value, weak=weak, strong=strong,
                       cascade=cascade, knob=knob)
    r = res.router
    say(f"trained {r.kind} router on {res.n_train} queries; models: {', '.join(r.models_)}")
    cal = r.calibration_
    if cal is not None:
        msg = (f"calibrated on {res.n_calibration} held-out queries for {cal.target}={cal.value:g}: "
               f"knob={cal.knob:.6g}, quality {cal.reached_quality:.3f}, "
               f"${cal.reached_cost:.3g}/query, strong share {cal.reached_strong_share:.1%}")
        if cal.guaranteed is False:
            msg += " (no setting passed the (ε, δ) test: using the most expensive one)"
        say(msg)
    elif knob is not None:
        say(f"knob={knob:g} pinned in the strategy file")
    else:
        say(f"knob={r.knob_:g} (default; pass --strong-share/--budget/--quality-floor to "
            "calibrate)")
    say(f"wrote {res.router_dir} and {res.strategy_file}")
    if res.route_cascade_file is not None:
        say(f"wrote {res.route_cascade_file}")
    say(f"use it: ponder ask --strategy {res.strategy_file} \"your question\"")

"""``ponder train scorer`` and ``ponder optimize``: parse, call ponder.cascade, render."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from ._common import app, fail, model_map_option, say, train_app


def _train_rows(outcomes: Path, test_fraction: float | None, seed: int):  # type: ignore[no-untyped-def]
    """The table's train split (its ``split`` column, or a seeded split), else every row."""
    from ..evaluation import load_dataset

    table = load_dataset(outcomes if Path(outcomes).exists() else str(outcomes))
    if "split" in table.df.columns or test_fraction:
        train, _ = table.split(test_fraction=test_fraction or 0.5, seed=seed)
        return train
    return table


@train_app.command("scorer")
def train_scorer(
    outcomes: Path = typer.Argument(..., help="Outcome table (.csv/.jsonl/.parquet) with responses, a public format (RouterBench CSV, ...) or a bundled dataset name."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write the scorer to."),
    learner: str = typer.Option("logistic", help="Combiner: logistic or hgb."),
    calibration: str = typer.Option("sigmoid", help="sigmoid (Platt), isotonic or none."),
    text: str = typer.Option("tfidf", help="Query features: tfidf, embed (MiniLM, extra 'embed') or none."),
    test_fraction: float | None = typer.Option(None, help="Hold out this share of queries (when the table has no split column)."),
    seed: int = typer.Option(0, help="Seed for the split and the training rows."),
) -> None:
    """Train an answer scorer (P(acceptable | query, response, model)) on the train rows."""
    from ..cascade import fit_scorer

    if learner not in ("logistic", "hgb"):
        fail(f"--learner must be logistic or hgb, got {learner!r}")
    if calibration not in ("sigmoid", "isotonic", "none"):
        fail(f"--calibration must be sigmoid, isotonic or none, got {calibration!r}")
    train = _train_rows(outcomes, test_fraction, seed)
    calibration_ = None if calibration == "none" else calibration
    scorer = fit_scorer(train, {"learner": learner, "calibration": calibration_, "text": text}, seed=seed)
    scorer.save(output)
    say(f"scorer for {len(scorer.models_)} model(s), trained on "
        f"{len(train.query_ids)} queries → {output}")


@app.command("optimize")
def optimize(
    outcomes: Path = typer.Argument(..., help="Outcome table with responses, costs and scores (or a public format / bundled name)."),
    output: Path = typer.Option(..., "--output", "-o", help="Strategy JSON to write."),
    budget: float | None = typer.Option(None, help="Max mean cost per query (USD)."),
    target_quality: float | None = typer.Option(None, help="Min mean quality (the dual)."),
    max_length: int = typer.Option(3, help="Longest chain (1-3)."),
    epsilon: float | None = typer.Option(None, help="Certify: quality drop vs the last rung ≤ ε ..."),
    delta: float = typer.Option(0.1, help="... with probability ≥ 1-δ."),
    calibration_fraction: float = typer.Option(0.3, help="Share of train queries held out to certify (with --epsilon)."),
    cap: float | None = typer.Option(None, help="Per-query cost cap (USD): stop climbing before a rung whose expected cost would pass it."),
    scorer: Path | None = typer.Option(None, help="Ship this trained scorer instead of refitting one."),
    learner: str = typer.Option("logistic", help="Scorer combiner: logistic or hgb."),
    folds: int = typer.Option(5, help="Cross-fitting folds for out-of-fold scores."),
    models: str | None = typer.Option(None, help="Comma-separated models to consider (default: all)."),
    model_map: list[str] = typer.Option([], "--model-map", help="NAME=provider:model for live use (repeatable)."),
    test_fraction: float | None = typer.Option(None, help="Hold out this share of queries (when the table has no split column)."),
    set_pool: int = typer.Option(0, help="Also search agreement rungs: sets of 2-3 among the K cheapest models, answered when they agree (0: off; the fit takes longer)."),
    seed: int = typer.Option(0),
) -> None:
    """Choose a cascade (chain of ≤ L models + thresholds) on the train rows and save it."""
    from ..cascade import CascadeOptimizer, certify
    from ..scorers import AnswerScorer

    if budget is not None and target_quality is not None:
        fail("give --budget or --target-quality, not both")
    if budget is None and target_quality is None and epsilon is None:
        fail("give --budget USD, --target-quality Q, or --epsilon (certified drop)")
    if epsilon is not None and not 0 < delta < 1:
        fail("--delta must be in (0, 1)")
    mm = model_map_option(model_map)
    train = _train_rows(outcomes, test_fraction, seed)
    opt = CascadeOptimizer(
        max_length=max_length, folds=folds, scorer_params={"learner": learner},
        calibration_fraction=calibration_fraction if epsilon is not None else 0.0,
        models=[m.strip() for m in models.split(",")] if models else None, seed=seed,
        set_pool=set_pool,
    ).fit(train)
    if scorer is not None:
        opt.scorer_ = AnswerScorer.load(scorer)
    if budget is None and target_quality is None:
        import numpy as np

        target_quality = float(np.nanmax(np.nanmean(opt.train_.scores, axis=0))) - float(epsilon or 0)
    cascade = opt.cascade(budget=budget, target=target_quality, name=output.stem, model_map=mm)
    if epsilon is not None:
        assert opt.calibration_ is not None
        cascade, cert = certify(cascade, opt.calibration_, epsilon=epsilon, delta=delta)
    if cap is not None:
        cascade.budget_usd = cap
    if scorer is not None:  # each rung keeps its samples, logprobs and set; only the path changes
        shipped = str(scorer.resolve())
        cascade.rungs = [replace(r, scorer_path=shipped if r.scorer is not None else None)
                         for r in cascade.rungs]
    path = cascade.save(output, model_map=mm)
    exp = cascade.info["expected"]
    say(f"cascade: {cascade!r}")
    say(f"expected on train (out-of-fold): quality {exp['quality']:.4f}, "
        f"cost ${exp['cost_usd']:.4g}/query")
    g = cascade.info.get("guarantee")
    if g and g["certified"]:
        say(f"certified: drop vs {g['reference_model']} ≤ {g['epsilon']} with "
            f"probability ≥ {1 - g['delta']:.2f} (n={g['n_calibration']}, "
            f"threshold path scale {g['path_scale']:.2f})")
    elif g:
        say("not certifiable at this ε/δ: every query climbs to the last rung")
    say(f"wrote {path}")

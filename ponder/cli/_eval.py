"""``ponder eval`` and ``ponder datasets``: offline cost-quality evaluation on outcome tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from ._common import app, model_map_option, say, say_err, stage_progress, stdout
from ._tables import NAME_MIN, Rows, fitted_table, name_widths

datasets_app = typer.Typer(help="Bundled outcome tables (Apache-2.0 public benchmark data).",
                           no_args_is_help=True)


@app.command("eval")
def eval_command(
    data: str = typer.Argument(None, metavar="[OUTCOMES_FILE | BUNDLED_NAME]",
                               help="An outcome table (CSV/JSONL/Parquet), a public format ponder "
                                    "can read, or a bundled dataset name. Default: llmdrift-prime."),
    split_column: str = typer.Option("split", help="Column holding train/test labels, if any."),
    test_fraction: float = typer.Option(0.5, help="Share of queries held out when there is no "
                                                  "split column."),
    seed: int = typer.Option(0, help="Seed for the split and the bootstrap."),
    strategy: list[str] = typer.Option(None, "--strategy", "-s",
                                       help="Only these registered strategies (repeatable)."),
    bootstrap: int = typer.Option(200, help="Bootstrap resamples for 95% intervals (0: none)."),
    report: Path = typer.Option(Path("report.html"), help="Write the HTML report here."),
    markdown: Path = typer.Option(None, help="Also write a Markdown report."),
    json_out: Path = typer.Option(None, "--json", help="Also write the JSON result."),
    drop_ungraded: bool = typer.Option(False, "--drop-ungraded",
                                       help="Leave out rows whose score is empty (answers a grader "
                                            "could not grade) instead of refusing the table."),
    epsilon: float = typer.Option(0.01, "--epsilon", min=0.0, max=0.99,
                                  help="Quality (score units) a best_quality pick may lose against "
                                       "the best single model: 0.01 = 1 point."),
    delta: float = typer.Option(0.1, "--delta", min=0.001, max=0.5,
                                help="Chance that a certified pick's guarantee fails (confidence "
                                     "1 − delta)."),
    folds: int = typer.Option(None, "--folds", min=2,
                              help="K of the K-fold calibration on the train rows (default: 5 "
                                   "below 500 train queries, else 3)."),
    ship: Path = typer.Option(None, "--ship", metavar="DIR",
                              help="Write each ship pick's strategy files (exactly what was "
                                   "measured) into DIR, and DIR/ponder.toml with their "
                                   "[strategies] entries (overwritten)."),
    max_fit_queries: int = typer.Option(10_000, "--max-fit-queries", min=0,  # _deploy.MAX_FIT_QUERIES
                                        help="Fit strategies on a seeded sample of at most this "
                                             "many train queries (0: all); calibration and test "
                                             "use every query."),
    jobs: int = typer.Option(None, "--jobs", min=1,
                             help="Threads that fit a strategy's full fit and fold copies at "
                                  "once (default: the CPUs, at most 4; the same numbers)."),
    model_map: list[str] = typer.Option([], "--model-map", metavar="NAME=PROVIDER:MODEL",
                                        help="Live model for a table's model name in the files "
                                             "--ship writes (repeatable)."),
) -> None:
    """Replay every strategy and baseline on held-out queries and report cost vs quality."""
    from ..evaluation import DEFAULT_DATASET, evaluate, load_dataset

    source = data or DEFAULT_DATASET
    mm = model_map_option(model_map)
    with stage_progress() as bar:
        tasks: dict[str, Any] = {}

        def tick(stage: str, i: int, n: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(n, 1))
            bar.update(tasks[stage], completed=i, total=max(n, 1))

        tick("loading", 0, 1)
        table, dropped = load_dataset(source, graded=not drop_ungraded).graded_only()
        tick("loading", 1, 1)
        if dropped:
            say_err(f"left out {dropped} ungraded row(s) (empty score) of {len(table) + dropped}")
        result = evaluate(table, strategies=strategy or None, test_fraction=test_fraction,
                          seed=seed, split_column=split_column, n_bootstrap=bootstrap,
                          progress=tick, source=source, epsilon=epsilon, delta=delta,
                          folds=folds, ship_dir=ship, model_map=mm,
                          max_fit_queries=max_fit_queries or None, jobs=jobs,
                          command=_rerun(source, split_column, test_fraction, seed, strategy,
                                         epsilon, delta, folds, drop_ungraded, max_fit_queries))
    _render(result.to_json())
    written = []
    for path, text in ((report, result.to_html), (markdown, result.to_markdown),
                       (json_out, lambda: json.dumps(result.to_json(), indent=1) + "\n")):
        if path:
            path.write_text(text(), encoding="utf-8")
            written.append(str(path))
    if written:
        say(f"wrote {', '.join(written)}")


def _rerun(source: str, split_column: str, test_fraction: float, seed: int,
           strategies: list[str] | None, epsilon: float, delta: float, folds: int | None,
           drop_ungraded: bool, max_fit_queries: int) -> str:
    """The ``ponder eval`` command line that reproduces this run, less options at their defaults."""
    import shlex

    args = ["ponder", "eval", source]
    for flag, value, default in (
            ("--split-column", split_column, "split"), ("--test-fraction", test_fraction, 0.5),
            ("--seed", seed, 0), *(("-s", name, None) for name in strategies or []),
            ("--epsilon", epsilon, 0.01), ("--delta", delta, 0.1), ("--folds", folds or None, None),
            ("--drop-ungraded", drop_ungraded, False),
            ("--max-fit-queries", max_fit_queries, 10_000)):
        if value is True:
            args.append(flag)
        elif value != default:
            args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return " ".join(shlex.quote(a) for a in args)


def _render(d: dict[str, Any]) -> None:
    from ..evaluation._report_text import fmt_pct, fmt_q, fmt_ratio

    say(Text.assemble((str(d["dataset"]), "bold"),
                      f": {d['n_models']} models, {d['n_train_queries']} train / "
                      f"{d['n_test_queries']} test queries"))
    miss = d["missing"]
    if miss["n_incomplete_test_queries"]:
        say(f"{miss['n_incomplete_test_queries']} test queries lack some models "
            f"({miss['n_missing_test_cells']} missing rows)")
    rows: Rows = []
    for m in sorted(d["models"], key=lambda m: m["cost_usd"]):
        star = " *" if m["model"] == d["best_model"]["model"] else ""
        rows.append(([m["model"] + star, f"{m['quality']:.4f}", f"{m['cost_usd']:.6g}",
                      str(m["n_queries"])], None))
    rows.append((["oracle", f"{d['oracle']['quality']:.4f}", f"{d['oracle']['cost_usd']:.6g}",
                  str(d["n_test_queries"])], None))
    stdout.print(fitted_table("single models and oracle (test queries, * = best)",
                              ["model", "quality", "cost/query", "queries"], rows))
    _render_deployed(d)
    _render_ship(d)
    head = ["strategy", "ratio", "q@best$", "AUC", "oracle"]
    if d.get("two_model"):
        head += ["APGR", "CPT50/80/95"]
    rows = []
    for st in d["strategies"]:
        auc = "n/a" if st["name"].startswith("model:") else fmt_q(st["auc"])  # one point: no curve
        row = [st["name"], fmt_ratio(st["cost_ratio_at_best_quality"]),
               fmt_q(st["quality_at_best_cost"]), auc, fmt_pct(st["oracle_share"])]
        if d.get("two_model"):
            cpt = st.get("cpt") or {}
            row += [fmt_q(st.get("apgr")), "/".join(
                "–" if cpt.get(k) is None else f"{cpt[k]:.0f}%" for k in ("50", "80", "95"))]
        rows.append((row, "dim" if st["kind"] == "baseline" else None))
    stdout.print(fitted_table(
        "strategies swept on test: what the knob can reach on test (not a deployable number; dim: "
        "baselines). ratio = cost to reach the best model's quality / its cost", head, rows))
    for sk in d.get("skipped") or []:
        say_err(f"skipped {sk['name']}: {sk['reason']}")


def _render_deployed(d: dict[str, Any]) -> None:
    """Every strategy's point per target: chosen on train, figures on test."""
    dep = d.get("deployment") or {}
    targets = dep.get("targets") or []
    chosen = [st for st in d["strategies"] if st.get("deployed")]
    if not chosen:
        return

    def layout(sep: str) -> Rows:
        rows: Rows = []
        for st in chosen:
            by = {x["target"]: x for x in st["deployed"]}
            cells = []
            for target in targets:
                x = by.get(target)
                ratio = x["test"].get("cost_ratio") if x and x.get("met") else None
                if x is None or ratio is None:
                    cells.append("–")
                    continue
                mark = "✓" if x.get("certified") else ""
                flag = ("!" if x.get("saving_in_doubt") and target == "best_quality" else "") + \
                       ("⚠" if x.get("over_budget") else "")
                cells.append(f"{mark}{100 * ratio:.0f}%{sep}{x['test']['quality']:.3f}{flag}")
            rows.append(([st["name"], *cells], "dim" if st["kind"] == "baseline" else None))
        return rows

    head = ["strategy", *("best q" if t == "best_quality" else f"≤{100 * float(t.split(':')[1]):g}%"
                          for t in targets)]
    rows = layout("/")
    if not name_widths(head, rows, {0: NAME_MIN}, stdout.width, True)[1]:
        # a narrow terminal: each cell on two lines (cost over quality), so the names keep room
        rows = layout("/\n")
    stdout.print(fitted_table("every strategy's point per target, chosen on train rows, measured "
                              "on test. cell = cost as % of the best model's / quality (✓ = "
                              "certified, ! = CI includes no saving, ⚠ = over budget on test)",
                              head, rows))


def _render_ship(d: dict[str, Any]) -> None:
    """Per target, what ships (the certified pick, or the best model), and its files."""
    from ..evaluation import _report_text as rt
    from ..evaluation._deploy import ship_folder

    groups = rt.ship_groups(d)
    if not groups:
        return
    needed, commands = rt.needed_notes(d)
    say(f"what to ship, chosen on train rows only ({rt._confidence(d)} guarantees; test "
        "figures beside):")
    for group in groups:
        e = group[0]
        t = e["test"]
        targets = " / ".join(rt.target_label(d, x["target"]) for x in group)
        if e.get("fallback"):
            say(f"  {targets}: keep the best single model, "
                f"{e['strategy'].removeprefix('model:')}: {rt.guarantee_text(d, e)}")
        else:
            say(f"  {targets}: {e['strategy']} · {rt.guarantee_text(d, e)} · test quality "
                f"{rt.fmt_q(t['quality'])} at {rt.fmt_pct(t.get('cost_ratio'))} of the best "
                "model's cost"
                + "".join(f" ⚠ over budget on test at {x['target']} ({x['test_budget_ratio']:.2f}×)"
                          for x in group if x.get("over_budget"))
                + (" (! no saving within the 95% interval)" if e.get("saving_in_doubt") else ""))
        for x in group:
            if x["target"] in needed:
                say(f"    {needed[x['target']][1]}")
        files = e.get("files") or {}
        if files.get("strategy_file"):
            say(f"    files: {files['strategy_file']}")
        elif files.get("error"):
            say(f"    files: not written ({files['error']})")
    if commands:
        say(f"  {rt.NEEDED_HOW}")
        for c in commands:
            say(f"    $ {c}")
    if d.get("ship_dir"):
        say(f"  wrote the picks' strategy files and {d['ship_dir']}/ponder.toml "
            "(their [strategies] entries)")
    else:
        say(f"  to write the picks' files (exactly what was measured, e.g. "
            f"ship/{ship_folder(groups[0][0])}/): {rt.ship_command(d)}")


app.add_typer(datasets_app, name="datasets")


@datasets_app.command("list")
def datasets_list() -> None:
    """Show the bundled datasets."""
    from ..evaluation import list_datasets

    t = Table()
    for c in ("name", "models", "queries", "license", "what"):
        t.add_column(c, overflow="fold")
    for d in list_datasets():
        t.add_row(d["name"], str(len(d["models"])), str(d["n_queries"]), d["license"],
                  d["description"])
    stdout.print(t)


@datasets_app.command("export")
def datasets_export(
    name: str = typer.Argument(..., help="A bundled dataset name (or any readable file)."),
    out: Path = typer.Argument(..., help="Output file: .csv, .jsonl or .parquet (optionally .gz)."),
) -> None:
    """Write a dataset as an outcome table (ponder's interchange format)."""
    from ..evaluation import export_dataset

    path = export_dataset(name, out)
    say(f"wrote {path}")

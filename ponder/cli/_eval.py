"""``ponder eval`` and ``ponder datasets``: offline cost-quality evaluation on outcome tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from ._common import stderr, stdout
from ._tables import NAME_MIN, Rows, fitted_table, name_widths

datasets_app = typer.Typer(help="Bundled outcome tables (Apache-2.0 public benchmark data).",
                           no_args_is_help=True)


def _progress() -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description:<11}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=stderr, transient=True)


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
) -> None:
    """Replay every strategy and baseline on held-out queries and report cost vs quality."""
    from ..evaluation import DEFAULT_DATASET, evaluate, load_dataset

    source = data or DEFAULT_DATASET
    with _progress() as bar:
        tasks: dict[str, Any] = {}

        def tick(stage: str, i: int, n: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(n, 1))
            bar.update(tasks[stage], completed=i, total=max(n, 1))

        tick("loading", 0, 1)
        table, dropped = load_dataset(source, graded=not drop_ungraded).graded_only()
        tick("loading", 1, 1)
        if dropped:
            stderr.print(f"left out {dropped} ungraded row(s) (empty score) of "
                         f"{len(table) + dropped}", highlight=False)
        result = evaluate(table, strategies=strategy or None, test_fraction=test_fraction,
                          seed=seed, split_column=split_column, n_bootstrap=bootstrap,
                          progress=tick, source=source)
    _render(result.to_json())
    written = []
    if report:
        report.write_text(result.to_html(), encoding="utf-8")
        written.append(str(report))
    if markdown:
        markdown.write_text(result.to_markdown(), encoding="utf-8")
        written.append(str(markdown))
    if json_out:
        json_out.write_text(json.dumps(result.to_json(), indent=1) + "\n", encoding="utf-8")
        written.append(str(json_out))
    if written:
        stdout.print(f"wrote {', '.join(written)}", highlight=False)


def _render(d: dict[str, Any]) -> None:
    from ..evaluation._report import fmt_pct, fmt_q, fmt_ratio

    stdout.print(Text.assemble((str(d["dataset"]), "bold"),
                               f": {d['n_models']} models, {d['n_train_queries']} train / "
                               f"{d['n_test_queries']} test queries"), highlight=False)
    miss = d["missing"]
    if miss["n_incomplete_test_queries"]:
        stdout.print(f"{miss['n_incomplete_test_queries']} test queries lack some models "
                     f"({miss['n_missing_test_cells']} missing rows)", highlight=False)
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
        row = [st["name"], fmt_ratio(st["cost_ratio_at_best_quality"]),
               fmt_q(st["quality_at_best_cost"]), fmt_q(st["auc"]), fmt_pct(st["oracle_share"])]
        if d.get("two_model"):
            cpt = st.get("cpt") or {}
            row += [fmt_q(st.get("apgr")), "/".join(
                "–" if cpt.get(k) is None else f"{cpt[k]:.0f}%" for k in ("50", "80", "95"))]
        rows.append((row, "dim" if st["kind"] == "baseline" else None))
    stdout.print(fitted_table(
        "strategies swept on test: what the knob can reach on test (not a deployable number; dim: "
        "baselines). ratio = cost to reach the best model's quality / its cost", head, rows))
    for sk in d.get("skipped") or []:
        stderr.print(f"skipped {sk['name']}: {sk['reason']}", markup=False, highlight=False)


def _render_deployed(d: dict[str, Any]) -> None:
    """Deployed points: settings chosen on train, figures on test (cost % of best · quality)."""
    dep = d.get("deployment") or {}
    targets = dep.get("targets") or []
    chosen = [st for st in d["strategies"] if st.get("deployed")]
    if not chosen:
        return

    def layout(sep: str, head: list[str]) -> tuple[list[str], Rows]:
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
                flag = "!" if x.get("saving_in_doubt") and target == "best_quality" else ""
                cells.append(f"{100 * ratio:.0f}%{sep}{x['test']['quality']:.3f}{flag}")
            rows.append(([st["name"], *cells], "dim" if st["kind"] == "baseline" else None))
        return ["strategy", *head], rows

    short = [target.replace("budget:", "≤") for target in targets]
    head, rows = layout("/", short)
    if not name_widths(head, rows, {0: NAME_MIN}, stdout.width, True)[1]:
        # a narrow terminal: each cell on two lines (cost over quality), so the names keep room
        head, rows = layout("/\n", [x.replace("_", "_\n") for x in short])
    stdout.print(fitted_table("deployed: knob chosen on train, measured on test. cell = cost as % "
                              "of the best model's / quality (! = CI includes no saving)",
                              head, rows))


def _render_ship(d: dict[str, Any]) -> None:
    """Per target, the point to ship (chosen on train) and the command that deploys it."""
    from ..evaluation._report import _ship_choice, fmt_pct, fmt_q

    lines = []
    for target in (d.get("deployment") or {}).get("targets") or []:
        got = _ship_choice(d, target)
        if got is None:
            continue
        s, x = got
        t = x["test"]
        flag = " (! no saving within the 95% interval)" if x.get("saving_in_doubt") else ""
        lines.append(f"  {target}: {s['name']} · test quality {fmt_q(t['quality'])} at "
                     f"{fmt_pct(t.get('cost_ratio'))} of the best model's cost{flag}")
        recipe = x.get("deploy") or {}
        lines.append(f"    $ {recipe['command']}" if recipe.get("command")
                     else f"    {recipe.get('note', '')}")
    if lines:
        stdout.print("what to ship, chosen on train (serve config and notes: the HTML report):",
                     highlight=False)
        for line in lines:
            stdout.print(line, markup=False, highlight=False, soft_wrap=True)


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
    stdout.print(f"wrote {path}", highlight=False)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add ``eval`` and the ``datasets`` group to the ``ponder`` app."""
    app.command("eval")(eval_command)
    app.add_typer(datasets_app, name="datasets")

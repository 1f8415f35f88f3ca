"""The report's words, numbers and tables (rows of cells), shared by the Markdown and HTML reports
and the terminal (``ponder eval``).

A cell is text, or a dict: ``text``, ``sub`` (a line beneath), ``flag`` (a ⚠ mark), ``code``
(lines shown verbatim) and ``cls`` (the HTML cell's class).
"""

from __future__ import annotations

import shlex
from collections import Counter
from typing import Any

from ._deploy import DELTA, EPSILON, NEEDED_CAP, budget_of, ship_folder, target_text

METRIC_HELP = {
    "cost_ratio_at_best_quality": "cost of the cheapest operating point that reaches the best "
    "single model's quality, divided by that model's cost (FrugalGPT's cost saving; lower is "
    "better, 'never' if it never gets there)",
    "quality_at_best_cost": "best quality at no more than the best model's cost",
    "auc": "area under the non-decreasing convex hull of the curve over the single models' cost "
    "range, divided by that range (RouterBench's AIQ)",
    "oracle_share": "quality at the best model's cost divided by the oracle's quality",
    "apgr": "RouteLLM's average performance gap recovered over the share of strong-model calls",
    "cpt": "RouteLLM's call-performance threshold: % of calls to the strong model needed to "
    "recover 50/80/95% of the weak-to-strong quality gap",
}

DEPLOYED_HELP = (
    "Each strategy's point per target, chosen on train rows only (K-fold calibration: each "
    "fold's copy fitted on the other folds, every train row a calibration row once), then "
    "replayed on test by the strategy fitted on every train row. ✓: certified, its upper "
    "confidence bound meets the target (the cheapest such setting for the best model's quality, "
    "the best one within a budget); without ✓, the setting its point estimates pick, with no "
    "guarantee.")
DEPLOYED_TITLE = "Every strategy's point per target (chosen on train, measured on test)"
TEST_SWEEP_LABEL = "what the knob can reach on test (not a deployable number)"
NO_SAVING = "⚠ no saving within the 95% interval"
NO_SAVING_HELP = ("⚠: the bootstrap 95% interval of the cost ratio reaches 100% of the best "
                  "model's cost, so the saving may be none at all.")
AUC_MARK = " †"
TASK_HELP = ("Quality per task on test queries (queries per task in brackets). Strategies at their "
             "deployed point for the best model's quality (else the full budget), with their cost "
             "per query and that target under the quality.")
SHIP_HELP = ("What to ship for each target, chosen on train rows only: the cheapest candidate (a "
             "strategy's setting or a single model) whose upper confidence bound meets the target "
             "(for the best model's quality: it loses at most ε; for a budget: it spends at most "
             "that share), or the best certified one within a budget. The bounds come from K-fold "
             "calibration on the train rows and hold for whichever of the candidates tried is "
             "picked (a union bound). When nothing is certified, the best single model ships. "
             "Test figures are beside, and never change a pick. Targets that ship the same "
             "setting share a row. Model names are the table's: add --model-map to call live "
             "providers.")
NEEDED_HOW = ("To get more labelled queries: collect every model's answers to new prompts, grade "
              "them, and add the graded rows to your table as train rows (a 'split' column set "
              "to train; give the table one if it has none, so the test rows stay as they are).")


def auc_note(data: dict[str, Any]) -> str:
    """Why single models show no AUC (AIQ): the dearest one's would read 0, a price, not a verdict."""
    models = _models_by_cost(data)
    dear = models[-1]["model"] if models else "?"
    cr = data.get("cost_range") or {}
    best = data["best_model"]["model"]
    return (f"{AUC_MARK.strip()} n/a for single models: a single model is one point, not a "
            f"curve. AUC (AIQ) averages a curve's hull over the single models' cost range "
            f"[{fmt_usd(cr.get('min'))}, {fmt_usd(cr.get('max'))}] and counts 0 below the "
            f"curve's cheapest point, so a model alone would score its quality × the share of "
            f"that range above its cost: the dearest model ({dear}"
            + (", here also the best" if dear == best else f"; the best is {best}")
            + ") would score 0 by construction, which says where its price lies, not how good it "
            "is. Compare single models by their quality and cost (the JSON keeps the number); "
            "AIQ is for strategies that sweep a knob.")


def _models_by_cost(data: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(data["models"], key=lambda m: m["cost_usd"])


def _strategies(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The strategies that are not baselines (single models, random mix, oracle)."""
    return [s for s in data["strategies"] if s["kind"] != "baseline"]


# ---- number formatting -------------------------------------------------------------------------
def fmt_q(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def fmt_usd(v: float | None) -> str:
    if v is None:
        return "–"
    if v == 0:
        return "$0"
    return f"${v:.3g}" if abs(v) >= 1e-4 else f"${v:.2e}"


def fmt_ratio(v: float | None) -> str:
    return "never" if v is None else f"{v:.3f}"


def fmt_pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _sp(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _ci_of(x: dict[str, Any], key: str = "quality", f: Any = fmt_q) -> str:
    """The bootstrap 95% interval of ``x[key]`` (kept in ``x["ci95"]``) as text."""
    ci = (x.get("ci95") or {}).get(key)
    if not ci or ci[0] is None:  # every resample "never": no interval to show
        return ""
    return f"[{f(ci[0])}, {f(ci[1]) if ci[1] is not None else 'never'}]"


def _with_ci(x: dict[str, Any], key: str = "quality", f: Any = fmt_q) -> str:
    """``x[key]`` and its interval: "0.812 [0.790, 0.830]"."""
    return _sp(f(x.get(key)), _ci_of(x, key, f))


# ---- targets and ship picks in words -----------------------------------------------------------
def _deployment(data: dict[str, Any]) -> dict[str, Any]:
    return data.get("deployment") or {}


def _epsilon(data: dict[str, Any]) -> float:
    return float(_deployment(data).get("epsilon") or EPSILON)


def _confidence(data: dict[str, Any]) -> str:
    return f"{100 * (1 - float(_deployment(data).get('delta') or DELTA)):g}%"


def target_label(data: dict[str, Any], target: str) -> str:
    """A target in words ("the best model's quality (within 1 pt)"), never its identifier."""
    return target_text(target, _epsilon(data))


def bound_text(target: str, bound: float | None) -> str:
    if bound is None:
        return "–"
    if budget_of(target) is None:
        return f"quality ≥ the best model's {-100 * bound:+.1f} pt"
    return f"spend ≤ {bound:.2f}× the best model's"


def _flags(d: dict[str, Any], *, fallback: bool = False) -> list[str]:
    if fallback:  # it is the best model: saving nothing is no news
        return []
    out = []
    if d.get("saving_in_doubt"):
        out.append(NO_SAVING)
    if d.get("over_budget"):
        out.append(f"⚠ over budget on test ({d['test_budget_ratio']:.2f}×)")
    return out


def ship_groups(data: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The ship picks, targets that ship the very same setting merged (in target order)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in data.get("ship") or []:
        groups.setdefault(e.get("same_as") or e["target"], []).append(e)
    return list(groups.values())


def guarantee_text(data: dict[str, Any], e: dict[str, Any]) -> str:
    n = _deployment(data).get("n_calibration_queries")
    target = e["target"]
    if e.get("fallback"):
        if budget_of(target) is None:
            return f"nothing cheaper is certified on {n} labelled train queries"
        return (f"nothing is certified within this budget on {n} labelled train queries (the "
                "best model spends 1×)")
    return f"✓ certified ({_confidence(data)}): {bound_text(target, e.get('bound'))}"


def ship_command(data: dict[str, Any], folder: str = "ship") -> str:
    base = data.get("command") or f"ponder eval {shlex.quote(str(data.get('source') or ''))}"
    return f"{base} --ship {folder}"


def files_note(data: dict[str, Any]) -> tuple[str, str | None]:
    if data.get("ship_dir"):
        return (f"Each pick's strategy files, exactly what was measured, are in its folder; "
                f"{data['ship_dir']}/ponder.toml holds their [strategies] entries (ponder serve "
                f"--config {data['ship_dir']}/ponder.toml, or ponder run --strategy "
                "FOLDER/strategy.json).", None)
    return ("This command writes each pick's strategy files, exactly what was measured, into its "
            "folder, and ship/ponder.toml with their [strategies] entries:", ship_command(data))


def _pt(v: float) -> str:
    """A quality difference in points, signed, never "-0.0"."""
    return f"{100 * v + 0.0:+.1f} pt".replace("-0.0 ", "+0.0 ")


def needed_notes(data: dict[str, Any]) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """Per target nothing certifies: a headline and how many labelled queries would certify the
    best candidate; and (once) the commands that collect and grade them."""
    out = {}
    models = [m["model"] for m in data.get("models") or []]
    n = _deployment(data).get("n_calibration_queries")
    reachable = False
    for e in data.get("ship") or []:
        if not e.get("fallback"):
            continue
        head = (f"Not enough data for {target_label(data, e['target'])}: no candidate is "
                f"certified at {_confidence(data)} confidence on {n} labelled train queries, so "
                f"ship the best single model, {e['strategy'].removeprefix('model:')}.")
        parts = []
        for x in e.get("needed") or []:
            cal = x["calibration"]
            what = (f"{x['strategy']} ({fmt_pct(cal['cost_ratio'])} of its cost, quality "
                    f"{_pt(cal['quality_vs_best'])} on the calibration rows)")
            who = "The best candidate" if x["why"] == "best" else "The closest to certification"
            if x["n_needed"] is not None:
                reachable = True
                parts.append(f"{who}, {what}, would be certified with about "
                             f"{x['n_needed']:,} labelled queries like these: {x['n_more']:,} "
                             "more.")
            elif x.get("at_limit"):
                parts.append(f"{who}, {what}, sits at the target itself, so no amount of data "
                             "would certify it.")
            else:
                parts.append(f"{who}, {what}, would need more than {NEEDED_CAP:,} labelled "
                             "queries like these.")
        if not e.get("needed"):
            parts.append("No candidate reaches the target even by its point estimate, so more "
                         "data would not certify one.")
        out[e["target"]] = (head, " ".join(parts))
    return out, [
        "ponder collect more-prompts.jsonl "
        + " ".join(f"--model {shlex.quote('PROVIDER:' + m)}" for m in models)
        + " --output more.parquet",
        "ponder grade more.parquet --grader SPEC --output more-graded.parquet"] if reachable else []


def ship_sentence(data: dict[str, Any], target: str) -> str | None:
    e = next((x for x in data.get("ship") or [] if x["target"] == target), None)
    if e is None:
        return None
    if e.get("fallback"):
        n = _deployment(data).get("n_calibration_queries")
        return (f"For {target_label(data, target)}, keep the best single model, "
                f"{e['strategy'].removeprefix('model:')}: nothing else is certified on {n} "
                "labelled train queries.")
    line = (f"For {target_label(data, target)}, ship {e['strategy']}: {guarantee_text(data, e)}; "
            f"on test {fmt_pct(e['test'].get('cost_ratio'))} of the best model's cost, quality "
            f"{_with_ci(e['test'])}")
    if e.get("over_budget"):
        line += f", spending {e['test_budget_ratio']:.2f}× the budget (⚠ over budget on test)"
    elif e.get("saving_in_doubt"):
        line += " (⚠ the interval includes no saving)"
    return line + "."


def _summary_lines(data: dict[str, Any]) -> list[str]:
    b, o = data["best_model"], data["oracle"]
    lines = [
        f"Best single model: {b['model']}, quality {_with_ci(b)} at {fmt_usd(b['cost_usd'])} per query.",
        f"Oracle (upper bound): quality {fmt_q(o['quality'])} at {fmt_usd(o['cost_usd'])} per query "
        f"({fmt_ratio(o['cost_usd'] / b['cost_usd'] if b['cost_usd'] else None)} of the best "
        "model's cost).",
    ]
    real = _strategies(data)
    reach = [s for s in real if s["cost_ratio_at_best_quality"] is not None]
    lines += [x for x in (ship_sentence(data, t) for t in ("best_quality", "budget:0.2")) if x]
    if reach:
        s = min(reach, key=lambda s: s["cost_ratio_at_best_quality"])
        ci = _ci_of(s, "cost_ratio_at_best_quality", fmt_ratio)
        lines.append(f"For comparison, {TEST_SWEEP_LABEL}: {s['name']} matches it at "
                     f"{fmt_ratio(s['cost_ratio_at_best_quality'])} of its cost on its test-swept curve"
                     f"{' (95% CI ' + ci + ')' if ci else ''}.")
    elif real:
        s = max(real, key=lambda s: s["quality_at_best_cost"] or 0)
        lines.append(f"No strategy reaches the best model's quality anywhere on its test-swept "
                     f"curve; the closest is {s['name']} at {fmt_q(s['quality_at_best_cost'])}.")
    else:
        lines.append("No routing strategies are registered: install or import ponder.routers / "
                     "ponder.cascade to compare them against these baselines.")
    miss = data["missing"]
    if miss["n_incomplete_test_queries"]:
        lines.append(f"{miss['n_incomplete_test_queries']} test queries lack some models "
                     f"({miss['n_missing_test_cells']} missing query×model rows); single models "
                     "are measured on the queries they have, strategies use what each query has.")
    return lines


def _split_text(data: dict[str, Any]) -> str:
    sp = data["split"]
    if sp["method"] == "column":
        how = f"the table's '{sp['column']}' column"
    else:
        how = f"a random {sp['test_fraction']:g} of queries held out (seed {sp['seed']})"
    fs = data.get("fit_sample") or {}
    n, total = fs.get("n_fit_queries"), data["n_train_queries"]
    sample = "" if n is None or n >= total else (
        f" Strategies were fitted on a seeded sample of {n:,} of the {total:,} train queries "
        f"(--max-fit-queries {fs['max_fit_queries']:,}); settings are still chosen and checked on "
        "all of them.")
    return (f"{total} train / {data['n_test_queries']} test queries, split by "
            f"{how}; strategies are fitted on train queries, deployed settings are chosen on train "
            f"queries, and every figure shown is on test queries.{sample}")


# ---- tables ------------------------------------------------------------------------------------
TASKS_PER_TABLE = 6


def _strategy_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    two = data.get("two_model") is not None
    head = ["strategy", "kind", "points", "cost ratio @ best quality", "quality @ best cost",
            "AUC (AIQ)", "oracle share"]
    if two:
        head += ["APGR", "CPT 50%", "CPT 80%", "CPT 95%"]
    rows = []
    order = sorted(data["strategies"], key=lambda s: (s["kind"] == "baseline",
                                                      s["cost_ratio_at_best_quality"] is None,
                                                      s["cost_ratio_at_best_quality"] or 0,
                                                      -(s["auc"] or 0)))
    for s in order:
        cells: list[Any] = [s["name"], s["kind"], str(len(s["curve"]))]
        for key, f in (("cost_ratio_at_best_quality", fmt_ratio), ("quality_at_best_cost", fmt_q),
                       ("auc", fmt_q), ("oracle_share", fmt_pct)):
            text = _with_ci(s, key, f)
            if key == "auc" and s["name"].startswith("model:"):
                text = "n/a" + AUC_MARK  # one point, no curve: see auc_note
            if key == "cost_ratio_at_best_quality" and s["kind"] != "baseline" and _no_saving(s):
                cells.append({"text": text, "cls": "no-saving", "flag": NO_SAVING})
            else:
                cells.append(text)
        if two:
            cells.append(_with_ci(s, "apgr"))
            cpt = s.get("cpt") or {}
            cells += [("–" if cpt.get(k) is None else f"{cpt[k]:.1f}%") for k in ("50", "80", "95")]
        rows.append(cells)
    return head, rows


def _no_saving(s: dict[str, Any]) -> bool:
    """Whether a test-swept cost ratio (not "never": that says it) or its interval reaches 1."""
    r = s.get("cost_ratio_at_best_quality")
    ci = (s.get("ci95") or {}).get("cost_ratio_at_best_quality")
    return r is not None and bool(r >= 1.0 or (ci and (ci[1] is None or ci[1] >= 1.0)))


def _flagged(text: str, flags: list[str], sub: str = "") -> Any:
    if not flags and not sub:
        return text
    cell: dict[str, Any] = {"text": text}
    if flags:
        cell.update(cls="no-saving", flag=" · ".join(flags))
    if sub:
        cell["sub"] = sub
    return cell


def _on_test(t: dict[str, Any], extra: str = "") -> str:
    return _sp(f"{fmt_pct(t.get('cost_ratio'))} cost · q {fmt_q(t['quality'])}{extra}", _ci_of(t))


def _deployed_cell(d: dict[str, Any]) -> Any:
    """✓ when certified, the test figures, the bound beneath, ⚠ flags."""
    if not d.get("met"):
        return "not met on train"
    budget = d.get("test_budget_ratio")
    text = ("✓ " if d.get("certified") else "") + _on_test(
        d["test"], "" if budget is None else f" · {budget:.2f}× budget")
    return _flagged(text, _flags(d), f"bound: {bound_text(d['target'], d.get('bound'))}")


def _deployed_rows(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    targets = _deployment(data).get("targets") or []
    rows = []
    for s in sorted(data["strategies"], key=lambda s: s["kind"] == "baseline"):
        if not s.get("deployed"):
            continue
        by = {d["target"]: d for d in s["deployed"]}
        rows.append([s["name"], s["kind"]] + [_deployed_cell(by[t]) if t in by else "–"
                                              for t in targets])
    return ["strategy", "kind", *[target_label(data, t) for t in targets]], rows


def _setting_text(setting: dict[str, Any] | None) -> str:
    if not setting:
        return "–"
    parts = []
    for k, v in setting.items():
        if isinstance(v, list):
            v = " › ".join(map(str, v)) if k == "chain" else ", ".join(
                f"{x:g}" if isinstance(x, float) else str(x) for x in v)
        elif isinstance(v, float):
            v = f"{v:.6g}"
        parts.append(f"{k}={v}")
    return "; ".join(parts)


def _files_cell(e: dict[str, Any]) -> Any:
    files = e.get("files") or {}
    if files.get("error"):
        return {"text": f"not written: {files['error']}", "cls": "deploy"}
    if files.get("config"):
        return {"text": f"{files['folder']}/", "code": [files["config"]], "cls": "deploy"}
    return {"text": f"ship/{ship_folder(e)}/", "cls": "deploy"}


def _ship_rows(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """One row per distinct pick."""
    rows: list[list[Any]] = []
    for group in ship_groups(data):
        e = group[0]
        guarantees = "; ".join(f"{target_label(data, x['target'])}: {guarantee_text(data, x)}"
                               if len(group) > 1 else guarantee_text(data, x) for x in group)
        flags = [f for x in group for f in _flags(x, fallback=bool(x.get("fallback")))]
        st = e.get("stability") or {}
        alone = ", ".join(f"{name} ({k} of {st['folds']})"
                          for name, k in Counter(st.get("picks") or []).most_common())
        rows.append([
            {"text": "; ".join(target_label(data, x["target"]) for x in group),
             "sub": ", ".join(x["target"] for x in group)},
            {"text": e["strategy"], "sub": _setting_text(e.get("setting"))},
            {"text": guarantees, "sub": f"each fold alone would pick: {alone}" if st else ""},
            _flagged(_on_test(e["test"]), list(dict.fromkeys(flags))),
            _files_cell(e)])
    return ["target", "ship", "guarantee (train rows only)", "on test", "files"], rows


def _model_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["model", "quality", "95% CI", "cost / query", "test queries", "oracle picks it"]
    rows = []
    for m in _models_by_cost(data):
        mark = " ★" if m["model"] == data["best_model"]["model"] else ""
        rows.append([m["model"] + mark, fmt_q(m["quality"]), _ci_of(m), fmt_usd(m["cost_usd"]),
                     str(m["n_queries"]), fmt_pct(m["oracle_pick_share"])])
    o = data["oracle"]
    rows.append(["oracle (per query: cheapest model with the best score)", fmt_q(o["quality"]),
                 _ci_of(o), fmt_usd(o["cost_usd"]), str(data["n_test_queries"]), "–"])
    return head, rows


def _task_tables(data: dict[str, Any]) -> list[tuple[list[str], list[list[Any]]]]:
    """Quality per task (a row per model, the oracle and strategy), at most TASKS_PER_TABLE task
    columns per table so that no table needs a sideways scroll."""
    tasks = data.get("tasks") or []
    if len(tasks) < 2:  # one task is the whole table again
        return []
    models = [m["model"] for m in _models_by_cost(data)]
    strats = [s["name"] for s in _strategies(data)]
    tables = []
    for k in range(0, len(tasks), TASKS_PER_TABLE):
        chunk = tasks[k:k + TASKS_PER_TABLE]
        head = ["model / strategy"] + [f"{t['task']} ({t['n_queries']})" for t in chunk]
        rows: list[list[Any]] = [[f"model:{m}"] + [fmt_q(t["models"][m]["quality"]) for t in chunk]
                                 for m in models]
        rows.append(["oracle"] + [fmt_q(t["oracle"]["quality"]) for t in chunk])
        for name in strats:
            xs = [t["strategies"].get(name) or {} for t in chunk]
            rows.append([name] + [{"text": fmt_q(x.get("quality")),
                                   "sub": f"{fmt_usd(x.get('cost_usd'))} · {x.get('at') or '–'}"}
                                  for x in xs])
        tables.append((head, rows))
    return tables

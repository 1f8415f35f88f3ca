"""The report's tables as rows of cells, shared by the Markdown and HTML reports.

A cell is text, or a dict: ``text``, ``sub`` (a line beneath), ``flag`` (a ⚠ mark), ``code``
(lines shown verbatim) and ``cls`` (the HTML cell's class)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ._report_text import (
    AUC_MARK,
    NO_SAVING,
    _ci_of,
    _deployment,
    _flags,
    _models_by_cost,
    _sp,
    _strategies,
    _with_ci,
    bound_text,
    fmt_pct,
    fmt_q,
    fmt_ratio,
    fmt_usd,
    guarantee_text,
    ship_groups,
    target_label,
)
from ._write_ship import ship_folder

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
    """Whether a test-swept cost ratio may save nothing: it is ≥ 1, or its bootstrap interval
    reaches 1 (or "never"). A strategy that never reaches the best model already says so."""
    r = s.get("cost_ratio_at_best_quality")
    ci = (s.get("ci95") or {}).get("cost_ratio_at_best_quality")
    if r is None:
        return False  # "never" already says it
    return bool(r >= 1.0 or (ci and (ci[1] is None or ci[1] >= 1.0)))


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
    """A point on test: its cost as a share of the best model's, its quality and interval."""
    return _sp(f"{fmt_pct(t.get('cost_ratio'))} cost · q {fmt_q(t['quality'])}{extra}", _ci_of(t))


def _deployed_cell(d: dict[str, Any]) -> Any:
    """One strategy's point for one target: ✓ when its bound meets the target, test cost as a
    share of the best model's, test quality with its interval, the bound beneath; flagged when
    the saving's interval includes none or the budget is overspent on test."""
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


def _stability_text(e: dict[str, Any]) -> str:
    """Which strategy each held-out fold alone would pick (by its point estimates)."""
    st = e.get("stability") or {}
    if not st:
        return ""
    alone = ", ".join(f"{name} ({k} of {st['folds']})"
                      for name, k in Counter(st["picks"]).most_common())
    return f"each fold alone would pick: {alone}"


def _files_cell(e: dict[str, Any]) -> Any:
    files = e.get("files") or {}
    if files.get("error"):
        return {"text": f"not written: {files['error']}", "cls": "deploy"}
    if files.get("config"):
        return {"text": f"{files['folder']}/", "code": [files["config"]], "cls": "deploy"}
    return {"text": f"ship/{ship_folder(e)}/", "cls": "deploy"}


def _ship_rows(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """One row per distinct pick: the targets it serves, the pick, what train proves, how it did
    on test, and where its files are."""
    rows: list[list[Any]] = []
    for group in ship_groups(data):
        e = group[0]
        guarantees = "; ".join(f"{target_label(data, x['target'])}: {guarantee_text(data, x)}"
                               if len(group) > 1 else guarantee_text(data, x) for x in group)
        flags = [f for x in group for f in _flags(x, fallback=bool(x.get("fallback")))]
        rows.append([
            {"text": "; ".join(target_label(data, x["target"]) for x in group),
             "sub": ", ".join(x["target"] for x in group)},
            {"text": e["strategy"], "sub": _setting_text(e.get("setting"))},
            {"text": guarantees, "sub": _stability_text(e)},
            _flagged(_on_test(e["test"]), list(dict.fromkeys(flags))),
            _files_cell(e)])
    return ["target", "ship", "guarantee (train rows only)", "on test", "files"], rows


def _model_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["model", "quality", "95% CI", "cost / query", "test queries", "oracle picks it"]
    rows = []
    for m in _models_by_cost(data):
        mark = " ★" if m["model"] == data["best_model"]["model"] else ""
        rows.append([m["model"] + mark, fmt_q(m["quality"]),
                     _ci_of(m), fmt_usd(m["cost_usd"]),
                     str(m["n_queries"]), fmt_pct(m["oracle_pick_share"])])
    o = data["oracle"]
    rows.append(["oracle (per query: cheapest model with the best score)", fmt_q(o["quality"]),
                 _ci_of(o), fmt_usd(o["cost_usd"]),
                 str(data["n_test_queries"]), "–"])
    return head, rows


def _task_tables(data: dict[str, Any]) -> list[tuple[list[str], list[list[Any]]]]:
    """Quality per task, one row per model, the oracle and every strategy, one column per task;
    at most TASKS_PER_TABLE task columns per table so that no table needs a sideways scroll."""
    tasks = data.get("tasks") or []
    if len(tasks) < 2:  # one task is the whole table again
        return []
    models = [m["model"] for m in _models_by_cost(data)]
    strats = [s["name"] for s in _strategies(data)]
    tables = []
    for k in range(0, len(tasks), TASKS_PER_TABLE):
        chunk = tasks[k:k + TASKS_PER_TABLE]
        head = ["model / strategy"] + [f"{t['task']} ({t['n_queries']})" for t in chunk]
        rows: list[list[Any]] = []
        for m in models:
            rows.append([f"model:{m}"] + [fmt_q(t["models"][m]["quality"]) for t in chunk])
        rows.append(["oracle"] + [fmt_q(t["oracle"]["quality"]) for t in chunk])
        for name in strats:
            cells: list[Any] = [name]
            for t in chunk:
                x = t["strategies"].get(name) or {}
                cells.append({"text": fmt_q(x.get("quality")),
                              "sub": f"{fmt_usd(x.get('cost_usd'))} · {x.get('at') or '–'}"})
            rows.append(cells)
        tables.append((head, rows))
    return tables


"""The evaluation report, from the dict of :class:`EvalResult`: its words and numbers (shared
with the terminal's ``ponder eval``), its tables as rows of cells, and their Markdown (every text
from data renders as itself) and HTML (one self-contained page: inline CSS, the plot as inline
SVG, no scripts) renderings.

A cell is text, or a dict: ``text``, ``sub`` (a line beneath), ``flag`` (a ⚠ mark), ``code``
(lines shown verbatim) and ``cls`` (the HTML cell's class).
"""

from __future__ import annotations

import html
import io
import re
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


# ---- Markdown ----------------------------------------------------------------------------------
_NEWLINE = re.compile(r"\r\n|\r|\n")
_BACKTICKS = re.compile(r"`+")


def md_escape(text: Any, *, cell: bool = False) -> str:
    """Text (model, strategy, task, dataset names, reasons: anything from data) as Markdown that
    renders as that very text: HTML specials become entities (a name ``<script>`` stays text),
    backslash, backtick and ``|`` are backslash-escaped (``|`` would split a table cell), and a
    line break becomes ``<br>`` in a table cell (where a newline would end the row), a space
    elsewhere (where it would end the list item or heading)."""
    s = html.escape(str(text), quote=False)
    s = s.replace("\\", "\\\\").replace("`", "\\`").replace("|", "\\|")
    return _NEWLINE.sub("<br>" if cell else " ", s)


def _md_code(line: str) -> str:
    """One line as a table cell's code span, shown verbatim (a command must copy as printed):
    Markdown shows a code span's text literally, ``<`` included, so it is not HTML-escaped; the
    fence is longer than any run of backticks inside, and ``|`` is escaped (GFM splits table
    cells before it reads code spans, and unescapes ``\\|`` inside them)."""
    fence = "`" * (max((len(m) for m in _BACKTICKS.findall(line)), default=0) + 1)
    pad = " " if line.startswith("`") or line.endswith("`") else ""
    body = line.replace("|", "\\|")
    return f"{fence}{pad}{body}{pad}{fence}"


def _md_text(c: Any) -> str:
    """A table cell as Markdown; every text in it is escaped (:func:`md_escape`)."""
    if not isinstance(c, dict):
        return md_escape(c, cell=True)
    parts = [_md_code(line) for x in c.get("code") or [] for line in x.splitlines()]
    parts += [md_escape(x, cell=True) for x in (c.get("text"), c.get("flag")) if x]
    if c.get("sub"):
        parts.append(f"({md_escape(c['sub'], cell=True)})")
    return " ".join(parts)


def _md_table(head: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(_md_text(h) for h in head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_md_text(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def render_markdown(data: dict[str, Any]) -> str:
    esc = md_escape  # every line that carries data (names, reasons) goes through it
    parts = [f"# ponder evaluation: {esc(data['dataset'])}", ""]
    parts += [f"- {esc(line)}" for line in _summary_lines(data)]
    parts += ["", esc(_split_text(data)), ""]
    sh, sr = _ship_rows(data)
    if sr:
        parts += ["## What to ship", "", esc(SHIP_HELP), "", _md_table(sh, sr), ""]
        note, command = files_note(data)
        parts += [esc(note) + (f" {_md_code(command)}" if command else ""), ""]
        notes, commands = needed_notes(data)
        for head, line in notes.values():
            parts += [f"**{esc(head)}** {esc(line)}", ""]
        if commands:
            parts += [NEEDED_HOW, ""] + [f"- {_md_code(_NEWLINE.sub(' ', c))}"
                                         for c in commands] + [""]
        parts += ["", NO_SAVING_HELP, ""]
    dh, dr = _deployed_rows(data)
    if dr:
        parts += [f"## {DEPLOYED_TITLE}", "", esc(DEPLOYED_HELP), "", _md_table(dh, dr), "",
                  "Cells: test cost as a share of the best model's, test quality [its bootstrap "
                  f"95% interval]; for budgets, test spend over the budget. {NO_SAVING_HELP}", ""]
    parts += [f"## Strategies: {TEST_SWEEP_LABEL}", "", _md_table(*_strategy_rows(data)), "",
              "Brackets are bootstrap 95% intervals over test queries "
              f"({(data.get('bootstrap') or {}).get('n', 0)} resamples). {NO_SAVING_HELP}", "",
              esc(auc_note(data)), "",
              "## Single models", "", _md_table(*_model_rows(data)), ""]
    tables = _task_tables(data)
    if tables:
        parts += ["## Per task", "", TASK_HELP, ""]
        for th, tr in tables:
            parts += [_md_table(th, tr), ""]
    parts += ["## Metrics", ""] + [f"- **{k}**: {v}" for k, v in METRIC_HELP.items()]
    if data.get("skipped"):
        parts += ["", "## Skipped strategies", ""]
        parts += [f"- {esc(s['name'])}: {esc(s['reason'])}" for s in data["skipped"]]
    parts += ["", "## Data and versions", "",
              f"- dataset: {esc(data['dataset'])} ({data['n_rows']} rows, {data['n_models']} models)",
              f"- created: {esc(data['created_at'])}",
              "- versions: " + esc(", ".join(f"{k} {v}" for k, v in data["versions"].items())), ""]
    return "\n".join(parts)


# ---- the cost-quality plot: matplotlib's ``Figure`` directly (no pyplot: no global state) ---
# Each drawn curve gets its own colour, marker and dash, so two curves that overlap stay
# distinguishable even where their colours repeat; identical curves are merged (curve_groups).
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]
# 10 markers × 7 dashes (coprime): the first 70 curves all differ in (marker, dash).
_DASHES: list[Any] = ["-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (3, 1, 1, 1, 1, 1)),
                      (0, (8, 2))]
_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f"]


def cost_quality_svg(data: dict[str, Any]) -> str:
    """The cost-quality plane. Single models are numbered dots (1 = cheapest) named in the legend
    below the axes: a name beside its dot would lie on other dots and lines where models crowd."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(11.0, 6.0), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    strategies = data["strategies"]
    costs = [p["cost_usd"] for s in strategies for p in s["curve"] if p["cost_usd"]]
    log = bool(costs) and min(costs) > 0 and max(costs) / min(costs) > 20
    if log:
        ax.set_xscale("log")
    models = sorted((s for s in strategies if s["name"].startswith("model:")),
                    key=lambda s: s["curve"][0]["cost_usd"])
    handles: list[Any] = []
    for k, s in enumerate(models, start=1):
        p = s["curve"][0]
        ax.scatter([p["cost_usd"]], [p["quality"]], s=120, color="white", edgecolor="#333",
                   linewidth=1.2, zorder=5, marker="o")
        ax.annotate(str(k), (p["cost_usd"], p["quality"]), ha="center", va="center",
                    fontsize=7, color="#111", zorder=6, fontweight="bold")
        best = " (best)" if s["name"][6:] == data["best_model"]["model"] else ""
        handles.append(Line2D([], [], linestyle="none", marker=f"${k}$", color="#111", ms=7,
                              label=_plot_text(f"{s['name'][6:]}{best}")))
    for s in strategies:
        xs, ys = _xy(s["curve"])
        if s["name"] == "random-mix":
            ax.plot(xs, ys, linestyle=":", color="#888", lw=1.4, label="random mix (cheapest ↔ best)")
        elif s["name"] == "oracle":
            o = data["oracle"]
            ax.plot(xs, ys, color="#d4a017", lw=1.2, ls="--", zorder=2)
            ax.scatter([o["cost_usd"]], [o["quality"]], marker="*", s=180, color="#f2b705",
                       edgecolor="#6b5200", zorder=5, label="oracle (upper bound; dashed: on a budget)")
    for i, group in enumerate(curve_groups(data)):
        s = group[0]
        xs, ys = _xy(s["curve"])
        label = _plot_text(" = ".join(g["name"] for g in group)
                           + (" (identical curves)" if len(group) > 1 else ""))
        (line,) = ax.plot(xs, ys, marker=_MARKERS[i % len(_MARKERS)], ms=4.5, lw=1.6,
                          linestyle=_DASHES[i % len(_DASHES)], color=_COLORS[i % len(_COLORS)],
                          label=label, zorder=3, markerfacecolor="none" if i % 2 else None)
        line.set_gid("curve-" + str(i))
    front = data.get("pareto") or []
    if front:
        ax.step(*_xy(front), where="post", color="#2a9d8f", lw=5, alpha=0.25, zorder=2,
                label="Pareto frontier")
    best = data["best_model"]
    ax.axhline(best["quality"], color="#c0392b", lw=0.8, ls="--", alpha=0.6)
    ax.axvline(best["cost_usd"], color="#c0392b", lw=0.8, ls="--", alpha=0.6)
    ax.set_xlabel("mean cost per query (USD" + (", log scale)" if log else ")"))
    ax.set_ylabel("mean quality on test queries")
    ax.grid(True, which="major", alpha=0.3)
    lines, labels = ax.get_legend_handles_labels()
    ax.legend(handles=handles + lines, labels=[h.get_label() for h in handles] + labels,
              loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8.5,
              frameon=False, title="single models (numbered dots, cheapest first) and curves",
              title_fontsize=8.5)
    fig.tight_layout()
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # labels stay text: searchable, smaller
        fig.savefig(buf, format="svg", bbox_inches="tight")
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prolog and DOCTYPE for inline use


def _xy(points: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    return [p["cost_usd"] for p in points], [p["quality"] for p in points]


def _plot_text(name: str) -> str:
    """Every ``$`` escaped: matplotlib reads ``$...$`` as math (``a$\\x$`` would stop the report)."""
    return name.replace("$", "\\$")


def curve_groups(data: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The non-baseline strategies grouped by identical curves, each drawn once, in order."""
    groups: dict[tuple[tuple[float, float], ...], list[dict[str, Any]]] = {}
    for s in _strategies(data):
        key = tuple((round(float(p["cost_usd"] or 0.0), 12), round(float(p["quality"] or 0.0), 12))
                    for p in s["curve"])
        groups.setdefault(key, []).append(s)
    return list(groups.values())


def merged_note(data: dict[str, Any]) -> str:
    merged = [g for g in curve_groups(data) if len(g) > 1]
    if not merged:
        return ""
    names = "; ".join(" = ".join(s["name"] for s in g) for g in merged)
    return (f"Drawn once because their test curves are identical point for point: {names}. "
            "Every other strategy has its own colour, marker and dash.")


# ---- HTML --------------------------------------------------------------------------------------
_CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;margin:0;
color:#1d2430;background:#f6f7f9;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:28px 32px 48px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 10px;border-bottom:1px solid #dde1e6;
padding-bottom:4px}.sub{color:#5b6574;margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:14px;margin:18px 0}
.card{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:12px 16px}
.card .k{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#5b6574}
.card .v{font-size:22px;font-weight:600;margin-top:2px}.card .d{font-size:13px;color:#5b6574}
.plot{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:8px}
.plot svg{width:100%;height:auto}
.scroll{overflow-x:auto}
table{border-collapse:collapse;background:#fff;font-size:13.5px;width:100%}
th,td{border:1px solid #e3e6ea;padding:5px 7px;text-align:right;white-space:nowrap}
th{background:#eef1f4;font-weight:600;white-space:normal;vertical-align:bottom}
td:first-child{white-space:normal;word-break:break-word;min-width:150px}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafbfc}
ul.notes{font-size:14px}dl{font-size:14px}dt{font-weight:600;margin-top:6px}dd{margin-left:18px;color:#394150}
.muted{color:#5b6574;font-size:13px}
.ci{display:block;font-size:11.5px;color:#6b7482}
table.fit{table-layout:fixed}table.fit td,table.fit th{white-space:normal;overflow-wrap:anywhere}
table.fit td:first-child{min-width:0}table.fit td{text-align:left}.task-table{margin-bottom:12px}
td.no-saving{background:#fff4e5 !important}.flag{display:block;font-size:11.5px;color:#a04a00;
font-weight:600}td.deploy{text-align:left;font-size:12.5px;color:#394150}
td.deploy code{display:block;white-space:pre-wrap;overflow-wrap:anywhere;background:#f3f5f8;
border:1px solid #e3e6ea;border-radius:4px;padding:3px 6px;margin:0 0 4px;color:#1d2430;
font-size:12px}details{margin:10px 0}summary{cursor:pointer;font-weight:600}
#ship th:nth-child(1){width:17%}#ship th:nth-child(2){width:20%}#ship th:nth-child(3){width:22%}
#ship th:nth-child(4){width:15%}.task-table th:first-child{width:24%}
.files{font-size:14px}.files code{display:block;background:#f3f5f8;border:1px solid #e3e6ea;
border-radius:4px;padding:3px 6px;margin:4px 0;font-size:12px;overflow-wrap:anywhere}
.needed{background:#fff8e6;border:1px solid #f0d9a8;border-radius:6px;padding:4px 12px 10px;
margin:10px 0;font-size:14px}.needed code{display:block;white-space:pre-wrap;
overflow-wrap:anywhere;background:#f3f5f8;border:1px solid #e3e6ea;border-radius:4px;
padding:3px 6px;margin:4px 0;font-size:12px}
"""

_VALUE_CI = re.compile(r"^(.+?) (\[[^\]]*\])$")


def _cell_html(c: Any) -> str:
    """A cell; a value with its interval renders as the value over a small grey interval."""
    if not isinstance(c, dict):
        m = _VALUE_CI.match(c)
        if m:
            return f'{html.escape(m.group(1))}<span class="ci">{html.escape(m.group(2))}</span>'
        return html.escape(c)
    out = _cell_html(c.get("text", ""))
    if c.get("flag"):
        out += f'<span class="flag">{html.escape(c["flag"])}</span>'
    if c.get("sub"):
        out += f'<span class="ci">{html.escape(c["sub"])}</span>'
    return "".join(f"<code>{html.escape(code)}</code>" for code in c.get("code") or []) + out


def _html_table(head: list[str], rows: list[list[Any]], *, cls: str = "") -> str:
    """A table; ``cls="fit"`` lays it out to the page width (cells wrap, no sideways scroll)."""
    def td(c: Any) -> str:
        klass = c.get("cls") if isinstance(c, dict) else None
        return (f'<td class="{html.escape(klass)}">' if klass else "<td>") + _cell_html(c) + "</td>"

    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(td(c) for c in r) + "</tr>" for r in rows)
    attr = f' class="{html.escape(cls)}"' if cls else ""
    table = f"<table{attr}><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"
    return table if cls == "fit" else f'<div class="scroll">{table}</div>'


def _cards(data: dict[str, Any]) -> str:
    b, o = data["best_model"], data["oracle"]
    cards = [("best single model", fmt_q(b["quality"]),
              f"{b['model']} · {fmt_usd(b['cost_usd'])}/query · CI {_ci_of(b)}"),
             ("oracle (upper bound)", fmt_q(o["quality"]),
              f"{fmt_usd(o['cost_usd'])}/query · CI {_ci_of(o)}")]
    ship = {e["target"]: e for e in data.get("ship") or []}
    e, key = ship.get("best_quality"), "ship for the best model's quality"
    if e is not None and e.get("fallback"):
        cards.append((key, "keep the best model",
                      f"{e['strategy'].removeprefix('model:')}: nothing cheaper is certified "
                      f"to stay within {100 * _epsilon(data):g} pt of it (see What to ship)"))
    elif e is not None:
        t = e["test"]
        cards.append((key, fmt_pct(t.get("cost_ratio")), " · ".join([
            f"of the best model's cost on test {_ci_of(t, 'cost_ratio', fmt_pct)}",
            e["strategy"], guarantee_text(data, e),
            f"quality {fmt_q(t['quality'])} on test {_ci_of(t)}", *_flags(e)])))
    e, key = ship.get("budget:0.2"), "ship within 20% of its cost"
    if e is not None and e.get("fallback"):
        cards.append((key, "nothing certified", "keep the best model, or see What to ship"))
    elif e is not None:
        t, tbr = e["test"], e.get("test_budget_ratio")
        cards.append((key, fmt_q(t["quality"]), " · ".join([
            f"quality on test {_ci_of(t)}", e["strategy"], guarantee_text(data, e),
            f"spends {'–' if tbr is None else f'{tbr:.2f}'}× the budget on test", *_flags(e)])))
    real = _strategies(data)
    if real:
        s = max(real, key=lambda s: s["auc"] or 0)
        cards.append(("best AUC (AIQ) of a test sweep", fmt_q(s["auc"]),
                      f"{s['name']} · CI {_ci_of(s, 'auc')} · {TEST_SWEEP_LABEL}"))
    else:
        cards.append(("strategies", "none registered", "baselines only"))
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{html.escape(k)}</div><div class="v">{html.escape(v)}'
        f'</div><div class="d">{html.escape(d)}</div></div>' for k, v, d in cards) + "</div>"


def render_html(data: dict[str, Any]) -> str:
    esc = html.escape
    tables = _task_tables(data)
    task_html = ("<h2>Per task</h2><p class='muted'>" + esc(TASK_HELP) + "</p>"
                 + "".join(f'<div class="task-table">{_html_table(th, tr, cls="fit")}</div>'
                           for th, tr in tables) if tables else "")
    dh, dr = _deployed_rows(data)
    deployed_html = (f"<h2>{DEPLOYED_TITLE}</h2><p class='muted'>{esc(DEPLOYED_HELP)}</p>"
                     f"{_html_table(dh, dr, cls='fit')}"
                     f"<p class='muted'>Cells: test cost as a share of the best model's, test "
                     f"quality with its bootstrap 95% interval; for budgets, test spend over the "
                     f"budget; beneath, the upper confidence bound from the train rows. "
                     f"{esc(NO_SAVING_HELP)}</p>" if dr else "")
    sh, sr = _ship_rows(data)
    notes, commands = needed_notes(data)
    needed = "".join(f'<p><strong>{esc(head)}</strong> {esc(line)}</p>' for head, line in notes.values())
    if commands:
        needed += f"<p>{esc(NEEDED_HOW)}</p>" + "".join(f"<code>{esc(c)}</code>"
                                                        for c in commands)
    needed = f'<div class="needed" id="not-enough-data">{needed}</div>' if notes else ""
    note, command = files_note(data)
    files = (f'<p class="files" id="ship-files">{esc(note)}'
             + (f"<code>{esc(command)}</code>" if command else "") + "</p>")
    ship_html = (f'<section id="ship"><h2>What to ship</h2><p class="muted">{esc(SHIP_HELP)}</p>'
                 f'{_html_table(sh, sr, cls="fit")}{files}{needed}'
                 f'<p class="muted">{esc(NO_SAVING_HELP)}</p></section>' if sr else "")
    merged = merged_note(data)
    skipped = ""
    if data.get("skipped"):
        skipped = "<h2>Skipped strategies</h2><ul class='notes'>" + "".join(
            f"<li>{esc(s['name'])}: {esc(s['reason'])}</li>" for s in data["skipped"]) + "</ul>"
    versions = ", ".join(f"{k} {v}" for k, v in data["versions"].items())
    boot = data.get("bootstrap") or {}
    definitions = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in METRIC_HELP.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ponder evaluation: {esc(data['dataset'])}</title><style>{_CSS}</style></head>
<body><main>
<h1>Cost vs quality: {esc(data['dataset'])}</h1>
<p class="sub">{esc(_split_text(data))}</p>
{_cards(data)}
<ul class="notes">{''.join(f'<li>{esc(x)}</li>' for x in _summary_lines(data))}</ul>
{ship_html}
<h2>Cost–quality plane</h2>
<div class="plot">{cost_quality_svg(data)}</div>
<p class="muted">Dashed red lines: the best single model's quality and cost. The shaded step is the
Pareto frontier of every achievable point (the oracle is an upper bound and not part of it).</p>
{f'<p class="muted" id="merged-curves">{esc(merged)}</p>' if merged else ""}
{deployed_html}
<h2>Strategies: {esc(TEST_SWEEP_LABEL)}</h2>
{_html_table(*_strategy_rows(data))}
<p class="muted">Brackets: bootstrap 95% intervals over test queries ({boot.get('n', 0)} resamples,
percentile method). "never": the strategy does not reach the best model's quality.
{esc(NO_SAVING_HELP)}</p>
<p class="muted" id="auc-note">{esc(auc_note(data))}</p>
<h2>Single models</h2>
{_html_table(*_model_rows(data))}
{task_html}
{skipped}
<h2>Metrics</h2><dl>{definitions}</dl>
<h2>Data and versions</h2>
<dl><dt>dataset</dt><dd>{esc(data['dataset'])}: {data['n_rows']} rows, {data['n_models']} models,
{data['missing']['n_incomplete_queries_all']} queries missing some model</dd>
<dt>split</dt><dd>{esc(_split_text(data))}</dd>
<dt>versions</dt><dd>{esc(versions)}</dd><dt>created</dt><dd>{esc(data['created_at'])}</dd></dl>
</main></body></html>
"""

"""Render an evaluation result (the dict of :class:`EvalResult`) as Markdown, in which every text
from data renders as itself, or as HTML: one self-contained page (inline CSS, the plot as inline
SVG, no scripts), on ``_report_text``'s words and tables.
"""

from __future__ import annotations

import html
import io
import re
from typing import Any

from ._report_text import (
    DEPLOYED_HELP,
    DEPLOYED_TITLE,
    METRIC_HELP,
    NEEDED_HOW,
    NO_SAVING_HELP,
    SHIP_HELP,
    TASK_HELP,
    TEST_SWEEP_LABEL,
    _ci_of,
    _deployed_rows,
    _epsilon,
    _flags,
    _model_rows,
    _ship_rows,
    _split_text,
    _strategies,
    _strategy_rows,
    _summary_lines,
    _task_tables,
    auc_note,
    files_note,
    fmt_pct,
    fmt_q,
    fmt_usd,
    guarantee_text,
    needed_notes,
)

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

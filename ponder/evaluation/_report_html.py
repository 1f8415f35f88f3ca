"""The HTML report: one self-contained page, inline CSS and the plot as inline SVG, no scripts,
no fetches."""

from __future__ import annotations

import html
import re
from typing import Any

from ._report_plot import cost_quality_svg, merged_note
from ._report_tables import _deployed_rows, _model_rows, _ship_rows, _strategy_rows, _task_tables
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
    _epsilon,
    _flags,
    _split_text,
    _strategies,
    _summary_lines,
    auc_note,
    files_note,
    fmt_pct,
    fmt_q,
    fmt_usd,
    guarantee_text,
    needed_notes,
)

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
    e = ship.get("best_quality")
    if e is not None:
        t = e["test"]
        key = "ship for the best model's quality"
        if e.get("fallback"):
            cards.append((key, "keep the best model",
                          f"{e['strategy'].removeprefix('model:')}: nothing cheaper is certified "
                          f"to stay within {100 * _epsilon(data):g} pt of it (see What to ship)"))
        else:
            cards.append((key, fmt_pct(t.get("cost_ratio")), " · ".join([
                f"of the best model's cost on test {_ci_of(t, 'cost_ratio', fmt_pct)}",
                e["strategy"], guarantee_text(data, e),
                f"quality {fmt_q(t['quality'])} on test {_ci_of(t)}", *_flags(e)])))
    e = ship.get("budget:0.2")
    if e is not None:
        t = e["test"]
        tbr = e.get("test_budget_ratio")
        key = "ship within 20% of its cost"
        if e.get("fallback"):
            cards.append((key, "nothing certified", "keep the best model, or see What to ship"))
        else:
            cards.append((key, fmt_q(t["quality"]), " · ".join([
                f"quality on test {_ci_of(t)}", e["strategy"], guarantee_text(data, e),
                f"spends {'–' if tbr is None else f'{tbr:.2f}'}× the budget on test",
                *_flags(e)])))
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

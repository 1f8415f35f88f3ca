"""Render an evaluation result (the dict of :class:`EvalResult`) as Markdown, in which every text
from data renders as itself; :func:`render_html` is in ``_report_html``. Both draw on
``_report_text`` (words and numbers) and ``_report_tables`` (the tables as rows of cells).
"""

from __future__ import annotations

import html
import re
from typing import Any

from ._report_html import render_html as render_html  # an entry point: _evaluator imports it here
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
    _split_text,
    _summary_lines,
    auc_note,
    files_note,
    needed_notes,
)

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
        parts += [f"## {DEPLOYED_TITLE}", "",
                  esc(DEPLOYED_HELP), "", _md_table(dh, dr), "",
                  "Cells: test cost as a share of the best model's, test quality [its bootstrap "
                  f"95% interval]; for budgets, test spend over the budget. {NO_SAVING_HELP}", ""]
    parts += [f"## Strategies: {TEST_SWEEP_LABEL}", "",
              _md_table(*_strategy_rows(data)), "",
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
    v = data["versions"]
    parts += ["", "## Data and versions", "",
              f"- dataset: {esc(data['dataset'])} ({data['n_rows']} rows, {data['n_models']} "
              "models)",
              f"- created: {esc(data['created_at'])}",
              "- versions: " + esc(", ".join(f"{k} {val}" for k, val in v.items())), ""]
    return "\n".join(parts)

"""Tables that fit the terminal: name columns wrapped after separators and folded, never cut
short with "…", number columns kept whole (``ponder eval``, ``ponder models``)."""

from __future__ import annotations

import re

from rich import box
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from ._common import stdout

NAME_MIN = 20  # a name column is at least this wide (narrower, a name would take too many lines)
_NAME_PIECE = re.compile(r"[^:/\-_. ]+[:/\-_. ]*|[:/\-_. ]+")


def wrap_name(name: str, width: int) -> str:
    """``name`` on lines of at most ``width`` cells, broken after separators (``model:openai:`` /
    ``gpt-4o-mini``); a longer piece is left to the column's fold."""
    lines: list[str] = []
    cur = ""
    for piece in _NAME_PIECE.findall(name):
        if cur and cell_len(cur + piece) > width:
            lines.append(cur)
            cur = ""
        cur += piece
    return "\n".join([*lines, cur])


def _widest(text: str) -> int:
    return max((cell_len(line) for line in text.split("\n")), default=0)


Rows = list[tuple[list[str], "str | None"]]  # (cells, style)


def name_widths(head: list[str], rows: Rows, names: dict[int, int], width: int, edge: bool,
                 ) -> tuple[dict[int, int], bool]:
    """The name columns' widths, and whether the table then fits ``width`` (see fitted_table)."""
    n = len(head)
    natural = [max([_widest(head[i])] + [_widest(cells[i]) for cells, _ in rows]) for i in range(n)]
    room = width - (3 * n + 1 if edge else 3 * n - 3)  # padding, dividers (and edges)
    room -= sum(w for i, w in enumerate(natural) if i not in names)
    least = {i: min(natural[i], m) for i, m in names.items()}
    if sum(least.values()) > room:  # too narrow for every name's least width: share what is left
        fit = {i: max(4, room * m // max(sum(least.values()), 1)) for i, m in least.items()}
        return fit, False
    fit = {}
    for k, i in enumerate(names):  # in order of priority: the first gets its longest name first
        later = sum(least[j] for j in list(names)[k + 1:])
        fit[i] = max(least[i], min(natural[i], room - later))
        room -= fit[i]
    return fit, True


def fitted_table(title: str, head: list[str], rows: Rows, *, names: dict[int, int] | None = None,
                 width: int | None = None, edge: bool = True) -> Table:
    """A table no wider than ``width`` (the terminal's): numbers kept whole, the name columns
    (``names``: column → least width) sharing the rest in priority order, wrapped, never cut."""
    names = {0: NAME_MIN} if names is None else names
    fit, _ = name_widths(head, rows, names, stdout.width if width is None else width, edge)
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=edge,
              pad_edge=edge)
    for i, h in enumerate(head):
        if i in names:
            t.add_column(h, overflow="fold", width=fit[i])
        else:
            t.add_column(h, justify="right", no_wrap=True)
    for cells, style in rows:
        t.add_row(*(Text(wrap_name(c, fit[i])) if i in names else c for i, c in enumerate(cells)),
                  style=style)
    return t

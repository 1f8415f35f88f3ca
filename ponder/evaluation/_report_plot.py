"""The report's cost-quality plot: an inline SVG drawn by matplotlib (``Figure`` directly, no
pyplot, so no global backend state)."""

from __future__ import annotations

import io
from typing import Any

from ._report_text import _strategies

# Each drawn curve gets its own colour, marker and dash, so two curves that overlap stay
# distinguishable even where their colours repeat; identical curves are merged (curve_groups).
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]
# 10 markers × 7 dashes (coprime): the first 70 curves all differ in (marker, dash).
_DASHES: list[Any] = ["-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (3, 1, 1, 1, 1, 1)),
                      (0, (8, 2))]
_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f"]


def cost_quality_svg(data: dict[str, Any], *, width: float = 11.0, height: float = 6.0) -> str:
    """The cost-quality plane: single models, mixes, oracle, strategies and the Pareto frontier.

    The axes take the figure's whole width; the legend lies below them. Single models are
    numbered dots (1 = cheapest), named in the legend: a name written beside its dot would lie on
    other dots and lines wherever models crowd."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(width, height), dpi=100)
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
    """A name from data as plot text: matplotlib reads ``$...$`` as math (a name like
    ``a$\\x$`` would stop the report), so every ``$`` is escaped to print as itself."""
    return name.replace("$", "\\$")


def curve_groups(data: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The non-baseline strategies grouped by identical curves (same points, same order), in the
    order they appear: drawn as one line each, labelled with every member's name."""
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


"""The report says what to ship, once: checked in the generated HTML, parsed (no snapshot).

- "What to ship" has one row per distinct pick (targets that ship the same setting share it),
  its guarantee, its test figures and its folder; the command that writes the folders appears
  once, and ``--ship`` writes strategy files that make the very decisions measured;
- a saving whose bootstrap interval includes no saving, or a budget overspent on test, is
  flagged with ⚠, and only those;
- headings and cards name targets in words, never by identifier;
- identical curves are drawn once with every name, the others each with their own marker+dash;
  the plot fills its card, and model names sit in the legend, not on other markers;
- the per-task tables fit the page (no sideways scroll) and list every model and strategy;
- single models show no AUC (a point has no curve), and the note says why.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ponder
from ponder._config import config_problems
from ponder.evaluation import OperatingPoint, OutcomeTable, evaluate
from ponder.evaluation._certify import pick
from ponder.evaluation._deploy import TARGETS, ship_folder
from ponder.evaluation._report import curve_groups, render_html
from ponder.evaluation._report_text import TASKS_PER_TABLE, ship_groups, target_label
from ponder.routers import UtilityRouter
from ponder.routers._strategies import RouterStrategy
from ponder.strategies import load_strategy

N = 160
TASKS = [f"task{k}" for k in range(8)]  # more than fit in one per-task table


# ---- a minimal DOM over html.parser -------------------------------------------------------------
VOID = {"meta", "br", "img", "input", "link", "hr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        out = []
        for c in self.children:
            if isinstance(c, Node):
                if (tag is None or c.tag == tag) and all(
                        v in (c.attrs.get(k.rstrip("_")) or "").split() or c.attrs.get(k.rstrip("_")) == v
                        for k, v in attrs.items()):
                    out.append(c)
                out += c.all(tag, **attrs)
        return out

    def one(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.all(tag, **attrs)
        assert len(found) == 1, f"{len(found)} <{tag} {attrs}>"
        return found[0]

    def inside(self, tag: str, cls: str) -> bool:
        p = self.parent
        while p is not None:
            if p.tag == tag and cls in (p.attrs.get("class") or "").split():
                return True
            p = p.parent
        return False


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.cur.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.cur))

    def handle_endtag(self, tag: str) -> None:
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data: str) -> None:
        self.cur.children.append(data)


def dom(page: str) -> Node:
    b = _Builder()
    b.feed(page)
    return b.root


def rows(table: Node) -> tuple[list[str], list[list[Node]]]:
    head = [th.text().strip() for th in table.one("thead").all("th")]
    return head, [tr.all("td") for tr in table.one("tbody").all("tr")]


def first_text(td: Node) -> str:
    """A cell's own value: its text before the interval / flag / note spans."""
    return "".join(c for c in td.children if isinstance(c, str)).strip()


# ---- data and strategies ------------------------------------------------------------------------
def table_df() -> pd.DataFrame:
    """Difficulty x = (i + .5) / N; model a ($1) is right when x < .6, model b ($10) always; the
    query text carries the difficulty (so a TF-IDF router can learn it) and one of 8 tasks."""
    rows_ = []
    for split in ("train", "test"):
        for i in range(N):
            x = (i + 0.5) / N
            qid = f"{split[:2]}{i}"
            text = ("hard " if x >= 0.6 else "easy ") + f"x={x:.6f}"
            for model, score, cost in (("a", float(x < 0.6), 1.0), ("b", 1.0, 10.0)):
                rows_.append({"query_id": qid, "query": text, "model": model, "score": score,
                              "cost_usd": cost, "split": split, "task": TASKS[i % len(TASKS)]})
    return pd.DataFrame(rows_)


class Knob:
    """Send difficulty ≥ t to b; ``shift`` moves the grid, so differently shifted knobs draw
    different curves and equally shifted ones identical curves."""

    kind = "router"

    def __init__(self, name: str, shift: float = 0.0) -> None:
        self.name, self.shift = name, shift

    def fit(self, train: OutcomeTable) -> Knob:
        return self

    def sweep(self, test: OutcomeTable) -> list[OperatingPoint]:
        x = np.array([float(q.split("x=")[1]) for q in test.queries])
        a, b = test.models.index("a"), test.models.index("b")
        idx = np.arange(len(x))
        out = []
        for t in np.linspace(0.0, 1.0, 11) + self.shift:
            pick = np.where(x >= t, b, a)
            out.append(OperatingPoint({"t": round(float(t), 4)}, test.costs[idx, pick],
                                      test.scores[idx, pick]))
        return out


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    folder = tmp_path_factory.mktemp("ship")
    csv = folder / "outcomes.csv"
    table_df().to_csv(csv, index=False)
    strategies = [Knob("knob-a"), Knob("knob-b"), Knob("knob-shifted", 0.05),
                  RouterStrategy("router-utility", lambda: UtilityRouter())]
    res = evaluate(str(csv), strategies=strategies, n_bootstrap=60)
    return res.to_json(), res.to_html(), csv


def by_name(d: dict, name: str) -> dict:
    return next(s for s in d["strategies"] if s["name"] == name)


# ---- what to ship -------------------------------------------------------------------------------
def test_ship_section_has_one_row_per_pick_and_the_command_once(result):
    d, page, csv = result
    ship = dom(page).one("section", id="ship")
    head, body = rows(ship.one("table"))
    assert head == ["target", "ship", "guarantee (train rows only)", "on test", "files"]
    assert not ship.one("table").inside("div", "scroll")
    groups = ship_groups(d)
    assert len(body) == len(groups) < len(TARGETS)  # some targets ship the same setting here
    seen = []
    for r, group in zip(body, groups, strict=True):
        e = group[0]
        targets = [x["target"] for x in group]
        seen += targets
        assert r[0].one("span").text() == ", ".join(targets)  # ids beneath, words above
        assert first_text(r[0]) == "; ".join(target_label(d, t) for t in targets)
        assert first_text(r[1]) == e["strategy"]
        assert {(x["strategy"], json.dumps(x["setting"])) for x in group} == {
            (e["strategy"], json.dumps(e["setting"]))}
        assert f"q {e['test']['quality']:.3f}" in first_text(r[3])  # the test figure
        assert ("✓ certified" in r[2].text()) == bool(e["certified"])
        assert first_text(r[4]) == f"ship/{ship_folder(e)}/" and not r[4].all("code")
    assert seen == list(TARGETS)  # each target once
    # the command that writes every folder is given once, below the table
    command = ship.one("p", id="ship-files").one("code").text()
    assert command == f"ponder eval {csv} --ship ship"
    assert page.count("--ship ship") == 1


def test_an_over_budget_pick_is_flagged_like_no_saving(result):
    d, _, _ = result
    d = copy.deepcopy(d)
    e = next(x for x in d["ship"] if x["target"] == "budget:0.5" and not x["fallback"])
    e.update(over_budget=True, test_budget_ratio=1.3, saving_in_doubt=False)
    for group in ship_groups(d):  # the flag stays on its own row when the row is merged
        for x in group[1:]:
            x["over_budget"] = False
    ship = dom(render_html(d)).one("section", id="ship")
    _, body = rows(ship.one("table"))
    n_flagged = 0
    for r, group in zip(body, ship_groups(d), strict=True):
        flagged = "no-saving" in (r[3].attrs.get("class") or "").split()
        over = any(x.get("over_budget") for x in group)
        doubt = any(x.get("saving_in_doubt") and not x["fallback"] for x in group)
        assert flagged == (over or doubt)
        assert ("⚠ over budget on test (1.30×)" in r[3].text()) == over
        n_flagged += over
    assert n_flagged == 1


def test_savings_whose_interval_includes_none_and_overspent_budgets_are_flagged(result):
    d, page, _ = result
    root = dom(page)
    table = next(t for t in root.all("table") if [th.text() for th in t.all("th")][:2]
                 == ["strategy", "kind"] and len(t.all("th")) == 2 + len(TARGETS))
    head, body = rows(table)
    assert head[2:] == [target_label(d, t) for t in TARGETS]
    n_flagged = n_clear = 0
    for r in body:
        dep = {x["target"]: x for x in by_name(d, first_text(r[0]))["deployed"]}
        for target, td in zip(TARGETS, r[2:], strict=True):
            x = dep[target]
            flagged = "no-saving" in (td.attrs.get("class") or "").split()
            want = bool(x.get("saving_in_doubt") or x.get("over_budget"))
            assert flagged == want, (first_text(r[0]), target)
            assert ("no saving" in td.text()) == bool(x.get("saving_in_doubt"))
            assert ("over budget" in td.text()) == bool(x.get("over_budget"))
            assert first_text(td).startswith("✓") == bool(x["met"] and x["certified"])
            n_flagged += flagged
            n_clear += x["met"] and not flagged
    assert n_flagged and n_clear  # both kinds occur, so the check can fail either way
    # the test-swept table: a strategy's cost ratio is flagged when its interval reaches 1
    sweep = next(t for t in root.all("table")
                 if "cost ratio @ best quality" in [th.text() for th in t.all("th")])
    head, body = rows(sweep)
    col = head.index("cost ratio @ best quality")
    for r in body:
        s = by_name(d, first_text(r[0]))
        ratio, ci = s["cost_ratio_at_best_quality"], s["ci95"]["cost_ratio_at_best_quality"]
        doubt = s["kind"] != "baseline" and ratio is not None and (
            ratio >= 1 or ci[1] is None or ci[1] >= 1)
        assert ("no-saving" in (r[col].attrs.get("class") or "")) == doubt, s["name"]


def test_headings_and_cards_name_targets_in_words(result):
    d, page, _ = result
    root = dom(page)
    words = [h.text() for h in root.all("h2")] + [c.text() for c in root.all("div", class_="k")]
    words += [th.text() for th in root.all("th")]
    assert not [w for w in words if re.search(r"best_quality|budget:\d", w)], words
    keys = [c.text() for c in root.all("div", class_="k")]
    assert "ship for the best model's quality" in keys and "ship within 20% of its cost" in keys


def test_a_tie_up_to_rounding_ships_the_single_model():
    """A route-cascade that sends every query to the best model sums the same costs in another
    order: 0.08216957746478872 against the model's 0.08216957746478873 is a tie, not a saving."""
    c, q = 0.08216957746478873, 0.8125

    def winner(target: str, strategy: tuple[float, float], model: tuple[float, float]) -> int:
        cost, quality = np.array([strategy[0], model[0]]), np.array([strategy[1], model[1]])
        return pick(target, cost, quality, np.arange(2), simple=np.array([False, True]))

    assert winner("best_quality", (0.08216957746478872, q), (c, q)) == 1
    assert winner("best_quality", (c, q + 1e-15), (c, q)) == 1
    assert winner("budget:0.5", (c, q + 1e-15), (c, q)) == 1
    assert winner("budget:0.5", (c * (1 - 1e-12), q), (c, q)) == 1
    # a real difference still wins: 0.1% cheaper, or better quality at a budget
    assert winner("best_quality", (c * 0.999, q), (c, q)) == 0
    assert winner("budget:0.5", (c, q + 1e-3), (c, q)) == 0
    assert winner("budget:0.5", (c * 0.5, q - 1e-3), (c, q)) == 1  # a budget ranks quality first


# ---- --ship: the files are what was measured -------------------------------------------------------
def _live_matches_measured(path: Path, test: OutcomeTable, test_csv: Path, cost: np.ndarray,
                           quality: np.ndarray) -> None:
    """Load a written strategy file and check, query by query on test, that it calls what the
    replay measured: a router's choice, a cascade's whole run (through the replay provider)."""
    live = load_strategy(path)
    cfg = ponder.Config(providers={"replay": ponder.ProviderSettings(path=str(test_csv))})
    with ponder.Client(cfg, cache=False) as client:
        for i, query in enumerate(test.queries):
            request = ponder.ChatRequest.of(query)
            if live.kind == "router":
                decision, spec = live.decide(request)
                assert spec == f"replay:{decision.model}"
                model, paid = decision.model, test.costs[i, test.models.index(decision.model)]
            else:
                answer = live.run(request, client)
                model, paid = answer.completion.model, answer.cost_usd
            assert paid == pytest.approx(cost[i], rel=1e-9), (live.kind, i)
            assert test.scores[i, test.models.index(model)] == quality[i], (live.kind, i)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["router", "cascade", "route-cascade"])
def test_a_saved_setting_makes_the_decisions_measured(kind, tmp_path):
    from ponder.cascade import CascadeStrategy
    from ponder.routers._strategies import RouteCascadeStrategy

    df = table_df()  # answers a scorer can read, so the cascades mix models
    df["response"] = np.where(df["score"] == 1.0, "the answer is 42", "I am not sure, maybe 41")
    train, test = OutcomeTable.read(df).split(split_column="split")
    test_csv = tmp_path / "test.csv"
    test.df.to_csv(test_csv, index=False)
    s = {"router": lambda: RouterStrategy("router-utility", lambda: UtilityRouter()),
         "cascade": lambda: CascadeStrategy(n_budgets=6),
         "route-cascade": lambda: RouteCascadeStrategy(n_budgets=4, n_knobs=3)}[kind]().fit(train)
    # settings that mix models (a single-model setting would check little); for route-cascade,
    # routed ones and the plain cascade (λ = ∞), which ships as a cascade file
    mixed = [p for p in s.sweep(test) if len(set(p.cost.tolist())) > 1]
    if kind == "route-cascade":
        routed = [p for p in mixed if p.setting["knob"] is not None]
        plain = [p for p in mixed if p.setting["knob"] is None]
        assert routed and plain
        tried = routed[:2] + plain[:1]
    else:
        tried = mixed[:3]
    assert tried
    for k, p in enumerate(tried):
        path = s.save(p.setting, tmp_path / f"{kind}-{k}", name=f"{kind}-{k}")
        assert path.parent == tmp_path / f"{kind}-{k}"
        _live_matches_measured(path, test, test_csv, p.cost, p.quality)


@pytest.mark.slow
def test_eval_ship_writes_the_picks_and_their_config(tmp_path, monkeypatch):
    from ponder.cascade import CascadeStrategy

    monkeypatch.chdir(tmp_path)
    df = table_df()
    df.to_csv("outcomes.csv", index=False)
    test = OutcomeTable.read(df).split(split_column="split")[1]
    test.df.to_csv("test.csv", index=False)
    strategies = [RouterStrategy("router-utility", lambda: UtilityRouter()),
                  CascadeStrategy(n_budgets=6)]
    d = evaluate("outcomes.csv", strategies=strategies, n_bootstrap=0, epsilon=0.1,
                 ship_dir="ship").to_json()
    assert d["ship_dir"] == "ship"
    assert config_problems("ship/ponder.toml") == []
    toml = (tmp_path / "ship" / "ponder.toml").read_text()
    shipped = set()
    for e in d["ship"]:
        files = e["files"]
        assert files["name"] == ship_folder(e) and f"[strategies.{files['name']}]" in toml
        assert files["config"] == f'[strategies.{files["name"]}]\npath = "ship/{files["name"]}/strategy.json"'
        if e["same_as"]:
            continue
        shipped.add(e["strategy"])
        curve = next(s for s in d["strategies"] if s["name"] == e["strategy"])
        k = next(i for i, p in enumerate(curve["curve"]) if p["setting"] == e["setting"])
        assert curve["curve"][k]["quality"] == pytest.approx(e["test"]["quality"])
        if e["strategy"].startswith("model:"):
            assert load_strategy(files["strategy_file"]).models == [
                f"replay:{e['setting']['model']}"]
            continue
        s = next(x for x in strategies if x.name == e["strategy"])
        p = next(p for p in s.sweep(test) if p.setting == e["setting"])
        _live_matches_measured(Path(files["strategy_file"]), test, tmp_path / "test.csv",
                               p.cost, p.quality)
    assert shipped - {"model:a", "model:b"}  # a strategy ships here, not only single models
    assert json.loads((tmp_path / "ship" / "ship.json").read_text())[0]["target"] == TARGETS[0]


# ---- plot ------------------------------------------------------------------------------------------
def _curve_styles(svg: Node) -> dict[str, tuple[str, str]]:
    """id → (dash pattern, marker shape) of each strategy curve drawn in the SVG."""
    markers = {m.attrs["id"]: m.attrs.get("d", "") for m in svg.all("path") if "id" in m.attrs}
    out = {}
    for g in svg.all("g"):
        if not g.attrs.get("id", "").startswith("curve-"):
            continue
        line = g.all("path")[0]
        dash = re.search(r"stroke-dasharray:\s*([^;]+)", line.attrs.get("style", ""))
        uses = g.all("use")
        shape = markers.get((uses[0].attrs.get("xlink:href") or "").lstrip("#"), "") if uses else ""
        out[g.attrs["id"]] = (dash.group(1) if dash else "solid", shape)
    return out


def test_identical_curves_are_merged_and_the_others_stay_distinct(result):
    d, page, _ = result
    root = dom(page)
    svg = root.one("svg")
    groups = curve_groups(d)
    names = [[s["name"] for s in g] for g in groups]
    assert ["knob-a", "knob-b"] in names  # identical point for point
    assert ["knob-shifted"] in names and ["router-utility"] in names
    styles = _curve_styles(svg)
    assert len(styles) == len(groups)  # one line per group, no line hidden under another
    assert len(set(styles.values())) == len(styles)  # each its own dash + marker
    legend = " ".join(t.text() for t in svg.all("text"))
    assert "knob-a = knob-b (identical curves)" in legend
    assert "knob-shifted" in legend and "router-utility" in legend
    note = root.one("p", id="merged-curves").text()
    assert "knob-a = knob-b" in note and "knob-shifted" not in note


def test_the_plot_fills_its_card_and_names_models_only_in_the_legend(result):
    """The axes span the figure (the legend lies below them, not beside); single models are
    numbered dots, and their names are legend text, never written over the plot's markers."""
    d, page, _ = result
    svg = dom(page).one("svg")
    width = float(svg.attrs["viewbox"].split()[2])  # html.parser lowercases attribute names
    axes = svg.one("g", id="axes_1").one("g", id="patch_2").one("path").attrs["d"]
    xs = [float(v) for v in re.findall(r"([\d.]+) [\d.]+", axes)]
    assert (max(xs) - min(xs)) / width > 0.85
    legend = svg.one("g", id="legend_1")
    legend_text = [t.text() for t in legend.all("text")]
    in_legend = {id(t) for t in legend.all("text")}
    outside = [t.text() for t in svg.all("text") if id(t) not in in_legend]
    models = sorted(d["models"], key=lambda m: m["cost_usd"])
    for k, m in enumerate(models, start=1):
        name = m["model"] + (" (best)" if m["model"] == d["best_model"]["model"] else "")
        assert name in legend_text
        assert m["model"] not in outside  # not written on the axes
        assert str(k) in outside  # its number sits on its own dot


# ---- per-task tables ---------------------------------------------------------------------------------
def test_per_task_tables_fit_without_sideways_scroll(result):
    d, page, _ = result
    tables = [w.one("table") for w in dom(page).all("div", class_="task-table")]
    assert len(tables) == -(-len(TASKS) // TASKS_PER_TABLE) >= 2
    seen = []
    want = ([f"model:{m['model']}" for m in d["models"]] + ["oracle"]
            + [s["name"] for s in d["strategies"] if s["kind"] != "baseline"])
    for t in tables:
        assert not t.inside("div", "scroll") and "fit" in t.attrs.get("class", "").split()
        head, body = rows(t)
        assert len(head) <= TASKS_PER_TABLE + 1
        seen += [h.split(" (")[0] for h in head[1:]]
        assert sorted(first_text(r[0]) for r in body) == sorted(want)  # every strategy, each table
        for r in body:
            assert len(r) == len(head)
    assert seen == TASKS
    css = dom(page).one("head").one("style").text()
    assert "table.fit{table-layout:fixed}" in css and "overflow-wrap:anywhere" in css


# ---- AUC ---------------------------------------------------------------------------------------------
def test_single_models_show_no_auc_and_the_note_says_why(result):
    d, page, _ = result
    best = d["best_model"]["model"]
    assert by_name(d, f"model:{best}")["auc"] == 0.0  # the JSON keeps the number: 0 by construction
    root = dom(page)
    table = next(t for t in root.all("table") if "AUC (AIQ)" in [th.text() for th in t.all("th")])
    head, body = rows(table)
    col = head.index("AUC (AIQ)")
    for m in d["models"]:
        cell = next(r[col] for r in body if first_text(r[0]) == f"model:{m['model']}")
        assert first_text(cell) == "n/a †"  # never "0.000 †", which reads as a bug
    note = root.one("p", id="auc-note").text()
    assert note.startswith("† n/a for single models")
    assert f"({best}, here also the best) would score 0 by construction" in note
    strategy = next(r[col] for r in body if first_text(r[0]) == "knob-shifted")
    assert "†" not in strategy.text()  # the mark is for single models only


def test_markdown_says_what_to_ship_too(result):
    d, _, _ = result
    md = evaluate(table_df(), strategies=[Knob("knob-a"), Knob("knob-b")], n_bootstrap=20,
                  source="outcomes.csv").to_markdown()
    assert "## What to ship" in md and "Deploying every point" not in md
    assert "⚠ no saving within the 95% interval" in md and "n/a †" in md
    assert "`ponder eval outcomes.csv --ship ship`" in md and md.count("--ship ship") == 1
    assert md.count("| model / strategy |") == -(-len(TASKS) // TASKS_PER_TABLE)
    json.dumps(d)  # the picks are plain JSON


HOSTILE = {"a": "<script>alert(1)</script>", "b": "p|q&r $\\bad{$", "c": "x\ny`z"}


@pytest.mark.slow  # every default strategy, K-fold calibrated: over a second on 2 cores
def test_markdown_and_html_show_names_from_data_as_text():
    """Model and task names are data: rendered (GFM tables), the Markdown report shows each as
    text in its own cell, never as HTML (no <script> element), a '|' or a newline in a name
    splits no cell and breaks no row; the commands keep the name verbatim in code. The HTML
    report's plot labels the model as it is named (``$...$`` is no math to matplotlib there)."""
    from markdown_it import MarkdownIt

    from tests.evaluation.conftest import hand_rows

    rows_ = hand_rows()
    for r in rows_:
        r["model"] = HOSTILE[r["model"]]
        r["task"] = f"<b>{r['task']}</b>|t"
    res = evaluate(pd.DataFrame(rows_), n_bootstrap=10, source="outcomes.csv")
    svg_text = [t.text() for t in dom(res.to_html()).one("svg").all("text")]
    assert HOSTILE["b"] in svg_text and HOSTILE["a"] in svg_text
    for page in (MarkdownIt("commonmark").enable("table").render(res.to_markdown()),
                 res.to_html()):
        root = dom(page)
        assert not root.all("script") and not root.all("b")
        for table in root.all("table"):
            head, body = rows(table)
            assert all(len(tr) == len(head) for tr in body), head
        singles = next(t for t in root.all("table") if rows(t)[0][0] == "model")
        names = [tr[0].text().removesuffix(" ★").replace("\n", "") for tr in rows(singles)[1]]
        assert names[:3] == [m.replace("\n", "") for m in HOSTILE.values()]  # <br> is no text
        task_heads = [h for t in root.all("table") for h in rows(t)[0]]
        assert "<b>odd</b>|t (2)" in task_heads
        codes = [c.text() for c in root.all("code")]
        assert any(shlex.quote(f"PROVIDER:{HOSTILE['a']}") in c for c in codes)

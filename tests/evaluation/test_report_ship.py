"""The report says what to ship: checked in the generated HTML, parsed (no snapshot of the file).

- "What to ship" names, per target, the point chosen on train and the command that deploys it,
  and that command, run as printed, writes a strategy file that loads with the measured knob;
- every strategy × met target has its recipe;
- a saving whose bootstrap interval includes no saving is flagged, and only those;
- identical curves are drawn once with every name, the others each with their own marker+dash;
- the per-task tables fit the page (no sideways scroll) and list every model and strategy;
- a single model's AUC (the best model's 0.000 in particular) is explained.
"""

from __future__ import annotations

import json
import re
import shlex
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ponder._strategies import load_strategy
from ponder.cli import app
from ponder.evaluation import OperatingPoint, OutcomeTable, evaluate
from ponder.evaluation._deploy import TARGETS, budget_of, deploy_recipe
from ponder.evaluation._report import TASKS_PER_TABLE, curve_groups
from ponder.routers import UtilityRouter
from ponder.routers._strategies import RouterStrategy

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
def _expected_pick(d: dict, target: str) -> tuple[str, dict] | None:
    """Independently: among strategies and single models, the best on *train* for the target."""
    cand = [(s["name"], x) for s in d["strategies"]
            if s["kind"] != "baseline" or s["name"].startswith("model:")
            for x in s["deployed"] if x["target"] == target and x["met"]]
    if not cand:
        return None
    if budget_of(target) is None:
        return min(cand, key=lambda c: (c[1]["train"]["cost_usd"], -c[1]["train"]["quality"]))
    return max(cand, key=lambda c: (c[1]["train"]["quality"], -c[1]["train"]["cost_usd"]))


def test_ship_section_names_the_point_and_its_command_per_target(result):
    d, page, csv = result
    ship = dom(page).one("section", id="ship")
    head, body = rows(ship.one("table"))
    assert head == ["target", "ship (chosen on train)", "on test", "deploy it"]
    assert [first_text(r[0]) for r in body] == list(TARGETS)
    assert not ship.one("table").inside("div", "scroll")
    picks = set()
    for r in body:
        target = first_text(r[0])
        name, x = _expected_pick(d, target)
        same = [s["name"] for s in d["strategies"] for y in s["deployed"]
                if y["target"] == target and y["met"] and y["train"] == x["train"]]
        assert first_text(r[1]) in same  # a tie on train may go either way
        x = next(y for y in by_name(d, first_text(r[1]))["deployed"] if y["target"] == target)
        assert f"q {x['test']['quality']:.3f}" in first_text(r[2])  # the test figure, not train's
        codes = [c.text() for c in r[3].all("code")]
        recipe = x["deploy"]
        assert codes == [c for c in (recipe["command"], recipe["serve"]) if c]
        assert recipe["note"] in r[3].text()
        if first_text(r[1]) == "router-utility":
            assert str(csv) in codes[0] and codes[1].startswith("[strategies.router-utility]")
        picks.add(first_text(r[1]))
    assert picks - {"model:a", "model:b"}  # a strategy, not only single models


def test_the_printed_router_command_deploys(result, tmp_path, monkeypatch):
    d, page, csv = result
    x = next(y for y in by_name(d, "router-utility")["deployed"] if y["target"] == "budget:0.5")
    assert x["met"]
    cells = {first_text(r[0]): r for r in rows(dom(page).one("details", id="deploy-all")
                                               .one("table"))[1]
             if first_text(r[0]) == "router-utility" and first_text(r[1]) == "budget:0.5"}
    command, serve = [c.text() for c in cells["router-utility"][3].all("code")]
    argv = shlex.split(command)
    assert argv[:3] == ["ponder", "train", "router"] and str(csv) in argv
    assert float(argv[argv.index("--knob") + 1]) == pytest.approx(x["setting"]["knob"], rel=1e-5)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, argv[1:])
    assert res.exit_code == 0, res.output
    path = tmp_path / re.search(r'path = "([^"]+)"', serve).group(1)
    live = load_strategy(path)
    assert live.knob == pytest.approx(x["setting"]["knob"], rel=1e-5)  # the measured λ, pinned
    assert live.router.n_train_ == N and live.router.calibration_ is None  # every train row
    # the pinned λ on the router refitted on all train rows keeps the budget on test here too
    test = OutcomeTable.read(table_df()).split(split_column="split")[1]
    (_, cost, quality, _), = live.router.replay(test, [live.knob])
    assert cost.mean() <= 1.1 * x["budget_usd_test"]
    assert quality.mean() >= x["test"]["quality"] - 0.05


def test_every_deployed_point_has_a_recipe(result):
    d, page, _ = result
    _, body = rows(dom(page).one("details", id="deploy-all").one("table"))
    shown = {(first_text(r[0]), first_text(r[1])) for r in body}
    want = {(s["name"], x["target"]) for s in d["strategies"] if s["kind"] != "baseline"
            for x in s["deployed"] if x["met"]}
    assert shown == want and len(body) == len(want)
    for r in body:
        assert r[3].text().strip()  # a command or a note saying what to do instead


def test_recipes_per_kind():
    entry = {"target": "budget:0.2", "met": True, "budget_usd_train": 0.0012345,
             "train": {"cost_usd": 0.001, "quality": 0.8},
             "setting": {"budget_usd": 0.00111111, "chain": ["m1", "m2"], "thresholds": [0.5]}}
    random_split = {"method": "random", "test_fraction": 0.4, "seed": 3}
    r = deploy_recipe("cascade", "cascade", entry, source="my data.csv", split=random_split, seed=3)
    assert r["command"] == ("ponder optimize 'my data.csv' --budget 0.001112 --folds 3 --seed 3 "
                            "--test-fraction 0.4 -o ship/cascade-budget-0.2.json")
    assert "m1 › m2 [0.5]" in r["note"]
    model = deploy_recipe("model:m2", "baseline", {**entry, "setting": {"model": "m2"}},
                          source="x", split=random_split)
    assert model["command"] == "ponder serve --model PROVIDER:m2" and model["exact"]
    mix = deploy_recipe("random-mix", "baseline", {**entry, "setting": {"p_best": 0.2}},
                        source="x", split=random_split)
    assert mix["command"] is None and "not a strategy to ship" in mix["note"]
    own = deploy_recipe("my-router", "router", {**entry, "setting": {"knob": 0.5, "router": "knn"}},
                        source="x", split={"method": "column", "column": "split"})
    assert own["command"] is None and "Python API" in own["note"] and "knob=0.5" in own["note"]
    mine = deploy_recipe("router-knn", "router", {**entry, "setting": {"knob": 0.5, "router": "knn"}},
                         source="x", split={"method": "column", "column": "split"})
    assert mine["command"] == "ponder train router x --kind knn --knob 0.5 -o ship/router-knn-budget-0.2"
    rc = deploy_recipe("route-cascade", "route-cascade",
                       {**entry, "setting": {"chain": ["m1", "m2"], "thresholds": [0.5],
                                             "knob": 0.25}},
                       source="x", split={"method": "column", "column": "split"})
    assert "--models m1,m2 --budget 0.001235" in rc["command"]
    assert "--cascade ship/route-cascade-budget-0.2/cascade.json --knob 0.25" in rc["command"]
    rc = deploy_recipe("route-cascade", "route-cascade",
                       {**entry, "target": "best_quality",
                        "setting": {"chain": ["m1", "m2"], "thresholds": [0.5], "knob": None}},
                       source="x", split={"method": "column", "column": "split"},
                       reference_quality=0.75)
    assert "--target-quality 0.7500" in rc["command"] and "train router" not in rc["command"]
    assert "ship the cascade alone" in rc["note"]


# ---- flags ---------------------------------------------------------------------------------------
def test_savings_whose_interval_includes_none_are_flagged(result):
    d, page, _ = result
    root = dom(page)
    table = next(t for t in root.all("table") if [th.text() for th in t.all("th")][:2]
                 == ["strategy", "kind"] and "best_quality" in [th.text() for th in t.all("th")])
    head, body = rows(table)
    n_flagged = n_clear = 0
    for r in body:
        dep = {x["target"]: x for x in by_name(d, first_text(r[0]))["deployed"]}
        for target, td in zip(head[2:], r[2:], strict=True):
            flagged = "no-saving" in (td.attrs.get("class") or "").split()
            assert flagged == bool(dep[target].get("saving_in_doubt")), (first_text(r[0]), target)
            assert ("no saving" in td.text()) == flagged
            n_flagged += flagged
            n_clear += dep[target]["met"] and not flagged
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
    assert by_name(d, "model:b")["deployed"][0]["saving_in_doubt"]  # the best model saves nothing


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
def test_the_best_models_auc_is_explained(result):
    d, page, _ = result
    best = d["best_model"]["model"]
    assert by_name(d, f"model:{best}")["auc"] == 0.0  # the dearest model: 0 by construction
    root = dom(page)
    table = next(t for t in root.all("table") if "AUC (AIQ)" in [th.text() for th in t.all("th")])
    head, body = rows(table)
    col = head.index("AUC (AIQ)")
    cell = next(r[col] for r in body if first_text(r[0]) == f"model:{best}")
    assert first_text(cell) != "0.000" and "†" in cell.text() and "by construction" in cell.text()
    note = root.one("p", id="auc-note").text()
    assert note.startswith("†") and f"({best}, here also the best)" in note
    strategy = next(r[col] for r in body if first_text(r[0]) == "knob-shifted")
    assert "†" not in strategy.text()  # the mark is for single models only


def test_markdown_says_what_to_ship_too(result):
    d, _, _ = result
    md = evaluate(table_df(), strategies=[Knob("knob-a"), Knob("knob-b")], n_bootstrap=20,
                  source="outcomes.csv").to_markdown()
    assert "## What to ship" in md and "### Deploying every point" in md
    assert "⚠ no saving within the 95% interval" in md and "†" in md
    assert md.count("| model / strategy |") == -(-len(TASKS) // TASKS_PER_TABLE)
    json.dumps(d)  # the recipes are plain JSON


def test_a_tie_on_train_ships_the_single_model():
    from ponder.evaluation._report import _ship_choice

    def point(target, cost, quality):
        return {"target": target, "met": True, "train": {"cost_usd": cost, "quality": quality}}

    d = {"strategies": [
        {"name": "router-x", "kind": "router",
         "deployed": [point("best_quality", 2.0, 0.9), point("budget:0.5", 1.0, 0.8)]},
        {"name": "model:m", "kind": "baseline",
         "deployed": [point("best_quality", 2.0, 0.9), point("budget:0.5", 1.0, 0.7)]},
        {"name": "random-mix", "kind": "baseline", "deployed": [point("budget:0.5", 0.5, 0.95)]},
    ]}
    assert _ship_choice(d, "best_quality")[0]["name"] == "model:m"  # same figures, nothing to train
    assert _ship_choice(d, "budget:0.5")[0]["name"] == "router-x"  # better quality wins; the mix
    assert _ship_choice(d, "budget:0.1") is None                    # is a reference, never shipped


def test_a_tie_up_to_rounding_ships_the_single_model():
    """A route-cascade that sends every query to the best model sums the same costs in another
    order: 0.08216957746478872 against the model's 0.08216957746478873 is a tie, not a saving."""
    from ponder.evaluation._report import _ship_choice

    def point(target, cost, quality):
        return {"target": target, "met": True, "train": {"cost_usd": cost, "quality": quality}}

    def picks(strategy, model):
        d = {"strategies": [
            {"name": "route-cascade", "kind": "route-cascade", "deployed": [point(*strategy)]},
            {"name": "model:m", "kind": "baseline", "deployed": [point(*model)]}]}
        return _ship_choice(d, strategy[0])[0]["name"]

    c, q = 0.08216957746478873, 0.8125
    assert picks(("best_quality", 0.08216957746478872, q), ("best_quality", c, q)) == "model:m"
    assert picks(("best_quality", c, q + 1e-15), ("best_quality", c, q)) == "model:m"
    assert picks(("budget:0.5", c, q + 1e-15), ("budget:0.5", c, q)) == "model:m"
    assert picks(("budget:0.5", c * (1 - 1e-12), q), ("budget:0.5", c, q)) == "model:m"
    # a real difference still wins: 0.1% cheaper, or better quality at a budget
    assert picks(("best_quality", c * 0.999, q), ("best_quality", c, q)) == "route-cascade"
    assert picks(("budget:0.5", c, q + 1e-3), ("budget:0.5", c, q)) == "route-cascade"


HOSTILE = {"a": "<script>alert(1)</script>", "b": "p|q&r $\\bad{$", "c": "x\ny`z"}


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
        assert any(f"PROVIDER:{shlex.quote(HOSTILE['a'])}" in c for c in codes)

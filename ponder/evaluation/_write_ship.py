"""Writing what ships: each ship pick's strategy files, exactly as measured, and a
``ponder.toml`` that serves them (moved here from :mod:`._deploy`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ._deploy import budget_of
from ._strategy import Shippable, Strategy


# ---- writing what ships ------------------------------------------------------------------------
def ship_folder(entry: dict[str, Any]) -> str:
    """The folder (under the --ship directory) of a ship pick, named after the pick and its first
    target (``route-cascade-budget-20pct``); also its ``[strategies]`` name, so no dots."""
    first = entry.get("same_as") or entry["target"]
    f = budget_of(first)
    target = "best-quality" if f is None else f"budget-{100 * f:g}pct".replace(".", "_")
    text = f"{entry['strategy'].removeprefix('model:')}-{target}"
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-") or "strategy"


def _live_name(model: str, model_map: dict[str, str] | None) -> str:
    if model_map and model in model_map:
        return str(model_map[model])
    return model if ":" in model else f"replay:{model}"


def write_ship(ship: list[dict[str, Any]], fitted: dict[str, Strategy], directory: str | Path,
               *, model_map: dict[str, str] | None = None) -> None:
    """Write each distinct ship pick's strategy files, exactly as measured, into ``directory``,
    and a ``ponder.toml`` holding their ``[strategies]`` entries; record the paths in ``ship``."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    entries: list[str] = []
    for e in ship:
        folder = ship_folder(e)
        if e.get("same_as"):
            first = next(x for x in ship if x["target"] == e["same_as"])
            e["files"] = dict(first["files"]) if first.get("files") else None
            continue
        out = root / folder
        name = e["strategy"]
        try:
            if name.startswith("model:"):
                out.mkdir(parents=True, exist_ok=True)
                path = out / "strategy.json"
                doc = {"format": "ponder-strategy", "version": 1, "kind": "single",
                       "name": folder, "model": _live_name(e["setting"]["model"], model_map)}
                path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
            else:
                s = fitted.get(name)
                if not isinstance(s, Shippable):
                    raise NotImplementedError(f"the {name} strategy cannot write its files (it "
                                              "has no save(setting, directory))")
                path = Path(s.save(e["setting"], out, name=folder, model_map=model_map))
        except Exception as exc:  # noqa: BLE001 - said in the report; the other picks still ship
            e["files"] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        rel = path.relative_to(root).as_posix()
        e["files"] = {"folder": str(out), "strategy_file": str(path), "name": folder,
                      "config": f'[strategies.{folder}]\npath = "{root.as_posix()}/{rel}"'}
        targets = ", ".join(x["target"] for x in ship if ship_folder(x) == folder)
        entries.append(f"# {targets}: {name}\n[strategies.{folder}]\npath = \"{rel}\"\n")
    (root / "ponder.toml").write_text(
        "# Written by `ponder eval --ship`: the strategies it measured, one per pick (paths are "
        "relative to this file).\n# Serve one: ponder serve --config THIS_FILE, or ponder run "
        "--strategy FOLDER/strategy.json\n\n" + "\n".join(entries), encoding="utf-8")
    (root / "ship.json").write_text(json.dumps(jsonable(ship), indent=1) + "\n", encoding="utf-8")


def jsonable(x: Any) -> Any:
    """A JSON-able copy: numpy values as Python ones, non-finite numbers as None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [jsonable(v) for v in x.tolist()]
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if np.isfinite(v) else None
    if x is None or isinstance(x, (str, int)):
        return x
    return str(x)

"""Gauges parts of the process report, as Prometheus text: below both the local engine (which
registers its queue) and the server (whose ``/metrics`` adds them), so neither knows the other."""

from __future__ import annotations

import math
import weakref
from collections import defaultdict
from collections.abc import Iterable
from typing import Protocol

__all__ = ["GaugeSource", "gauge_lines", "prom_labels", "prom_number", "register_gauges",
           "unregister_gauges"]


_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", '"': '\\"'})


def prom_labels(**kw: str) -> str:
    """``{k="v",...}`` with the values escaped as the Prometheus text format wants."""
    return "{" + ",".join(f'{k}="{v.translate(_ESCAPES)}"' for k, v in kw.items()) + "}"


def prom_number(x: float) -> str:
    """A sample value: ``+Inf``, a whole number without ``.0``, else the float's repr."""
    if math.isinf(x):
        return "+Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class GaugeSource(Protocol):
    """Something in the process that reports its own gauges (e.g. the local provider's queue)."""

    def gauges(self) -> Iterable[tuple[str, str, dict[str, str], float]]:
        """(metric name, help text, labels, value) rows."""
        ...


_gauge_sources: weakref.WeakSet[GaugeSource] = weakref.WeakSet()


def register_gauges(source: GaugeSource) -> None:
    """Add ``source``'s gauges to every scrape while it lives (held weakly) or until unregistered."""
    _gauge_sources.add(source)


def unregister_gauges(source: GaugeSource) -> None:
    _gauge_sources.discard(source)


def gauge_lines() -> list[str]:
    """Registered gauges as exposition lines; equal name and labels (two sources) are summed."""
    helps: dict[str, str] = {}
    values: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    for source in list(_gauge_sources):
        for name, help_, labels, value in source.gauges():
            helps.setdefault(name, help_)
            values[name][prom_labels(**labels)] += value
    out: list[str] = []
    for name in sorted(values):
        out += [f"# HELP {name} {helps[name]}", f"# TYPE {name} gauge"]
        out += [f"{name}{key} {prom_number(v)}" for key, v in sorted(values[name].items())]
    return out

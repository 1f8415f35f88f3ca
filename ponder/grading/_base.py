"""What every grader returns, and the one method every grader has."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Grade:
    """``score`` in [0, 1], or NaN when the grader could not decide; ``cost_usd``, ``calls`` and
    ``cached``: a judge's spending, never part of the graded model's cost."""

    score: float
    reason: str = ""
    cost_usd: float = 0.0
    calls: int = 0
    cached: int = 0

    @property
    def graded(self) -> bool:
        return not math.isnan(self.score)


@runtime_checkable
class Grader(Protocol):
    """Grades one response to one row (its columns). Optional: ``requires`` (columns every row
    must fill) and ``agrade`` (else async runs call ``grade`` in a worker thread)."""

    name: str

    def grade(self, response: str, row: Mapping[str, Any]) -> Grade: ...


@runtime_checkable
class AsyncGrader(Grader, Protocol):
    async def agrade(self, response: str, row: Mapping[str, Any]) -> Grade: ...


def text(value: Any) -> str:
    """A cell as text: '' for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def correct(ok: bool, reason: str) -> Grade:
    return Grade(1.0 if ok else 0.0, reason)

"""The tool-call grader: did the answer (the row's ``tool_calls``) call the functions its
``reference`` names, with the same arguments?"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ._base import Grade, correct

Call = tuple[str, Any]  # (function name, arguments in canonical form)


def _canon(value: Any) -> Any:
    """A hashable form of a JSON value: key order does not count, ``1`` equals ``1.0``, ``true``
    does not equal ``1``."""
    if isinstance(value, dict):
        return ("object", frozenset((str(k), _canon(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("array", tuple(_canon(v) for v in value))
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("number", Fraction(value) if math.isfinite(value) else repr(float(value)))
    return ("other", repr(value))


def _one(call: Any) -> tuple[str, Any]:
    """An OpenAI tool call or ``{"name", "arguments"}`` as (name, arguments object), else
    ValueError. Arguments may be JSON text (as OpenAI sends them); missing ones are ``{}``."""
    if not isinstance(call, dict):
        raise ValueError(f"a tool call must be an object, got {json.dumps(call)[:40]}")
    inner = call.get("function")
    fn: dict[str, Any] = inner if isinstance(inner, dict) else call
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("a tool call needs a function name")
    args = fn.get("arguments")
    if args is None or (isinstance(args, str) and not args.strip()):
        return name, {}
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name}: arguments are not JSON ({exc.msg})") from None
    if not isinstance(args, dict):
        raise ValueError(f"{name}: arguments are not a JSON object")
    return name, args


def expected_calls(reference: Any) -> list[tuple[str, Any]]:
    """The calls a reference expects: a (JSON) list of tool calls (``[]``: none), one call, or an
    assistant message with ``tool_calls``; else ValueError."""
    value = reference
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc.msg})") from None
    if isinstance(value, dict) and "tool_calls" in value:
        value = value["tool_calls"] or []
    items = value if isinstance(value, list) else [value]
    return [_one(c) for c in items]


def _difference(want: Any, got: Any, where: str = "") -> str:
    """Where two argument values first differ, in a few words."""
    if isinstance(want, dict) and isinstance(got, dict):
        for key in sorted(set(want) | set(got)):
            path = f"{where}.{key}" if where else str(key)
            if key not in got:
                return f"{path} is missing"
            if key not in want:
                return f"{path} is not expected"
            if _canon(want[key]) != _canon(got[key]):
                return _difference(want[key], got[key], path)
    return f"{where or 'arguments'}: expected {json.dumps(want)[:40]}, got {json.dumps(got)[:40]}"


@dataclass
class ToolCallGrader:
    """1 when the answer's tool calls are the reference's: the same functions with JSON-equal
    arguments, in any order (parallel calls), none missing or extra; call ids are ignored."""

    name: str = "tool_call"
    requires: tuple[str, ...] = ("reference",)
    columns: tuple[str, ...] = ("tool_calls",)  # the table must have these (they may be empty)

    def grade(self, response: str, row: Mapping[str, Any]) -> Grade:
        from ..evaluation._table import parse_tool_calls  # pandas: only when used
        try:
            want = expected_calls(row.get("reference"))
        except ValueError as exc:
            return Grade(math.nan, f"the reference is not a tool call: {exc}")
        try:
            calls = parse_tool_calls(row.get("tool_calls"))
        except ValueError as exc:
            return Grade(math.nan, str(exc))
        try:
            got = [_one(call) for call in calls]
        except ValueError as exc:
            return Grade(0.0, f"a call is malformed: {exc}")
        expected = Counter((n, _canon(a)) for n, a in want)
        made = Counter((n, _canon(a)) for n, a in got)
        if expected == made:
            names = ", ".join(n for n, _ in want)
            return correct(True, f"called {names} as expected" if want else "called no tool, as expected")
        if not got:
            return Grade(0.0, f"called no tool; expected {', '.join(n for n, _ in want)}")
        if not want:
            return Grade(0.0, f"expected no tool call; called {', '.join(n for n, _ in got)}")
        missing, extra = expected - made, made - expected
        for name, _ in missing:  # the same function with other arguments: say where they differ
            wrong = next((a for n, a in got if n == name and (n, _canon(a)) in extra), None)
            if wrong is not None:
                right = next(a for n, a in want if n == name and (n, _canon(a)) in missing)
                return Grade(0.0, f"{name}: {_difference(right, wrong)}"[:200])
        parts = [f"{what} {', '.join(sorted(n for n, _ in calls.elements()))}"
                 for what, calls in (("missing", missing), ("unexpected", extra)) if calls]
        return Grade(0.0, "; ".join(parts)[:200])

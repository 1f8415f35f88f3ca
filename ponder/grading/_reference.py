"""Rule-based graders: exact text, multiple-choice letter, number, regex, JSON; pure, no I/O."""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._answers import extract_choice, extract_number  # one set of answer rules for ponder
from .._exceptions import ConfigError, PonderError
from .._verify import compile_schema
from ._base import Grade, correct, text

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation + "‘’“”")


def normalize_text(s: str) -> str:
    """Lower case, no punctuation, no articles (a/an/the), single spaces (SQuAD-style)."""
    s = str(s).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


@dataclass
class ExactMatch:
    """1 when the response equals the row's ``reference`` after :func:`normalize_text`."""

    name: str = "exact"
    requires: tuple[str, ...] = ("reference",)

    def grade(self, response: str, row: Mapping[str, Any]) -> Grade:
        got, want = normalize_text(response), normalize_text(text(row.get("reference")))
        return correct(got == want, "matches the reference" if got == want else f"expected {want[:40]!r}")


@dataclass
class ChoiceGrader:
    """1 when the response picks the reference's letter (A–J)."""

    name: str = "choice"
    requires: tuple[str, ...] = ("reference",)

    def grade(self, response: str, row: Mapping[str, Any]) -> Grade:
        want = extract_choice(text(row.get("reference")))
        if want is None:
            return Grade(math.nan, "the reference is not a choice letter A-J")
        got = extract_choice(response)
        if got is None:
            return Grade(0.0, "no choice letter found")
        return correct(got == want, f"chose {got}" + ("" if got == want else f", expected {want}"))


@dataclass
class NumberGrader:
    """1 when the response's number equals the reference's within ``tolerance`` (relative, and
    absolute below 1)."""

    tolerance: float = 1e-6
    name: str = "number"
    requires: tuple[str, ...] = ("reference",)

    def grade(self, response: str, row: Mapping[str, Any]) -> Grade:
        want = extract_number(text(row.get("reference")))
        if want is None:
            return Grade(math.nan, "the reference has no number")
        got = extract_number(response)
        if got is None:
            return Grade(0.0, "no number found")
        ok = math.isclose(got, want, rel_tol=self.tolerance, abs_tol=self.tolerance)
        return correct(ok, f"got {got:g}" + ("" if ok else f", expected {want:g}"))


@dataclass
class RegexGrader:
    """1 when ``pattern`` is found in the response. ``{reference}`` in the pattern stands for the
    row's reference, matched literally."""

    pattern: str
    name: str = "regex"
    requires: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if "{reference}" in self.pattern:
            self.requires = ("reference",)
        try:
            re.compile(self.pattern.replace("{reference}", ""))
        except re.error as exc:
            raise ConfigError(f"invalid regular expression {self.pattern!r}: {exc}",
                              key="grader") from None

    def grade(self, response: str, row: Mapping[str, Any]) -> Grade:
        pattern = self.pattern.replace("{reference}", re.escape(text(row.get("reference"))))
        hit = re.search(pattern, response, re.MULTILINE)
        return correct(hit is not None, "pattern found" if hit else "pattern not found")


_FENCE_JSON = re.compile(r"```(?:json)?\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def _row_format(row: Mapping[str, Any]) -> tuple[str | None, Any, str | None]:
    """What a row asks of its answer's JSON: (``"json_object"``, ``"schema"`` or None, the
    validator, or why the row's own schema or format cannot be used). Its ``schema`` cell comes
    first, else its ``response_format`` (as ``ponder collect`` records it)."""
    def cell(column: str) -> tuple[Any, str | None]:
        value = row.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            return None, None
        if isinstance(value, str):
            try:
                return json.loads(value), None
            except json.JSONDecodeError as exc:
                return None, f"the row's {column} is not JSON ({exc.msg})"
        return value, None

    schema, bad = cell("schema")
    strict = False
    if schema is None and bad is None:
        fmt, bad = cell("response_format")
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind == "json_object":
            return "json_object", None, None
        spec = fmt.get("json_schema") if kind == "json_schema" else None
        if not isinstance(spec, dict) or spec.get("schema") is None:
            return None, None, bad
        schema, strict = spec["schema"], bool(spec.get("strict"))
    if bad is not None:
        return None, None, bad
    if not isinstance(schema, dict):
        return None, None, "the row's schema is not a JSON Schema object"
    validator, problem = compile_schema(schema, strict)
    if problem is not None:
        return None, None, "the row's schema " + f"is not a valid JSON Schema: {problem}"[:200]
    return "schema", validator, None


@dataclass
class JsonGrader:
    """1 when the response (or its fenced ```json block) is valid JSON, and valid against the
    schema file given, else the row's own (see :func:`_row_format`; an invalid one: NaN)."""

    schema: str | Path | None = None
    name: str = "json"
    requires: tuple[str, ...] = ()
    _validator: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.schema is None:
            return
        path = Path(self.schema)
        try:
            doc = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise ConfigError("JSON Schema file not found", file=str(path)) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read the JSON Schema: {exc}", file=str(path)) from None
        try:
            self._validator, problem = compile_schema(doc)
        except ImportError:
            raise PonderError("grading against a JSON Schema needs the 'jsonschema' package "
                              "(pip install jsonschema); plain 'json' checks validity only") from None
        if problem is not None:
            raise ConfigError(f"not a valid JSON Schema: {problem}", file=str(path))

    def grade(self, response: str, row: Mapping[str, Any]) -> Grade:
        fenced = _FENCE_JSON.search(response)
        body = fenced.group(1) if fenced else response
        try:
            value = json.loads(body)
        except json.JSONDecodeError as exc:
            return Grade(0.0, f"invalid JSON: {exc.msg}")
        own = self._validator is not None
        kind, validator, problem = ("schema", self._validator, None) if own else _row_format(row)
        if problem is not None:
            return Grade(math.nan, problem)
        if kind == "json_object":
            ok = isinstance(value, dict)
            return correct(ok, "a valid JSON object" if ok else "valid JSON, but not an object")
        if validator is None:
            return Grade(1.0, "valid JSON")
        error = next(iter(validator.iter_errors(value)), None)
        if error is None:
            return Grade(1.0, "valid JSON matching the " + ("schema" if own else "row's schema"))
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        return Grade(0.0, f"schema: {where}: {error.message}"[:200])

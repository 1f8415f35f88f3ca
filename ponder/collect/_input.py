"""The prompt file: every row read and validated before anything is paid (:func:`read_prompts`)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .._exceptions import DataError
from .._jsonl import iter_jsonl
from .._types import ChatRequest
from .._verify import compile_schema
from ..providers._replay import query_key


@dataclass(frozen=True)
class CollectPrompt:
    """One validated input row."""

    id: str
    request: ChatRequest
    query: str
    reference: str | None = None
    task: str | None = None
    tests: str | None = None
    row: int = 0


Err = Callable[..., DataError]  # DataError(reason, column=...) for one row of one file


def blank(v: Any) -> bool:
    """Whether a cell is empty: None, NaN (a gap in a table) or whitespace."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _text(v: Any, err: Err, column: str) -> str | None:
    if blank(v):
        return None
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        return str(v)
    raise err(f"must be a string (got {type(v).__name__})", column=column)


def _listish(v: Any) -> list[Any] | None:
    if isinstance(v, list):
        return v
    tolist = getattr(v, "tolist", None)  # numpy arrays from Parquet
    return tolist() if callable(tolist) and not isinstance(v, str) else None


def _native(v: Any) -> Any:
    """A cell's value with numpy arrays (Parquet's lists) turned into lists, all the way down."""
    if isinstance(v, dict):
        return {k: _native(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)) or getattr(v, "ndim", 0) > 0:
        return [_native(x) for x in v]
    return v


def _json_value(obj: dict[str, Any], column: str, err: Err, *, words: bool = False) -> Any:
    """A cell that holds JSON (JSON text in a CSV), or None when blank. With ``words``, a string
    that is not a JSON object is a word (``tool_choice: auto``)."""
    v = obj.get(column)
    if blank(v):
        return None
    if isinstance(v, str):
        if words and not v.strip().startswith("{"):
            return v.strip()
        try:
            return _native(json.loads(v))
        except json.JSONDecodeError as exc:
            raise err(f"not JSON: {exc.msg}", column=column) from None
    return _native(v)


def _schema_problem(schema: Any) -> str | None:
    if not isinstance(schema, dict):
        return "must be a JSON Schema object"
    problem = compile_schema(schema)[1]
    return None if problem is None else f"is not a valid JSON Schema: {problem}"


_TOOL_CHOICES = ("auto", "none", "required")
_FORMATS = ("text", "json_object", "json_schema")


def _request_fields(obj: dict[str, Any], err: Err) -> dict[str, Any]:
    """The row's ``tools``, ``tool_choice`` and ``response_format``, checked as OpenAI checks them
    (a bad one fails the row before anything is paid, not every call to every model)."""
    out: dict[str, Any] = {}
    tools = _json_value(obj, "tools", err)
    if tools is not None:
        if not isinstance(tools, list) or not tools:
            raise err("must be a non-empty list of {type: function, function: {name, parameters}}",
                      column="tools")
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or tool.get("type", "function") != "function":
                raise err(f"tools[{i}] must be {{type: function, function: {{name, parameters}}}}",
                          column="tools")
            if not isinstance(fn.get("name"), str) or not fn["name"]:
                raise err(f"tools[{i}].function.name must be a non-empty string", column="tools")
            if "parameters" in fn and (problem := _schema_problem(fn["parameters"])):
                raise err(f"tools[{i}].function.parameters {problem}", column="tools")
        out["tools"] = tools
    choice = _json_value(obj, "tool_choice", err, words=True)
    if choice is not None:
        names = [t["function"]["name"] for t in tools or []]
        named = isinstance(choice, dict) and choice.get("type") == "function"
        wanted = (choice.get("function") or {}).get("name") if named else None
        if wanted is None and choice not in _TOOL_CHOICES:
            raise err("must be auto, none, required or {type: function, function: {name}}",
                      column="tool_choice")
        if wanted is not None and wanted not in names:
            raise err(f"names {wanted!r}, which is not in the row's tools", column="tool_choice")
        if not names:
            raise err("needs the row's tools", column="tool_choice")
        out["tool_choice"] = choice
    fmt = _json_value(obj, "response_format", err)
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") not in _FORMATS:
            raise err("must be {type: text}, {type: json_object} or {type: json_schema, json_schema: "
                      "{name, schema}}", column="response_format")
        if fmt["type"] == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise err("json_schema needs {name, schema}", column="response_format")
            if "schema" in spec and (problem := _schema_problem(spec["schema"])):
                raise err(f"json_schema.schema {problem}", column="response_format")
        out["response_format"] = fmt
    return out


def _parse_prompt(obj: dict[str, Any], path: Path, row: int) -> CollectPrompt:
    err: Err = partial(DataError, file=str(path), row=row)
    rid = _text(obj.get("id"), err, "id")
    if rid is None:
        raise err("is missing or empty", column="id")
    fields = _request_fields(obj, err)
    if not blank(obj.get("messages")):
        column, value = "messages", obj["messages"]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise err(f"not a JSON list of messages: {exc.msg}", column=column) from None
        msgs = _listish(value)
        if not msgs:
            raise err("must be a non-empty list of {role, content} messages", column=column)
        source: str | list[Any] = _native(msgs)
    elif not blank(obj.get("prompt")):
        column, value = "prompt", obj["prompt"]
        if not isinstance(value, str):
            raise err(f"must be a string (got {type(value).__name__})", column="prompt")
        source = value
    else:
        raise err("needs a 'prompt' or 'messages' value", column="prompt")
    try:
        request = ChatRequest.of(source, **fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        where = str(first["loc"][0]) if first["loc"] else ""
        raise err(f"{first['msg']} (at {loc})", column=where if where in fields else column) from None
    tests = obj.get("tests")
    if (items := _listish(tests)) is not None:
        if not all(isinstance(t, str) for t in items):
            raise err("must be a string or a list of strings", column="tests")
        tests = "\n".join(items)
    reference = _native(obj.get("reference"))
    if isinstance(reference, (dict, list)):
        # a structured reference (the tool calls expected, a JSON answer) is kept as JSON text
        reference = json.dumps(reference, ensure_ascii=False)
    return CollectPrompt(id=rid, request=request, query=query_key(request), row=row,
                         reference=_text(reference, err, "reference"),
                         task=_text(obj.get("task"), err, "task"), tests=_text(tests, err, "tests"))


def _input_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row, cells) of a prompt file: a JSONL row is its line, a table's its 1-based data row."""
    from ..evaluation._table import read_frame, table_format  # one table reader; pandas: when used

    if table_format(path) == "jsonl":
        yield from iter_jsonl(path)
        return
    for i, rec in enumerate(read_frame(path, text=True).to_dict("records"), start=1):
        yield i, {str(k): v for k, v in rec.items()}


def read_prompts(path: str | Path) -> list[CollectPrompt]:
    """Every row of a JSONL, CSV or Parquet prompt file, validated before anything is paid: ``id``,
    ``prompt`` or ``messages`` (JSON in a CSV cell); optional ``reference`` (text or JSON), ``task``,
    ``tests``, and ``tools``, ``tool_choice`` (or a bare ``auto``) and ``response_format`` as OpenAI's."""
    return as_prompts(Path(path))


PromptsIn = str | Path | Sequence[CollectPrompt | dict[str, Any]]


def as_prompts(prompts: PromptsIn) -> list[CollectPrompt]:
    """A prompt file, or rows (dicts or :class:`CollectPrompt`) given in Python, validated."""
    path = Path(prompts) if isinstance(prompts, (str, Path)) else Path("<prompts>")
    rows = _input_rows(path) if isinstance(prompts, (str, Path)) else enumerate(prompts, start=1)
    out: list[CollectPrompt] = []
    seen: dict[str, int] = {}
    for row, p in rows:
        cp = p if isinstance(p, CollectPrompt) else _parse_prompt(dict(p), path, row)
        if cp.id in seen:
            raise DataError(f"duplicate id {cp.id!r} (first in row {seen[cp.id]})", file=str(path),
                            row=row, column="id")
        seen[cp.id] = row
        out.append(cp)
    if not out:
        raise DataError("no prompts", file=str(path))
    return out

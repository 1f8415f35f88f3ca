"""Hard checks of an answer against its request, on every cascade rung's answer before its scorer
(no scorer can talk its way past them): not empty, ``response_format``, ``tools``, ``tool_choice``.
Failures read ``"json_schema: $.age: 'x' is not of type 'integer'"``; the names are scorer features.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from ._types import ChatRequest, Choice

__all__ = ["CHECKS", "verify", "verify_text"]

# Every check's name: the part of a failure before the colon.
CHECKS = ("empty", "refusal", "json", "json_schema", "tool_choice", "tool_name", "tool_arguments",
          "tool_schema")


def _strict(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` wherever unsaid (OpenAI's strict mode)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (out.get("type") == "object" or "properties" in out) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=256)
def _compiled(schema_json: str) -> tuple[Any, str | None]:
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return None, exc.message
    return cls(schema), None


def compile_schema(schema: Any, strict: bool = False) -> tuple[Any, str | None]:
    """(validator, None), or (None, why the schema itself is not valid): one check for the
    verifiers, the JSON grader and ``ponder collect``'s input (``strict``: see :func:`_strict`)."""
    return _compiled(json.dumps(_strict(schema) if strict else schema, sort_keys=True))


def _schema_error(value: Any, schema: dict[str, Any], strict: bool) -> str | None:
    validator = compile_schema(schema, strict)[0]
    if validator is None:  # the request's fault, not the answer's
        return None
    error = next(iter(sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))), None)
    return None if error is None else f"{error.json_path}: {error.message}"[:200]


def _json_object(text: str) -> tuple[Any, str | None]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg} at char {exc.pos})"
    return value, None


def verify_text(request: ChatRequest, text: str) -> str | None:
    """The ``response_format`` check on an answer's text, or None when it passes (or none applies)."""
    fmt = request.response_format or {}
    kind = fmt.get("type")
    if kind not in ("json_object", "json_schema"):
        return None
    value, bad = _json_object(text)
    if bad is not None:
        return f"json: {bad}"
    if kind == "json_object":
        return None if isinstance(value, dict) else "json: not a JSON object"
    spec = fmt.get("json_schema") or {}
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        return None
    problem = _schema_error(value, schema, bool(spec.get("strict")))
    return f"json_schema: {problem}" if problem else None


def _tool_calls(request: ChatRequest, calls: tuple[dict[str, Any], ...]) -> str | None:
    tools = {str((t.get("function") or {}).get("name")): t.get("function") or {} for t in request.tools or ()}
    choice = request.tool_choice
    if choice == "none" and calls:
        return "tool_choice: tool_choice is 'none' but the answer calls a tool"
    if choice == "required" and not calls:
        return "tool_choice: tool_choice is 'required' but the answer calls no tool"
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        if not calls or any((c.get("function") or {}).get("name") != wanted for c in calls):
            return f"tool_choice: tool_choice names {wanted!r} but the answer does not call only it"
    for i, call in enumerate(calls):
        fn = call.get("function") or {}
        name = fn.get("name")
        if request.tools is not None and name not in tools:
            return f"tool_name: call {i} names {name!r}, which is not in tools"
        value, bad = _json_object(fn.get("arguments") or "")
        if bad is not None or not isinstance(value, dict):
            return f"tool_arguments: call {i} ({name}): {bad or 'not a JSON object'}"
        params = tools.get(str(name), {}).get("parameters")
        if isinstance(params, dict):
            problem = _schema_error(value, params, bool(tools[str(name)].get("strict")))
            if problem:
                return f"tool_schema: call {i} ({name}): {problem}"
    return None


def verify(request: ChatRequest, answer: Choice, *, final: bool = False) -> str | None:
    """The first check ``answer`` fails (``"name: detail"``), or None; ``final``: the last rung's,
    where a refusal is the answer."""
    if answer.refusal and not final:
        return "refusal: the model refused"
    if answer.tool_calls or request.tools:
        problem = _tool_calls(request, answer.tool_calls)
        if problem:
            return problem
    if answer.tool_calls:
        return None
    if not answer.text.strip():
        return "refusal: the model refused" if answer.refusal else "empty: no text and no tool call"
    return verify_text(request, answer.text)

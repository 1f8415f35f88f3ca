"""Grader specs as the CLI and the config write them: ``number``, ``regex:PATTERN``, ``judge:openai:gpt-4o``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError
from ._base import Grader
from ._code import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, CodeGrader
from ._judge import JudgeGrader
from ._reference import ChoiceGrader, ExactMatch, JsonGrader, NumberGrader, RegexGrader
from ._tools import ToolCallGrader

GRADER_SPECS = ("exact", "choice", "number", "regex:PATTERN", "json", "json:SCHEMA.json", "tool_call",
                "code", "judge:PROVIDER:MODEL")


def parse_grader(
    spec: str,
    *,
    client: Any = None,
    tolerance: float = 1e-6,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    allow_code_execution: bool = False,
    allow_no_isolation: bool = False,
    baseline: str | None = None,
    templates: Mapping[str, str] | None = None,
    judge_max_tokens: int | None = 1024,
) -> Grader:
    """Build the grader a spec names (one of :data:`GRADER_SPECS`); the options go to the
    graders that use them. Raises ConfigError for an unknown spec."""
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    if kind in ("exact", "choice", "number", "code", "tool_call") and arg:
        raise ConfigError(f"grader {kind!r} takes no argument (got {spec!r})", key="grader")
    if kind == "exact":
        return ExactMatch()
    if kind == "choice":
        return ChoiceGrader()
    if kind == "number":
        return NumberGrader(tolerance=tolerance)
    if kind == "regex":
        if not arg:
            raise ConfigError("the regex grader needs a pattern: regex:PATTERN", key="grader")
        return RegexGrader(arg)
    if kind == "json":
        return JsonGrader(Path(arg) if arg else None)
    if kind == "tool_call":
        return ToolCallGrader()
    if kind == "code":
        return CodeGrader(timeout_s=timeout_s, memory_mb=memory_mb,
                          allow_code_execution=allow_code_execution,
                          allow_no_isolation=allow_no_isolation)
    if kind == "judge":
        if ":" not in arg:
            raise ConfigError(f"the judge grader needs a model: judge:provider:model (got {spec!r})",
                              key="grader")
        return JudgeGrader(arg, client=client, baseline=baseline, templates=dict(templates or {}),
                           max_tokens=judge_max_tokens, name=f"judge:{arg}")
    raise ConfigError(f"unknown grader {spec!r}; use one of {', '.join(GRADER_SPECS)}", key="grader")


def parse_graders(specs: Mapping[str, str], **options: Any) -> dict[str, Grader]:
    """``{task: spec}`` (a config's ``[graders]``, ``default`` for other tasks) to graders.

    One judge grader object is shared by every task that names the same spec."""
    built: dict[str, Grader] = {}
    out: dict[str, Grader] = {}
    for task, spec in specs.items():
        try:
            if spec not in built:
                built[spec] = parse_grader(spec, **options)
        except ConfigError as exc:
            raise ConfigError(exc.reason, file=exc.file, key=f"graders.{task}") from None
        out[task] = built[spec]
    return out

"""Grader specs as the CLI and the config write them: ``number``, ``regex:PATTERN``, ``judge:openai:gpt-4o``.
``register_grader`` is the one list of graders that parsing, its errors and ``--help`` read."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError
from ._base import Grader
from ._code import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, CodeGrader
from ._judge import JudgeGrader
from ._reference import ChoiceGrader, ExactMatch, JsonGrader, NumberGrader, RegexGrader
from ._tools import ToolCallGrader

Build = Callable[[str, dict[str, Any]], Grader]


@dataclass(frozen=True)
class GraderKind:
    specs: tuple[str, ...]  # how a spec names it: "regex:PATTERN"
    about: str  # what it does, for `ponder grade --help` ("" for nothing to add)
    build: Build  # (the spec's argument, parse_grader's options) -> the grader


GRADERS: dict[str, GraderKind] = {}


def register_grader(kind: str, *specs: str, about: str = "") -> Callable[[Build], Build]:
    """Register ``build(arg, parse_grader's options and the spec)`` for ``kind`` (or ``kind:ARG``);
    a kind none of whose ``specs`` has a ``:`` takes no argument."""

    def add(build: Build) -> Build:
        GRADERS[kind] = GraderKind(specs or (kind,), about, build)
        return build

    return add


def grader_specs() -> tuple[str, ...]:
    """How every registered grader is written (``exact``, ``regex:PATTERN``, …)."""
    return tuple(s for g in GRADERS.values() for s in g.specs)


def grader_help() -> str:
    """Every grader, with what it does, as one sentence's list (``ponder grade --help``)."""
    parts = [" or ".join(g.specs) + (f" ({g.about})" if g.about else "") for g in GRADERS.values()]
    return ", ".join(parts[:-1]) + ", and " + parts[-1] if len(parts) > 1 else "".join(parts)


register_grader("exact")(lambda arg, o: ExactMatch())
register_grader("choice", about="letter A-J")(lambda arg, o: ChoiceGrader())
register_grader("number", about="last number or \\boxed{}; --tolerance")(
    lambda arg, o: NumberGrader(tolerance=o["tolerance"]))


@register_grader("regex", "regex:PATTERN")
def _regex(arg: str, o: dict[str, Any]) -> Grader:
    if not arg:
        raise ConfigError("the regex grader needs a pattern: regex:PATTERN", key="grader")
    return RegexGrader(arg)


register_grader("json", "json", "json:SCHEMA.json",
                about="without a file: the row's `schema` or `response_format` when it has one")(
    lambda arg, o: JsonGrader(Path(arg) if arg else None))
register_grader("tool_call", about="the answer's `tool_calls` against the reference's calls: same "
                                   "functions, JSON-equal arguments, any order")(
    lambda arg, o: ToolCallGrader())


@register_grader("code", about="runs the response's Python against `tests`")
def _code(arg: str, o: dict[str, Any]) -> Grader:
    return CodeGrader(timeout_s=o["timeout_s"], memory_mb=o["memory_mb"],
                      allow_code_execution=o["allow_code_execution"],
                      allow_no_isolation=o["allow_no_isolation"])


@register_grader("judge", "judge:PROVIDER:MODEL",
                 about="an LLM: yes/no against the reference, else a 1-10 rubric; --pairwise "
                       "BASELINE compares with the baseline model's answer, in both orders")
def _judge(arg: str, o: dict[str, Any]) -> Grader:
    if ":" not in arg:
        raise ConfigError(f"the judge grader needs a model: judge:provider:model (got {o['spec']!r})",
                          key="grader")
    return JudgeGrader(arg, client=o["client"], baseline=o["baseline"], templates=dict(o["templates"] or {}),
                       max_tokens=o["judge_max_tokens"], name=f"judge:{arg}")


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
    """Build the grader a spec names; the options go to the graders that use them."""
    kind, _, arg = spec.strip().partition(":")
    grader = GRADERS.get(kind.lower())
    if grader is None:
        raise ConfigError(f"unknown grader {spec!r}; use one of {', '.join(grader_specs())}", key="grader")
    if arg and not any(":" in s for s in grader.specs):
        raise ConfigError(f"grader {kind.lower()!r} takes no argument (got {spec!r})", key="grader")
    options = dict(spec=spec, client=client, tolerance=tolerance, timeout_s=timeout_s, memory_mb=memory_mb,
                   allow_code_execution=allow_code_execution, allow_no_isolation=allow_no_isolation,
                   baseline=baseline, templates=templates, judge_max_tokens=judge_max_tokens)
    return grader.build(arg, options)


def parse_graders(specs: Mapping[str, str], **options: Any) -> dict[str, Grader]:
    """``{task: spec}`` (a config's ``[graders]``) to graders, one object per distinct spec."""
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

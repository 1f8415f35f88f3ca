"""``ponder grade``: fill an outcome table's ``score`` with a grader (rules, tests or an LLM judge)."""

from __future__ import annotations

import json
import math
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import typer

from ..grading._spec import grader_help
from ._common import ConfigOpt, app, fail, say, say_err, stage_progress

_HELP = (
    "Grade every response of an outcome table and write it with `score` filled.\n\n"
    "TABLE needs query_id, query, model and response; reference, task, tests (Python "
    "assertions) and samples (a JSON list of strings, first = response) are used when present. "
    "The output adds grade_reason, judge_cost_usd and, with samples, sample_scores; scores the "
    "input already had are kept in trusted_score.\n\n"
    "Graders (--grader, or one per task from the config's \\[graders] table, with a `default`): "
    f"{grader_help()}.\n\n"
    "WARNING: the code grader EXECUTES UNTRUSTED CODE and needs --allow-code-execution. Each "
    "program runs in its own Linux namespaces (PID, mount, network), as an unprivileged user, "
    "with time, memory and process limits; where they cannot be made it refuses unless "
    "--allow-no-isolation. A kernel bug is still a way out: use a container or VM for code you "
    "have reason to fear."
)


@app.command("grade", help=_HELP)
def grade_command(
    table: Path = typer.Argument(..., metavar="TABLE", help="Outcome table: .parquet, .csv or .jsonl."),
    output: Path = typer.Option(..., "--output", "-o",
                                help="Where to write the graded table (.parquet, .csv or .jsonl)."),
    grader: str | None = typer.Option(None, "--grader", "-g", metavar="SPEC",
                                      help="One grader for every row (overrides the config's \\[graders])."),
    tolerance: float = typer.Option(1e-6, min=0.0, help="number: relative tolerance (absolute "
                                                         "below 1)."),
    timeout: float = typer.Option(10.0, min=0.1, help="code: seconds each program may run."),
    memory_mb: int = typer.Option(1024, min=64, help="code: memory limit in MiB (each process's "
                                                        "address space, and the whole program's "
                                                        "memory where a cgroup can be made)."),
    allow_code_execution: bool = typer.Option(
        False, "--allow-code-execution",
        help="Let the code grader run the responses' code. It is UNTRUSTED: each program runs "
             "in a sandbox (namespaces, an unprivileged user, limits)."),
    allow_no_isolation: bool = typer.Option(
        False, "--allow-no-isolation",
        help="code: where the sandbox cannot be made (no `unshare`, user namespaces off), run "
             "the programs anyway with time and resource limits only. NO ISOLATION: they can "
             "read your files and environment, use the network and signal your processes."),
    pairwise: str | None = typer.Option(None, "--pairwise", metavar="BASELINE_MODEL",
                                        help="judge: compare each answer with this model's answer "
                                             "to the same query (both orders)."),
    judge_template: list[str] = typer.Option(
        None, "--judge-template", metavar="[KIND=]FILE",
        help="judge: replace a prompt (KIND: correctness {query} {response} {reference}; rubric "
             "{query} {response}; pairwise {query} {answer_a} {answer_b}). A bare FILE needs "
             "--pairwise."),
    judge_max_tokens: int = typer.Option(1024, min=1, help="judge: longest reply the judge may write "
                                                              "(small models may not stop by themselves)."),
    concurrency: int = typer.Option(8, min=1, help="Rows graded at once."),
    compare: bool = typer.Option(False, "--agreement",
                                 help="Report accuracy and Cohen's kappa against the scores the "
                                      "input already has."),
    no_cache: bool = typer.Option(False, "--no-cache", help="judge: bypass the completion cache."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    config: Path | None = ConfigOpt,
) -> None:
    from .._client import Client
    from .._config import load_config
    from ..grading import CodeGrader, grade_table, load_template, parse_grader, parse_graders

    cfg = load_config(config)
    _register_keys(cfg)
    specs = {"default": grader} if grader else dict(cfg.graders)
    if not specs:
        fail("give --grader SPEC, or a [graders] table in the config")
    templates = _templates(judge_template or [], pairwise is not None, load_template)
    uses_judge = any(s.strip().lower().startswith("judge:") for s in specs.values())
    judge_client = Client(cfg, cache=False if no_cache else None) if uses_judge else None
    with judge_client or nullcontext() as client:
        options: dict[str, Any] = dict(
            client=client, tolerance=tolerance, timeout_s=timeout, memory_mb=memory_mb,
            allow_code_execution=allow_code_execution, allow_no_isolation=allow_no_isolation,
            baseline=pairwise, templates=templates, judge_max_tokens=judge_max_tokens)
        graders = parse_grader(grader, **options) if grader else parse_graders(specs, **options)
        each = list(graders.values()) if isinstance(graders, dict) else [graders]
        code = next((g for g in each if isinstance(g, CodeGrader)), None)
        for note in code.limitations() if code is not None else []:  # said, never silently
            say_err(f"code grader: {note}")
        with stage_progress() as bar:
            task = bar.add_task("grading", total=None)
            result = grade_table(table, graders, output=output, concurrency=concurrency,
                                 compare=compare,
                                 progress=lambda i, n: bar.update(task, completed=i, total=n))
    summary = result.summary.to_dict()
    if as_json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        _render(summary)


def _register_keys(cfg: Any) -> None:
    """Register every key this run could leak (the config's, and the providers' usual variables)
    for scrubbing: a graded program may print one, and every grade reason is scrubbed."""
    from .._secrets import register_secret

    for settings in cfg.providers.values():
        if settings.api_key is not None:
            register_secret(settings.api_key.get_secret_value())
        if settings.api_key_env:
            register_secret(os.environ.get(settings.api_key_env))
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        register_secret(os.environ.get(name))


def _templates(values: list[str], pairwise: bool, load: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        kind, sep, file = value.partition("=")
        if not sep:
            if not pairwise:
                fail(f"--judge-template {value}: name the prompt it replaces, "
                     "correctness=FILE or rubric=FILE (a bare FILE is for --pairwise)")
            kind, file = "pairwise", value
        out[kind.strip()] = load(kind.strip(), file)
    return out


def _render(s: dict[str, Any]) -> None:
    graders = ", ".join(f"{name} ({n})" for name, n in s["graders"].items())
    mean = "–" if s["mean_score"] is None else f"{s['mean_score']:.3f}"
    say(f"graded {s['n_graded']} of {s['n_rows']} rows with {graders}: mean score {mean}"
        + (f", {s['n_samples']} samples" if s["n_samples"] else ""))
    if s["n_ungraded"]:
        why = "; ".join(f"{r} ({n})" for r, n in s["ungraded_reasons"].items())
        say_err(f"{s['n_ungraded']} rows left ungraded (score NaN): {why}")
    if s["judge_calls"]:
        say(f"judge cost ${s['judge_cost_usd']:.6f} for {s['judge_calls']} calls "
            f"({s['judge_cached_calls']} cached); not included in cost_usd")
    a = s.get("agreement")
    if a is not None:
        if not a["n"]:
            say("agreement: no row has an existing score to compare with")
        else:
            kappa = "undefined (one class only)" if a["kappa"] is None or math.isnan(a["kappa"]) \
                else f"{a['kappa']:.3f}"
            say(f"agreement with existing scores (n={a['n']}, pass at >= "
                f"{a['threshold']:g}): accuracy {a['accuracy']:.3f}, Cohen's kappa "
                f"{kappa}; both pass {a['both_positive']}, both fail "
                f"{a['both_negative']}, only trusted passes {a['trusted_only']}, "
                f"only grader passes {a['grader_only']}")
    say(f"wrote {s['output']}")

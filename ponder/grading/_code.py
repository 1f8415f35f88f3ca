"""The code grader: run a response's Python against the row's tests, in a sandbox.

THIS EXECUTES UNTRUSTED CODE, isolated as ``_sandbox.py`` describes (and what is no boundary).
Without the sandbox the grader refuses to run unless ``allow_no_isolation``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._exceptions import PonderError
from . import _sandbox
from ._base import Grade, text

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 1024
DEFAULT_MAX_PROCESSES = 64

_FENCE = re.compile(r"```[ \t]*(python3?|py)?[^\n]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_code(response: str) -> str:
    """The first fenced ```python block (else the first fenced block), else the whole text."""
    blocks = _FENCE.findall(response)
    for lang, body in blocks:
        if lang:
            return str(body)
    return str(blocks[0][1]) if blocks else response


@dataclass
class CodeGrader:
    """1 when the response's Python runs the row's ``tests`` (assertions) to the end, else 0;
    ``allow_code_execution`` must be True (untrusted code). ``memory_mb`` bounds each process's
    address space and, with a memory cgroup, the group's."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    allow_code_execution: bool = False
    allow_no_isolation: bool = False
    max_processes: int = DEFAULT_MAX_PROCESSES
    name: str = "code"
    requires: tuple[str, ...] = ("tests",)
    isolation: _sandbox.Isolation = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.allow_code_execution:
            raise PonderError("the code grader runs the responses' code, which is untrusted; "
                              "pass --allow-code-execution (allow_code_execution=True) to run it")
        if self.timeout_s <= 0 or self.memory_mb < 64 or self.max_processes < 1:
            raise PonderError("the code grader needs timeout_s > 0, memory_mb >= 64 and "
                              "max_processes >= 1")
        unshare, euid = shutil.which("unshare"), os.geteuid()
        found, why = _sandbox.probe(True, unshare, euid)
        if found is None:
            if not self.allow_no_isolation:
                raise PonderError(
                    f"the code grader cannot isolate the programs on this machine ({why}); it "
                    "needs Linux namespaces (util-linux `unshare`, and user namespaces unless "
                    "run as root). Run it where they work, or pass --allow-no-isolation "
                    "(allow_no_isolation=True) to run the untrusted code with resource limits "
                    "only")
            found, why = _sandbox.probe(False, unshare, euid)
            assert found is not None
        self.isolation = found

    def limitations(self) -> list[str]:
        return self.isolation.limitations()

    def grade(self, response: str, row: Mapping[str, Any]) -> Grade:
        limits = _sandbox.Limits(self.timeout_s, self.memory_mb, self.max_processes)
        out = _sandbox.run(extract_code(response), text(row.get("tests")), limits, self.isolation)
        if out.passed:
            return Grade(1.0, "tests passed")
        if out.timed_out:
            return Grade(0.0, f"timed out after {self.timeout_s:g}s")
        if out.memory_limit:
            return Grade(0.0, f"killed: the group went over its memory limit ({self.memory_mb} MiB)")
        if out.error:
            return Grade(math.nan, f"sandbox failed: {out.error}")
        if out.signal is not None:
            sig = signal.Signals(out.signal).name if out.signal in signal.valid_signals() \
                else f"signal {out.signal}"
            hint = " (CPU time limit)" if out.signal == signal.SIGXCPU else ""
            return Grade(0.0, f"killed by {sig}{hint}")
        if out.exit_code == 0:
            return Grade(0.0, "exited before the tests finished (exit code 0)")
        return Grade(0.0, _sandbox.last_line(out.stderr) or f"exit code {out.exit_code}")

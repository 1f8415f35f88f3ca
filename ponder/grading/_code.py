"""The code grader: run a response's Python against the row's tests, in a sandbox of sorts.

THIS EXECUTES UNTRUSTED CODE. The limits are best effort, not a security boundary: a separate
``python -I`` process in a throwaway temporary folder, a wall-clock time limit (the whole process
group is killed), an address-space limit (RLIMIT_AS), a CPU-time limit, a file-size limit, no
network where ``unshare -rn`` works (a private network namespace) and, always, ``socket``
connections disabled inside Python. Run it in a container or VM when the code is not yours.
"""

from __future__ import annotations

import functools
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._exceptions import PonderError
from ._base import Grade, text

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 1024
_OUTPUT_LIMIT = 20_000

_FENCE = re.compile(r"```[ \t]*(python3?|py)?[^\n]*\n(.*?)```", re.DOTALL | re.IGNORECASE)

# Prepended to every program: no socket connections from Python (best effort; the network
# namespace, when available, is the stronger fence).
_PRELUDE = """\
import socket as _s
def _no_network(*a, **k):
    raise OSError("network access is disabled while grading")
_s.socket.connect = _s.socket.connect_ex = _no_network
_s.create_connection = _s.getaddrinfo = _no_network
del _s, _no_network
"""


def extract_code(response: str) -> str:
    """The first fenced ```python block (else the first fenced block), else the whole text."""
    blocks = _FENCE.findall(response)
    for lang, body in blocks:
        if lang:
            return str(body)
    return str(blocks[0][1]) if blocks else response


@functools.lru_cache(maxsize=1)
def _unshare() -> list[str]:
    """``unshare -rn`` when this machine lets an unprivileged user make a network namespace."""
    exe = shutil.which("unshare")
    if exe is None or not sys.platform.startswith("linux"):
        return []
    try:
        ok = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return [exe, "-rn"] if ok else []


def _limits(memory_mb: int, cpu_s: int) -> None:  # runs in the child, before exec
    mem = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024 * 1024, 64 * 1024 * 1024))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _last_line(output: str) -> str:
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


@dataclass
class CodeGrader:
    """1 when the response's Python runs the row's ``tests`` (assertions) without error.

    ``allow_code_execution`` must be True: this runs untrusted code (see the module notes for
    what is limited, on a best-effort basis).
    """

    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    allow_code_execution: bool = False
    name: str = "code"
    requires: tuple[str, ...] = ("tests",)

    def __post_init__(self) -> None:
        if not self.allow_code_execution:
            raise PonderError("the code grader runs the responses' code, which is untrusted; "
                              "pass --allow-code-execution (allow_code_execution=True) to run it")
        if self.timeout_s <= 0 or self.memory_mb < 64:
            raise PonderError("the code grader needs timeout_s > 0 and memory_mb >= 64")

    def grade(self, response: str, row: Mapping[str, Any]) -> Grade:
        program = _PRELUDE + "\n" + extract_code(response) + "\n\n" + text(row.get("tests")) + "\n"
        with tempfile.TemporaryDirectory(prefix="ponder-grade-") as tmp:
            path = os.path.join(tmp, "solution.py")
            with open(path, "w", encoding="utf-8") as f:
                f.write(program)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, "TMPDIR": tmp,
                   "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
                   "LANG": "C.UTF-8", "no_proxy": "*", "NO_PROXY": "*"}
            cpu = int(self.timeout_s) + 1
            proc = subprocess.Popen(
                [*_unshare(), sys.executable, "-I", "-B", path], cwd=tmp, env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True, preexec_fn=functools.partial(_limits, self.memory_mb, cpu))
            try:
                _, err = proc.communicate(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return Grade(0.0, f"timed out after {self.timeout_s:g}s")
            finally:
                _kill_group(proc)  # whatever it started in the background goes too
        stderr = err[-_OUTPUT_LIMIT:].decode("utf-8", "replace")
        if proc.returncode == 0:
            return Grade(1.0, "tests passed")
        if proc.returncode < 0:
            sig = signal.Signals(-proc.returncode).name
            hint = " (CPU time limit)" if sig == "SIGXCPU" else ""
            return Grade(0.0, f"killed by {sig}{hint}")
        return Grade(0.0, _last_line(stderr) or f"exit code {proc.returncode}")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()

"""Run one untrusted Python program in a throwaway Linux sandbox: the code grader's mechanism.

``unshare --pid --fork --kill-child --mount --net --ipc --uts [--user --map-root-user]`` starts
``_sandbox_boot.py``, pid 1 of a new PID namespace (trusted: when it exits the kernel kills what is
left). It joins the cgroups, builds the root, then runs ``python -I -B -c HARNESS`` unprivileged:

* a new root (``pivot_root``): a tmpfs with read-only nosuid binds of the system folders and
  Python's prefixes, a fresh ``/proc``, a few ``/dev`` nodes, size-limited private ``/tmp``,
  ``/dev/shm`` and ``/sandbox`` (home); no home folders, ``/run``, ``/var`` (nor their unix
  sockets), nor the grader's files. Empty network (abstract sockets are per namespace), IPC, UTS.
* identity: as root, no user namespace and a fresh uid above 2,000,000,000; else a user namespace
  and a nested one that leaves no capability over the mounts. ``no_new_privs`` either way.
* limits: a ``memory`` (swap included) and ``pids`` cgroup where the machine allows; always
  RLIMIT_AS, _CPU, _FSIZE, _CORE=0 and _NPROC (per fresh uid or nested namespace: this program).

The pass signal is a marker, not the exit code: the harness reads a random token from a pipe
(closed before the program runs) and writes it to a second one only once the program and its
tests returned, so ``sys.exit(0)``, ``os._exit(0)``, a crash or a timeout cannot pass. Not a
boundary: harness and program share one interpreter (``sys._getframe(1)`` finds the token, as an
object equal to everything passes ``assert f(x) == 5``). The sandbox protects the grader, the
machine and the other rows, not a score against code written to fake it.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from . import _sandbox_boot
from ._sandbox_boot import _unescape, _within, _write

OUTPUT_LIMIT = 1 << 20  # bytes kept of each of stdout and stderr (the last ones); the rest dropped
FIRST_UID = 2_000_000_000  # the program's uid when ponder runs as root: FIRST_UID + random
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
       "PYTHONIOENCODING": "utf-8", "LANG": "C.UTF-8", "no_proxy": "*", "NO_PROXY": "*",
       "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_mb: int
    max_processes: int


@dataclass
class Outcome:
    """What one program did. ``passed`` only when the harness's marker arrived."""

    passed: bool = False
    timed_out: bool = False
    exit_code: int | None = None  # the program's, as its supervisor saw it
    signal: int | None = None  # what killed the program
    memory_limit: bool = False  # the group's memory cgroup killed something
    error: str | None = None  # the sandbox itself failed (not the program)
    stdout: bytes = b""
    stderr: bytes = b""


@dataclass(frozen=True)
class Isolation:
    """``mode``: "root" (a fresh uid), "userns" or "none" (resource limits only); ``cgroups``: the
    controllers (memory, pids) each program's group gets."""

    mode: str
    cgroups: tuple[str, ...] = ()
    unshare: str | None = None

    def limitations(self) -> list[str]:
        out: list[str] = []
        if self.mode == "none":
            out.append("no isolation: the programs run as this user, see its files and network, "
                       "and can signal its processes; only time and per-process limits apply")
        elif self.mode == "userns":
            out.append("the programs keep this user's uid for reading files (the sandbox shows "
                       "only the system folders and Python's, read-only)")
        if "memory" not in self.cgroups:
            out.append("no memory cgroup: memory is limited per process (RLIMIT_AS), so a group "
                       "of processes may use up to the limit times the process limit")
        if "pids" not in self.cgroups and self.mode == "none":
            out.append("no process limit")
        return out


@lru_cache(maxsize=8)
def probe(isolate: bool, unshare: str | None, euid: int) -> tuple[Isolation | None, str]:
    """(isolation, "") when a trivial program passes in the sandbox, else (None, why); as root
    (``euid`` 0), without a user namespace first. Cached per ``unshare`` and user."""
    test = Cgroup.create(64, 8, ("memory", "pids"))  # which controllers the machine lets ponder use
    cgroups = tuple(sorted(test.dirs)) if test is not None else ()
    if test is not None:
        test.remove()
    if not isolate:
        return Isolation("none", cgroups), ""
    if unshare is None or not sys.platform.startswith("linux"):
        return None, "the `unshare` command (util-linux) was not found"
    why = ""
    for mode in (("root", "userns") if euid == 0 else ("userns",)):
        iso = Isolation(mode, cgroups, unshare)
        out = run("ok = True", "assert ok", Limits(30.0, 1024, 16), iso)
        if out.passed:
            return iso, ""
        why = (out.error or last_line(out.stderr) or f"exit code {out.exit_code}")[:300]
    return None, why


def run(solution: str, tests: str, limits: Limits, isolation: Isolation) -> Outcome:
    """Run ``solution`` then ``tests`` (one file); raises for nothing the program does."""
    token = secrets.token_hex(16).encode()
    tmp = tempfile.mkdtemp(prefix="ponder-grade-")
    group = Cgroup.create(limits.memory_mb, limits.max_processes, isolation.cgroups)
    fds: list[int] = []
    try:
        _write(os.path.join(tmp, "solution.py"), solution + "\n\n" + tests + "\n")
        os.mkdir(os.path.join(tmp, "root"))
        tok_r, tok_w = os.pipe()
        os.write(tok_w, token)
        os.close(tok_w)
        res_r, res_w = os.pipe()
        st_r, st_w = os.pipe()
        fds += [tok_r, res_r, res_w, st_r, st_w]
        child = (tok_r, res_w, st_w)  # the sandbox's ends: token in, marker and status out
        isolate = isolation.mode != "none"
        spec = {"isolate": isolate, "dir": tmp, "python": sys.executable,
                "binds": _binds() if isolate else [],
                "uid": FIRST_UID + secrets.randbelow(100_000_000)
                if isolation.mode == "root" else None,
                "cgroups": group.procs() if group else [],
                "fds": child, "timeout_s": limits.timeout_s,
                "memory_mb": limits.memory_mb, "max_processes": limits.max_processes}
        cmd = [sys.executable, "-I", "-S", "-B", os.path.abspath(_sandbox_boot.__file__),
               json.dumps(spec)]
        if isolate:
            cmd = [str(isolation.unshare), "--pid", "--fork", "--kill-child", "--mount", "--net",
                   "--ipc", "--uts", *(["--user", "--map-root-user"]
                                       if isolation.mode == "userns" else []), *cmd]
        env = {**ENV, "HOME": tmp, "TMPDIR": tmp}
        try:
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=child, start_new_session=True)
        except OSError as exc:
            return Outcome(error=f"could not start the sandbox: {exc}")
        for fd in child:  # the sandbox holds them now
            os.close(fd)
            fds.remove(fd)
        try:
            out = _collect(proc, res_r, st_r, limits.timeout_s, token)
        finally:  # kill the process group, the namespace (pid 1 dies with unshare) and the cgroup
            _quietly(os.killpg, proc.pid, signal.SIGKILL)
            _quietly(proc.kill)
            if group is not None:
                group.kill_all()
            _quietly(proc.wait, 10)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    _quietly(stream.close)
        out.memory_limit = group is not None and group.oom_killed()
        return out
    finally:
        for fd in fds:
            _quietly(os.close, fd)
        if group is not None:
            group.remove()
        shutil.rmtree(tmp, ignore_errors=True)


def _collect(proc: subprocess.Popen[bytes], res_r: int, st_r: int, timeout_s: float,
             token: bytes) -> Outcome:
    """Read the output tails, the marker and the supervisor's status until the program exits or
    the time is up; it passed when the marker pipe carried the token and nothing else."""
    assert proc.stdout is not None and proc.stderr is not None
    # the last ``limit`` bytes of each pipe, memory below twice that; a marker pipe that carried
    # more than its limit keeps at least that much, so it no longer equals the (shorter) token
    limits = {proc.stdout.fileno(): OUTPUT_LIMIT, proc.stderr.fileno(): OUTPUT_LIMIT, res_r: 256,
              st_r: 1 << 16}
    bufs = {fd: bytearray() for fd in limits}
    sel = selectors.DefaultSelector()
    for fd in limits:
        sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    exited_at: float | None = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now  # the pipes get a moment to drain, then whatever holds them loses
            end = deadline if exited_at is None else min(deadline, exited_at + 1.0)
            if now >= end:
                break
            for key, _ in sel.select(timeout=min(end - now, 0.1)):
                data = os.read(key.fd, 1 << 16)
                if not data:
                    sel.unregister(key.fd)
                    continue
                bufs[key.fd] += data
                if len(bufs[key.fd]) > 2 * limits[key.fd]:
                    del bufs[key.fd][:-limits[key.fd]]
    finally:
        sel.close()
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    tail = {fd: bytes(buf[-limits[fd]:]) for fd, buf in bufs.items()}
    out = Outcome(stdout=tail[proc.stdout.fileno()], stderr=tail[proc.stderr.fileno()])
    out.passed = tail[res_r] == token
    status: dict[str, Any] = {}
    for line in tail[st_r].decode("utf-8", "replace").splitlines():
        with suppress(ValueError):
            status.update(json.loads(line))
    out.error = status.get("error")
    out.exit_code, out.signal = status.get("exit"), status.get("signal")
    if proc.poll() is None:
        out.timed_out = True
    elif not status and proc.returncode != 0 and not out.passed:
        # the supervisor never reported: unshare (or the boot) failed, or was killed
        out.error = ("the sandbox ended without its supervisor's report: "
                     f"{last_line(out.stderr) or f'exit status {proc.returncode}'}")
    return out


def _quietly(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except (OSError, subprocess.SubprocessError):
        pass


def last_line(data: bytes) -> str:
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _binds() -> list[str]:
    """The host folders the sandbox shows read-only: the system's and Python's."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(sys.executable)}
    paths |= {os.path.realpath(p) for p in paths}
    found = [d for d in SYSTEM_DIRS if os.path.lexists(d)]
    for p in sorted(paths, key=len):
        if os.path.isdir(p) and not any(_within(p, d) for d in found):
            found.append(p)
    return found


@dataclass
class Cgroup:
    """One cgroup per program (per controller folder), where the machine lets ponder make one."""

    dirs: dict[str, str]  # controller -> folder (v2: the same folder for both)

    @staticmethod
    def _parents() -> dict[str, tuple[str, int]]:
        """{memory/pids: (this process's cgroup folder, cgroup version)}."""
        try:
            with open("/proc/self/cgroup", encoding="utf-8") as f:
                own = {}
                for line in f:
                    _, ctrls, path = line.rstrip("\n").split(":", 2)
                    own.update(dict.fromkeys(ctrls.split(",") if ctrls else [""], path))
            with open("/proc/self/mountinfo", encoding="utf-8") as f:
                mounts = [line.split() for line in f]
        except OSError:
            return {}
        out: dict[str, tuple[str, int]] = {}
        for fields in mounts:
            sep = fields.index("-")
            fstype, opts = fields[sep + 1], fields[sep + 3].split(",")
            root, point = _unescape(fields[3]), _unescape(fields[4])
            for c in ("memory", "pids"):
                if fstype == "cgroup" and c in opts and c in own and c not in out:
                    out[c] = (_under_mount(point, root, own[c]), 1)
                elif fstype == "cgroup2" and "" in own and c not in out:
                    folder = _under_mount(point, root, own[""])
                    if c in _read(os.path.join(folder, "cgroup.controllers")).split():
                        out[c] = (folder, 2)
        return out

    @classmethod
    def create(cls, memory_mb: int, max_processes: int, wanted: tuple[str, ...]) -> Cgroup | None:
        name = f"ponder-{os.getpid()}-{secrets.token_hex(4)}"
        memory = str(memory_mb * 1024 * 1024)
        dirs: dict[str, str] = {}
        for c, (parent, version) in cls._parents().items():
            if c not in wanted:
                continue
            folder = os.path.join(parent, name)
            try:
                if not os.path.isdir(folder):
                    os.mkdir(folder)
                if version == 2 and c not in _read(os.path.join(folder, "cgroup.controllers")).split():
                    _write(os.path.join(parent, "cgroup.subtree_control"), f"+{c}")
                if c == "memory":
                    for knob in (("memory.max", "memory.swap.max") if version == 2 else
                                 ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes")):
                        value = "0" if knob == "memory.swap.max" else memory
                        if os.path.exists(os.path.join(folder, knob)):
                            _write(os.path.join(folder, knob), value)
                else:
                    _write(os.path.join(folder, "pids.max"), str(max_processes + 1))
                dirs[c] = folder
            except OSError:
                with suppress(OSError):
                    os.rmdir(folder)
        return cls(dirs) if dirs else None

    def procs(self) -> list[str]:
        return sorted({os.path.join(d, "cgroup.procs") for d in self.dirs.values()})

    def oom_killed(self) -> bool:
        folder = self.dirs.get("memory")
        if folder is None:
            return False
        text = "\n".join(_read(os.path.join(folder, k)) for k in ("memory.events", "memory.oom_control"))
        pairs = [line.partition(" ") for line in text.splitlines()]
        return any(key == "oom_kill" and v.strip().isdigit() and int(v) > 0 for key, _, v in pairs)

    def kill_all(self) -> None:
        for folder in set(self.dirs.values()):
            if os.path.exists(os.path.join(folder, "cgroup.kill")):
                with suppress(OSError):
                    _write(os.path.join(folder, "cgroup.kill"), "1")
            for pid in _read(os.path.join(folder, "cgroup.procs")).split():
                with suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)

    def remove(self) -> None:
        """A few tries while the killed processes go; never raises."""
        for folder in set(self.dirs.values()):
            for _ in range(50):
                try:
                    os.rmdir(folder)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    self.kill_all()
                    time.sleep(0.02)


def _under_mount(point: str, root: str, path: str) -> str:
    if root != "/" and _within(path, root):
        path = path[len(root):]
    return point + path if path != "/" else point


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""

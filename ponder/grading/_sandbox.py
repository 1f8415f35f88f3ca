"""Run one untrusted Python program in a throwaway Linux sandbox: the code grader's mechanism.

This file is two things. Imported, it is the grader's side: :func:`run` starts a program and
collects what it did, :func:`probe` says whether (and how) this machine can isolate it. Run as a
script (``python -I -S _sandbox.py SPEC``, under ``unshare``) it is the sandbox's first process,
:func:`_boot`. It uses the standard library only and imports nothing from ponder, so that it can
run as that script.

The process tree of one program, isolated::

    ponder (the grader thread)
      unshare --pid --fork --kill-child --mount --net --ipc --uts [--user --map-root-user]
        _boot        pid 1 of a new PID namespace: trusted; joins the cgroups, builds the root,
                     then waits; when it exits the kernel kills everything left in the namespace
          python -I -B -c HARNESS      the program, as an unprivileged user, under rlimits

What the boot builds before the program starts:

* a new root (``pivot_root``): a tmpfs holding read-only, nosuid binds of the system folders
  (``/usr``, ``/etc``, ``/lib*``, ``/bin``, ``/sbin``) and of Python's installation (its prefixes),
  a fresh ``/proc`` of the new PID namespace, ``/dev/{null,zero,full,random,urandom}``, and
  private size-limited tmpfs folders ``/tmp``, ``/dev/shm`` and ``/sandbox`` (the program's home
  and working folder). Nothing else of the machine is there: not the home folders, not ``/run``
  or ``/var`` (and their unix sockets), not the grader's folder, config or temporary files. The
  old root is unmounted.
* an empty network namespace (no interface but a loopback that is down; abstract unix sockets
  are per network namespace), and private IPC and UTS namespaces.
* an unprivileged identity: run as root, the namespaces are made without a user namespace and the
  program runs as a fresh uid (one per program, above 2,000,000,000) with no capabilities; run
  as another user, the namespaces live in a user namespace and the program enters a second,
  nested one, which leaves it no capability over the mounts (it keeps the user's uid for file
  permissions, on the read-only folders it can see). ``no_new_privs`` is set either way.
* limits: one cgroup per program with ``memory`` (the whole group, swap included) and ``pids``
  controllers where the machine lets ponder make one (cgroup v1, or a delegated v2 subtree);
  always RLIMIT_AS (per process), RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_CORE=0 and RLIMIT_NPROC (in
  the sandbox's fresh uid or nested user namespace, so it counts this program's processes).

The pass signal is a marker, not the exit code: the grader puts a random token in a pipe; the
harness reads it and closes that pipe before the program runs, and writes the token to a second
pipe only when the program and its tests have returned. ``sys.exit(0)``, ``os._exit(0)``, a
crash or a timeout therefore cannot pass. What this is not: the harness and the program share
one interpreter, so a program written to attack this harness can find the token (in the
harness's frame, ``sys._getframe(1)``) and write it, just as it can pass ``assert f(x) == 5``
with an object equal to everything. The marker and the sandbox protect the grader, the machine
and the other rows; they do not make a score trustworthy against code written to fake it.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

OUTPUT_LIMIT = 1 << 20  # bytes kept of each of stdout and stderr (the last ones); the rest dropped
TMPFS_MB = 64  # size of each private tmpfs: /tmp, /dev/shm and the program's home
FILE_MB = 64  # RLIMIT_FSIZE
HOME = "/sandbox"
FIRST_UID = 2_000_000_000  # the program's uid when ponder runs as root: FIRST_UID + random
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
DEVICES = ("null", "zero", "full", "random", "urandom")
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
       "PYTHONIOENCODING": "utf-8", "LANG": "C.UTF-8", "no_proxy": "*", "NO_PROXY": "*",
       "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# Runs the program in the sandboxed interpreter. fd 3: the token (read, then closed, before the
# program runs); fd 4: where the token goes once the program and its tests have returned.
HARNESS = """\
import os, sys
def _ponder_harness():
    token = b''
    while True:
        chunk = os.read(3, 256)
        if not chunk:
            break
        token += chunk
    os.close(3)
    import socket
    def no_network(*a, **k):
        raise OSError('network access is disabled while grading')
    socket.socket.connect = socket.socket.connect_ex = no_network
    socket.create_connection = socket.getaddrinfo = no_network
    with open('solution.py', encoding='utf-8') as f:
        code = compile(f.read(), 'solution.py', 'exec')
    pid = os.getpid()
    sys.argv = ['solution.py']
    exec(code, {'__name__': '__main__', '__file__': 'solution.py', '__builtins__': __builtins__})
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    if os.getpid() == pid:  # not a forked child that fell through to here
        os.write(4, token)
    os._exit(0)
_ponder_harness()
"""


# ---- the grader's side -----------------------------------------------------------------------
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
    """How this machine isolates programs: ``mode`` is "root" (namespaces made as root, the
    program as a fresh uid), "userns" (inside a user namespace) or "none" (resource limits only).
    ``cgroups``: the controllers (memory, pids) ponder can set for each program's group."""

    mode: str
    cgroups: tuple[str, ...] = ()
    unshare: str | None = None

    def limitations(self) -> list[str]:
        """What is not enforced here, in words."""
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


def probe(isolate: bool, unshare: str | None = None) -> tuple[Isolation | None, str]:
    """(isolation, "") when a trivial program runs and passes in the sandbox, else (None, why).

    Tries, as root, namespaces without a user namespace first, then with one. ``unshare`` is the
    unshare executable (None: not found)."""
    cgroups = _Cgroup.controllers()
    if not isolate:
        return Isolation("none", cgroups), ""
    if unshare is None or not sys.platform.startswith("linux"):
        return None, "the `unshare` command (util-linux) was not found"
    why = ""
    for mode in (("root", "userns") if os.geteuid() == 0 else ("userns",)):
        iso = Isolation(mode, cgroups, unshare)
        out = run("ok = True", "assert ok", Limits(30.0, 1024, 16), iso)
        if out.passed:
            return iso, ""
        why = (out.error or last_line(out.stderr) or f"exit code {out.exit_code}")[:300]
    return None, why


def run(solution: str, tests: str, limits: Limits, isolation: Isolation) -> Outcome:
    """Run ``solution`` then ``tests`` (one Python file) in the sandbox and say what happened.

    Never raises for what the program does; cleanup never raises."""
    token = secrets.token_hex(16).encode()
    tmp = tempfile.mkdtemp(prefix="ponder-grade-")
    group = _Cgroup.create(limits, isolation.cgroups)
    fds: list[int] = []
    try:
        with open(os.path.join(tmp, "solution.py"), "w", encoding="utf-8") as f:
            f.write(solution + "\n\n" + tests + "\n")
        os.mkdir(os.path.join(tmp, "root"))
        tok_r, tok_w = os.pipe()
        os.write(tok_w, token)
        os.close(tok_w)
        res_r, res_w = os.pipe()
        st_r, st_w = os.pipe()
        fds += [tok_r, res_r, res_w, st_r, st_w]
        isolate = isolation.mode != "none"
        spec = {"isolate": isolate, "dir": tmp, "python": sys.executable,
                "binds": _binds() if isolate else [],
                "uid": FIRST_UID + secrets.randbelow(100_000_000)
                if isolation.mode == "root" else None,
                "cgroups": group.procs() if group else [],
                "fds": [tok_r, res_w, st_w], "timeout_s": limits.timeout_s,
                "memory_mb": limits.memory_mb, "max_processes": limits.max_processes}
        cmd = [sys.executable, "-I", "-S", "-B", os.path.abspath(__file__), json.dumps(spec)]
        if isolate:
            cmd = [str(isolation.unshare), "--pid", "--fork", "--kill-child", "--mount", "--net",
                   "--ipc", "--uts", *(["--user", "--map-root-user"]
                                       if isolation.mode == "userns" else []), *cmd]
        env = {**ENV, "HOME": tmp, "TMPDIR": tmp}
        try:
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=(tok_r, res_w, st_w), start_new_session=True)
        except OSError as exc:
            return Outcome(error=f"could not start the sandbox: {exc}")
        for fd in (tok_r, res_w, st_w):  # the sandbox holds them now
            os.close(fd)
            fds.remove(fd)
        try:
            out = _collect(proc, res_r, st_r, limits.timeout_s, token)
        finally:
            _stop(proc, group)
        out.memory_limit = group is not None and group.oom_killed()
        return out
    finally:
        for fd in fds:
            _quietly(os.close, fd)
        if group is not None:
            group.remove()
        shutil.rmtree(tmp, ignore_errors=True)


class _Tail:
    """The last ``limit`` bytes written to it (memory stays below twice the limit)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.buf, self.total = limit, bytearray(), 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        self.buf += data
        if len(self.buf) > 2 * self.limit:
            del self.buf[:-self.limit]

    def value(self) -> bytes:
        return bytes(self.buf[-self.limit:])


def _collect(proc: subprocess.Popen[bytes], res_r: int, st_r: int, timeout_s: float,
             token: bytes) -> Outcome:
    """Read the program's output (keeping the tails), the marker and the supervisor's status until
    it exits or the time is up. It passed when the marker pipe carried the token and nothing else."""
    assert proc.stdout is not None and proc.stderr is not None
    tails = {proc.stdout.fileno(): _Tail(OUTPUT_LIMIT), proc.stderr.fileno(): _Tail(OUTPUT_LIMIT),
             res_r: _Tail(256), st_r: _Tail(1 << 16)}
    sel = selectors.DefaultSelector()
    for fd in tails:
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
                if data:
                    tails[key.fd].add(data)
                else:
                    sel.unregister(key.fd)
    finally:
        sel.close()
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    out = Outcome(stdout=tails[proc.stdout.fileno()].value(),
                  stderr=tails[proc.stderr.fileno()].value())
    out.passed = tails[res_r].total == len(token) and tails[res_r].value() == token
    status: dict[str, Any] = {}
    for line in tails[st_r].value().decode("utf-8", "replace").splitlines():
        try:
            status.update(json.loads(line))
        except ValueError:
            pass
    out.error = status.get("error")
    out.exit_code, out.signal = status.get("exit"), status.get("signal")
    if proc.poll() is None:
        out.timed_out = True
    elif not status and proc.returncode != 0 and not out.passed:
        # the supervisor never reported: unshare (or the boot) failed, or was killed
        out.error = ("the sandbox ended without its supervisor's report: "
                     f"{last_line(out.stderr) or f'exit status {proc.returncode}'}")
    return out


def _stop(proc: subprocess.Popen[bytes], group: _Cgroup | None) -> None:
    """Kill the program's whole tree: the process group, the namespace (its pid 1 dies with
    unshare, --kill-child) and the cgroup."""
    _quietly(os.killpg, proc.pid, signal.SIGKILL)
    _quietly(proc.kill)
    if group is not None:
        group.kill_all()
    _quietly(proc.wait, 10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            _quietly(stream.close)


def _quietly(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except (OSError, subprocess.SubprocessError):
        pass


def last_line(data: bytes) -> str:
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _binds() -> list[str]:
    """The host folders the sandbox shows (read-only): the system's and Python's installation."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(sys.executable)}
    paths |= {os.path.realpath(p) for p in paths}
    found = [d for d in SYSTEM_DIRS if os.path.lexists(d)]
    under = lambda p, d: p == d or p.startswith(d.rstrip("/") + "/")  # noqa: E731
    for p in sorted(paths, key=len):
        if os.path.isdir(p) and not any(under(p, d) for d in found):
            found.append(p)
    return found


class _Cgroup:
    """One cgroup per program (per controller folder), where the machine lets ponder make one."""

    def __init__(self, dirs: dict[str, str]) -> None:
        self.dirs = dirs  # controller -> folder (v2: the same folder for both)

    @staticmethod
    def _parents() -> dict[str, tuple[str, int]]:
        """{controller: (this process's cgroup folder, cgroup version)} for memory and pids."""
        try:
            with open("/proc/self/cgroup", encoding="utf-8") as f:
                own = {}
                for line in f:
                    _, ctrls, path = line.rstrip("\n").split(":", 2)
                    for c in ctrls.split(",") if ctrls else [""]:
                        own[c] = path
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
    def controllers(cls) -> tuple[str, ...]:
        """The controllers a program's group gets here (checked by making one)."""
        group = cls.create(Limits(1.0, 64, 8), ("memory", "pids"))
        if group is None:
            return ()
        group.remove()
        return tuple(sorted(group.dirs))

    @classmethod
    def create(cls, limits: Limits, wanted: tuple[str, ...]) -> _Cgroup | None:
        name = f"ponder-{os.getpid()}-{secrets.token_hex(4)}"
        memory = str(limits.memory_mb * 1024 * 1024)
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
                    _write(os.path.join(folder, "pids.max"), str(limits.max_processes + 1))
                dirs[c] = folder
            except OSError:
                _quietly(os.rmdir, folder)
        return cls(dirs) if dirs else None

    def procs(self) -> list[str]:
        return sorted({os.path.join(d, "cgroup.procs") for d in self.dirs.values()})

    def oom_killed(self) -> bool:
        folder = self.dirs.get("memory")
        if folder is None:
            return False
        for knob in ("memory.events", "memory.oom_control"):
            for line in _read(os.path.join(folder, knob)).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit() and int(value) > 0:
                    return True
        return False

    def kill_all(self) -> None:
        for folder in set(self.dirs.values()):
            if os.path.exists(os.path.join(folder, "cgroup.kill")):
                _quietly(_write, os.path.join(folder, "cgroup.kill"), "1")
            for pid in _read(os.path.join(folder, "cgroup.procs")).split():
                _quietly(os.kill, int(pid), signal.SIGKILL)

    def remove(self) -> None:
        """Remove the group's folders (a few tries while the killed processes go); never raises."""
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
    if root != "/" and (path == root or path.startswith(root + "/")):
        path = path[len(root):]
    return point + path if path != "/" else point


def _unescape(path: str) -> str:  # mountinfo escapes space, tab, newline and backslash as \ooo
    return path.encode().decode("unicode_escape") if "\\" in path else path


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(value)


# ---- inside the sandbox: the boot (pid 1), then the program ----------------------------------
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
CLONE_NEWUSER = 0x10000000
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "loongarch64": 41, "ppc64le": 203,
                  "ppc64": 203, "s390x": 217, "i686": 217, "i386": 217}


class _Libc:
    def __init__(self) -> None:
        self.c = ctypes.CDLL(None, use_errno=True)

    def check(self, result: int, what: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int,
              data: str | None = None) -> None:
        enc = lambda s: None if s is None else s.encode()  # noqa: E731
        self.check(self.c.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags),
                                enc(data)), f"mount {target}")

    def pivot_root(self, new: str, old: str) -> None:
        nr = SYS_PIVOT_ROOT.get(os.uname().machine)
        if nr is None:
            raise OSError(errno.ENOSYS, f"pivot_root: unknown machine {os.uname().machine}")
        self.check(self.c.syscall(ctypes.c_long(nr), new.encode(), old.encode()), "pivot_root")

    def prctl(self, option: int, value: int) -> None:
        self.check(self.c.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0),
                                ctypes.c_ulong(0), ctypes.c_ulong(0)), f"prctl {option}")


def _remount(libc: _Libc, top: str, flags: int) -> None:
    """Add ``flags`` to the mount at ``top`` and to every mount under it, keeping the flags the
    kernel will not let a user namespace drop (nodev, noexec, the atime ones)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [_unescape(line.split()[4]) for line in f]
    for point in points:
        if point == top or point.startswith(top.rstrip("/") + "/"):
            st = os.statvfs(point).f_flag
            keep = (st & (MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)) \
                | (MS_RELATIME if st & 4096 else 0)  # ST_RELATIME
            libc.mount(None, point, None, MS_REMOUNT | MS_BIND | flags | keep)


def _build_root(libc: _Libc, spec: dict[str, Any], uid: int | None) -> None:
    """Mount the sandbox's root in the grader's folder and pivot into it (see the module notes)."""
    root = os.path.join(spec["dir"], "root")
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)
    libc.mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    # The private folders first, so that a Python installed under one of them (a virtualenv in
    # /tmp) is bound on top of the private tmpfs instead of being hidden by it.
    small = f"size={TMPFS_MB}m"
    for path, mode in (("/tmp", "1777"), ("/dev/shm", "1777"), (HOME, "700")):
        os.makedirs(root + path, exist_ok=True)
        libc.mount("tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV, f"{small},mode={mode}")
    for path in spec["binds"]:
        target = root + path
        if os.path.islink(path) and os.path.dirname(path) == "/":  # /bin -> usr/bin
            os.symlink(os.readlink(path), target)
            continue
        os.makedirs(target, exist_ok=True)
        libc.mount(path, target, None, MS_BIND | MS_REC)
        _remount(libc, target, MS_RDONLY | MS_NOSUID)
    for name in DEVICES:
        open(f"{root}/dev/{name}", "w").close()
        libc.mount(f"/dev/{name}", f"{root}/dev/{name}", None, MS_BIND)
        _remount(libc, f"{root}/dev/{name}", MS_NOSUID | MS_NOEXEC)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    os.makedirs(root + "/proc")
    libc.mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    shutil.copyfile(os.path.join(spec["dir"], "solution.py"), root + HOME + "/solution.py")
    if uid is not None:
        os.chown(root + HOME, uid, uid)
    os.mkdir(root + "/.old")
    libc.pivot_root(root, root + "/.old")
    os.chdir("/")
    libc.check(libc.c.umount2(b"/.old", MNT_DETACH), "umount /.old")
    os.rmdir("/.old")
    libc.mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _become_program(libc: _Libc | None, spec: dict[str, Any], tok: int, res: int) -> None:
    """In the forked child: fds, folder, limits, identity, then exec the harness. Never returns."""
    os.dup2(tok, 3)
    os.dup2(res, 4)
    os.closerange(5, 1000)  # the boot's own (1000 and up) are close-on-exec
    isolate = spec["isolate"]
    os.chdir(HOME if isolate else spec["dir"])
    mem = spec["memory_mb"] * 1024 * 1024
    cpu = int(spec["timeout_s"]) + 1
    for limit, value in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu),
                         (resource.RLIMIT_FSIZE, FILE_MB * 1024 * 1024), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))
    env = dict(os.environ)
    if isolate:
        assert libc is not None
        env.update(HOME=HOME, TMPDIR="/tmp")
        uid = spec["uid"]
        if uid is not None:  # root: become a fresh, unprivileged uid
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        else:  # a nested user namespace: no capability over the sandbox's mounts after exec
            libc.check(libc.c.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
        n = spec["max_processes"]  # counts this uid (or this user namespace) only
        resource.setrlimit(resource.RLIMIT_NPROC, (n, n))
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1)
    python = spec["python"]
    os.execve(python, [python, "-I", "-B", "-c", HARNESS], env)


def _boot(spec: dict[str, Any]) -> None:
    """The sandbox's first process (pid 1 of its PID namespace when isolated)."""
    # out of the way of 3 and 4, where the program gets them, and closed by any exec
    tok, res, status = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 1000) for fd in spec["fds"])
    for fd in spec["fds"]:
        os.close(fd)

    def report(**kw: Any) -> None:
        os.write(status, (json.dumps(kw) + "\n").encode())

    try:
        for procs in spec["cgroups"]:
            _write(procs, "0")
        libc = _Libc() if spec["isolate"] else None
        if libc is not None:
            libc.prctl(PR_SET_DUMPABLE, 0)  # the program may not ptrace or read its supervisor
            _build_root(libc, spec, spec["uid"])
        pid = os.fork()
        if pid == 0:
            try:
                _become_program(libc, spec, tok, res)
            except BaseException as exc:  # noqa: BLE001 - reported, then the child ends
                report(error=f"{type(exc).__name__}: {exc}")
            os._exit(127)
        os.close(tok)
        os.close(res)
        while True:  # pid 1 reaps the orphans too; the program's end is the sandbox's end
            done, wstatus = os.waitpid(-1, 0)
            if done == pid:
                break
    except Exception as exc:  # noqa: BLE001
        report(error=f"{type(exc).__name__}: {exc}")
        os._exit(125)
    if os.WIFSIGNALED(wstatus):
        report(signal=os.WTERMSIG(wstatus))
    else:
        report(exit=os.WEXITSTATUS(wstatus))
    os._exit(0)


if __name__ == "__main__":
    _boot(json.loads(sys.argv[1]))

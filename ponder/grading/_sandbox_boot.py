"""Inside the sandbox: its first process, :func:`_boot` (see ``_sandbox``), and the harness that
runs the program. ``_sandbox`` starts this file as a script (``python -I -S -B _sandbox_boot.py
SPEC``, under ``unshare``): it uses the standard library only and imports nothing from ponder."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import resource
import shutil
import sys
from typing import Any

TMPFS_MB = 64  # size of each private tmpfs: /tmp, /dev/shm and the program's home
FILE_MB = 64  # RLIMIT_FSIZE
HOME = "/sandbox"
DEVICES = ("null", "zero", "full", "random", "urandom")

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


MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
CLONE_NEWUSER = 0x10000000
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "loongarch64": 41, "ppc64le": 203,
                  "ppc64": 203, "s390x": 217, "i686": 217, "i386": 217}


def _unescape(path: str) -> str:  # mountinfo escapes space, tab, newline and backslash as \ooo
    return path.encode().decode("unicode_escape") if "\\" in path else path


def _within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(value)


class _Libc:
    def __init__(self) -> None:
        self.c = ctypes.CDLL(None, use_errno=True)

    def check(self, result: int, what: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int,
              data: str | None = None) -> None:
        def enc(s: str | None) -> bytes | None:
            return None if s is None else s.encode()

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
        if _within(point, top):
            st = os.statvfs(point).f_flag
            keep = (st & (MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)) \
                | (MS_RELATIME if st & 4096 else 0)  # ST_RELATIME
            libc.mount(None, point, None, MS_REMOUNT | MS_BIND | flags | keep)


def _build_root(libc: _Libc, spec: dict[str, Any], uid: int | None) -> None:
    """Mount the sandbox's root in the grader's folder and pivot into it (see ``_sandbox``)."""
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

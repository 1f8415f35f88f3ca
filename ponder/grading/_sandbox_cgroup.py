"""One cgroup per graded program, with ``memory`` (swap included) and ``pids`` limits, where the
machine lets ponder make one (cgroup v1, or a delegated v2 subtree). See ``_sandbox``."""

from __future__ import annotations

import os
import secrets
import signal
import time
from contextlib import suppress

from ._sandbox_boot import _unescape, _within, _write


class Cgroup:
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
        group = cls.create(64, 8, ("memory", "pids"))
        if group is None:
            return ()
        group.remove()
        return tuple(sorted(group.dirs))

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
        for knob in ("memory.events", "memory.oom_control"):
            for line in _read(os.path.join(folder, knob)).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit() and int(value) > 0:
                    return True
        return False

    def kill_all(self) -> None:
        for folder in set(self.dirs.values()):
            if os.path.exists(os.path.join(folder, "cgroup.kill")):
                with suppress(OSError):
                    _write(os.path.join(folder, "cgroup.kill"), "1")
            for pid in _read(os.path.join(folder, "cgroup.procs")).split():
                with suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)

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
    if root != "/" and _within(path, root):
        path = path[len(root):]
    return point + path if path != "/" else point



def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


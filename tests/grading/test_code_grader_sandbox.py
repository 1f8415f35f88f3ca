"""The code grader against programs that attack it (S1-S11 of the sandbox issue).

Every test runs real graded code through the public API. Tests that need Linux namespaces, or a
memory cgroup, skip with a reason where this machine lacks them (checked here, independently of
ponder). Attack programs end by themselves within seconds, and the tests kill what they find, so
that a grader that fails to contain them leaves nothing behind.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

import ponder
from ponder import PonderError
from ponder.grading import CodeGrader, grade_table

TESTS = "assert f(1) == 2"
GOOD = "def f(x):\n    return x + 1\n"


@functools.lru_cache(maxsize=1)
def _namespaces() -> bool:
    exe = shutil.which("unshare")
    if exe is None or not sys.platform.startswith("linux"):
        return False
    tries = ([[]] if os.geteuid() == 0 else []) + [["--user", "--map-root-user"]]
    for user in tries:
        cmd = [exe, *user, "--pid", "--fork", "--mount-proc", "--net", "true"]
        try:
            if subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0:
                return True
        except (OSError, subprocess.SubprocessError):
            pass
    return False


@functools.lru_cache(maxsize=1)
def _memory_cgroup() -> bool:
    """Whether a memory cgroup can be made under this process's own (v1, or v2 with memory)."""
    try:
        own = dict(line.rstrip("\n").split(":", 2)[1:] for line in open("/proc/self/cgroup"))
    except OSError:
        return False
    v1 = next((p for k, p in own.items() if "memory" in k.split(",")), None)
    parent = f"/sys/fs/cgroup/memory{v1}" if v1 is not None else f"/sys/fs/cgroup{own.get('', '')}"
    probe = os.path.join(parent, f"ponder-test-{uuid.uuid4().hex[:8]}")
    try:
        os.mkdir(probe)
    except OSError:
        return False
    try:
        return v1 is not None or "memory" in Path(probe, "cgroup.controllers").read_text().split()
    finally:
        os.rmdir(probe)


needs_namespaces = pytest.mark.skipif(
    not _namespaces(), reason="this kernel refuses PID/mount/network namespaces (unshare), so the "
                              "sandbox cannot be made and these attacks are not contained")


def _grader(**kw) -> CodeGrader:
    return CodeGrader(allow_code_execution=True, **kw)


def _grader_anywhere(**kw) -> CodeGrader:
    """For what holds with or without namespaces: isolated where they work."""
    return _grader(**kw) if _namespaces() else _grader(allow_no_isolation=True, **kw)


def _procs_named(name: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and Path(f"/proc/{pid}/comm").read_text().strip() == name:
                out.append(int(pid))
        except OSError:
            pass
    return out


def _gone(name: str, within_s: float = 5.0) -> bool:
    """Whether no process named ``name`` is left after waiting up to ``within_s``."""
    deadline = time.monotonic() + within_s
    while _procs_named(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _procs_named(name)


def _kill_named(name: str) -> None:
    for pid in _procs_named(name):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _ponder(args: list[str], cwd: Path, path_env: str | None = None,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # the ponder under test, wherever it was imported from (a worktree, not the installed one)
    here = str(Path(ponder.__file__).resolve().parents[1])
    env = {**os.environ, "PONDER_CONFIG": "", **(extra_env or {}),
           "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    if path_env is not None:
        env["PATH"] = path_env
    return subprocess.run([sys.executable, "-m", "ponder", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env=env)


@pytest.fixture
def open_folder():
    """A folder in the system temp folder that anyone may write to (so that file permissions
    are not what stops a program: only the sandbox may)."""
    folder = Path(tempfile.mkdtemp(prefix="ponder-test-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _table(path: Path, programs: list[str], tests: str = TESTS) -> Path:
    rows = [{"query_id": f"q{i}", "query": "write f", "model": "m", "response": p, "tests": tests}
            for i, p in enumerate(programs)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- S1: the exit code is not the pass signal --------------------------------------------------
@pytest.mark.parametrize("escape", [
    "import sys\nsys.exit(0)",
    "import os\nos._exit(0)",
    "raise SystemExit",
    # guessing at the marker: write plausible bytes to every descriptor, then leave
    "import os\nfor fd in range(3, 256):\n    try:\n        os.write(fd, b'0' * 32)\n"
    "    except OSError:\n        pass\nos._exit(0)",
])
def test_s1_exiting_before_the_tests_is_not_a_pass(escape):
    g = _grader_anywhere()  # the marker works with or without namespaces
    assert g.grade(GOOD, {"tests": TESTS}).score == 1.0
    wrong = "def f(x):\n    return 0\n" + escape + "\n"
    grade = g.grade(wrong, {"tests": TESTS})
    assert grade.score == 0.0, grade


# ---- S2: other rows cannot be found and killed -------------------------------------------------
@pytest.mark.slow
@needs_namespaces
def test_s2_a_row_cannot_kill_the_other_rows():
    name = "h" + uuid.uuid4().hex[:12]
    honest = textwrap.dedent(f"""\
        import time
        with open('/proc/self/comm', 'w') as fh:
            fh.write({name!r})
        time.sleep(2)
        def f(x):
            return x + 1
        """)
    attacker = textwrap.dedent(f"""\
        import os, signal, time
        end = time.time() + 5
        while time.time() < end:
            for pid in os.listdir('/proc'):
                try:
                    if pid.isdigit() and open(f'/proc/{{pid}}/comm').read().strip() == {name!r}:
                        os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.02)
        """)
    df = pd.DataFrame([{"query_id": f"q{i}", "query": "?", "model": "m", "tests": TESTS,
                        "response": attacker if i == 0 else honest} for i in range(4)])
    try:
        result = grade_table(df, _grader(timeout_s=30), concurrency=4)
    finally:
        _kill_named(name)
    assert result.df["score"].tolist()[1:] == [1.0, 1.0, 1.0], result.df["grade_reason"].tolist()


# ---- S3: the grader cannot be killed from inside ----------------------------------------------
@needs_namespaces
def test_s3_killing_the_parent_does_not_kill_ponder(tmp_path):
    attack = "import os, signal\ntry:\n    os.kill(os.getppid(), signal.SIGKILL)\n" \
             "except OSError:\n    pass\n" + GOOD
    _table(tmp_path / "in.jsonl", [attack, GOOD])
    r = _ponder(["grade", "in.jsonl", "--grader", "code", "--allow-code-execution",
                 "--output", "out.jsonl"], tmp_path)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    out = pd.read_json(tmp_path / "out.jsonl", lines=True)
    assert out["score"].tolist() == [1.0, 1.0]  # the kill went nowhere; its tests then passed


# ---- S4: a writer left running cannot break cleanup --------------------------------------------
@needs_namespaces
def test_s4_a_background_writer_does_not_fail_the_run():
    name = "w" + uuid.uuid4().hex[:12]
    writer = textwrap.dedent(f"""\
        import os, time
        if os.fork() == 0:
            os.setsid()
            with open('/proc/self/comm', 'w') as fh:
                fh.write({name!r})
            end, i = time.time() + 20, 0
            while time.time() < end:
                try:
                    with open(f'junk{{i % 500}}.txt', 'w') as fh:
                        fh.write('x')
                    os.makedirs(f'dir{{i % 50}}', exist_ok=True)
                except OSError:
                    pass
                i += 1
            os._exit(0)
        time.sleep(0.5)
        """) + GOOD
    df = pd.DataFrame([{"query_id": "q", "query": "?", "model": "m", "tests": TESTS,
                        "response": writer}])
    try:
        result = grade_table(df, _grader(timeout_s=15))
        assert result.df["score"].tolist() == [1.0], result.df["grade_reason"].tolist()
        assert _gone(name), "the writer outlived its grading"
    finally:
        _kill_named(name)


# ---- S5: a key the program finds never reaches the table ---------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("isolated", [
    pytest.param(True, marks=needs_namespaces),
    False,  # no unshare on PATH, --allow-no-isolation: the file is readable; scrubbing must hold
])
def test_s5_config_keys_do_not_reach_the_graded_table(tmp_path, isolated):
    key = "pk-live-" + uuid.uuid4().hex  # not sk-: only a registered key is scrubbed
    cfg = tmp_path / "ponder.toml"
    cfg.write_text(f'[providers.openai]\napi_key = "{key}"\n')
    leak = (f"text = open({str(cfg)!r}).read()\n"
            "print(text)\nraise Exception(text.replace('\\n', ' '))\n")
    _table(tmp_path / "in.jsonl", [leak])
    args = ["grade", "in.jsonl", "--grader", "code", "--allow-code-execution",
            "--output", "out.jsonl", "--config", str(cfg)]
    if isolated:
        r = _ponder(args, tmp_path)
    else:
        (tmp_path / "bin").mkdir()
        r = _ponder([*args, "--allow-no-isolation"], tmp_path, path_env=str(tmp_path / "bin"))
        assert "no isolation" in r.stderr  # said, not silent
    assert r.returncode == 0, r.stderr[-2000:]
    written = (tmp_path / "out.jsonl").read_text()
    reason = pd.read_json(tmp_path / "out.jsonl", lines=True)["grade_reason"][0]
    assert key[8:16] not in written and key[8:16] not in r.stdout + r.stderr, reason
    if not isolated:
        assert "[redacted]" in reason, reason  # the program did read it


# ---- S6: no writing outside its own folders ----------------------------------------------------
@needs_namespaces
def test_s6_no_files_outside_the_sandbox(open_folder):
    tag = uuid.uuid4().hex
    targets = [Path(f"/tmp/ponder-s6-{tag}"), open_folder / f"escaped-{tag}",
               Path.home() / f"ponder-s6-{tag}"]
    write = "targets = " + repr([str(t) for t in targets]) + textwrap.dedent("""
        import os, tempfile
        for t in targets:
            try:
                with open(t, 'w') as fh:
                    fh.write('escaped')
            except OSError:
                pass
        with open(os.path.join(tempfile.gettempdir(), 'mine'), 'w') as fh:  # its own: fine
            fh.write('ok')
        with open('here', 'w') as fh:
            fh.write('ok')
        """) + GOOD
    try:
        grade = _grader().grade(write, {"tests": TESTS})
        assert grade.score == 1.0, grade
        assert [t for t in targets if t.exists()] == []
    finally:
        for t in targets:
            t.unlink(missing_ok=True)


# ---- S7: no unix sockets (path or abstract) ----------------------------------------------------
@needs_namespaces
def test_s7_no_unix_sockets(open_folder):
    path = open_folder / "s.sock"
    abstract = "\0ponder-s7-" + uuid.uuid4().hex
    servers = []
    for address in (str(path), abstract):
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(address)
        srv.listen(8)
        srv.setblocking(False)
        servers.append(srv)
    path.chmod(0o777)  # reachable by permissions: only the namespaces stand in the way
    probe = f"addresses = {[str(path), abstract]!r}\n" + textwrap.dedent("""
        import socket
        for a in addresses:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                socket._socket.socket.connect(s, a)  # under the grader's Python-level patch
                s.sendall(b'pwned')
            except OSError:
                pass
        """) + GOOD
    try:
        grade = _grader().grade(probe, {"tests": TESTS})
        assert grade.score == 1.0, grade
        for srv, address in zip(servers, ("path", "abstract"), strict=True):
            with pytest.raises(BlockingIOError):
                srv.accept()
                pytest.fail(f"the program connected to the {address} unix socket")
    finally:
        for srv in servers:
            srv.close()


# ---- S8: no silent fallback; nothing of the grader visible ------------------------------------
def test_s8_refuses_without_namespaces_unless_told(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(PonderError, match=r"cannot isolate.*unshare.*--allow-no-isolation"):
        _grader()
    fake = tmp_path / "fake" / "unshare"  # unshare present, but the kernel says no
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    with pytest.raises(PonderError, match="Operation not permitted"):
        _grader()
    g = _grader(allow_no_isolation=True)  # said explicitly: runs, and says what it lacks
    assert any("no isolation" in note for note in g.limitations())
    assert g.grade(GOOD, {"tests": TESTS}).score == 1.0
    # the CLI refuses the same way
    _table(tmp_path / "in.jsonl", [GOOD])
    r = _ponder(["grade", "in.jsonl", "--grader", "code", "--allow-code-execution",
                 "--output", "out.jsonl"], tmp_path, path_env=str(tmp_path / "empty"))
    assert r.returncode == 1 and "--allow-no-isolation" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "out.jsonl").exists()


@needs_namespaces
def test_s8_the_grader_environment_and_network_are_out_of_reach(tmp_path):
    secret = "S8" + uuid.uuid4().hex
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.setblocking(False)
    probe = f"port, secret = {srv.getsockname()[1]}, {secret!r}\n" + textwrap.dedent("""
        import os, _socket
        for pid in os.listdir('/proc'):
            try:
                if pid.isdigit() and secret in open(f'/proc/{pid}/environ').read():
                    raise AssertionError('found the grader environment in /proc/' + pid)
            except OSError:
                pass
        s = _socket.socket()
        try:
            s.connect(('127.0.0.1', port))
            raise AssertionError('TCP connection to the host')
        except OSError:
            pass
        """) + GOOD
    _table(tmp_path / "in.jsonl", [probe])
    try:
        r = _ponder(["grade", "in.jsonl", "--grader", "code", "--allow-code-execution",
                     "--output", "out.jsonl"], tmp_path, extra_env={"PONDER_S8_TOKEN": secret})
        with pytest.raises(BlockingIOError):
            srv.accept()
    finally:
        srv.close()
    assert r.returncode == 0, r.stderr[-2000:]
    out = pd.read_json(tmp_path / "out.jsonl", lines=True)
    assert out["score"].tolist() == [1.0], out["grade_reason"].tolist()


# ---- S9: output is bounded in the grader -------------------------------------------------------
def test_s9_a_flood_of_output_does_not_grow_the_grader():
    g = _grader_anywhere(timeout_s=120)
    flood = "import sys\nline = 'x' * (1 << 20) + '\\n'\nfor _ in range(768):\n" \
            "    sys.stdout.write(line)\nsys.stdout.flush()\n" + GOOD
    g.grade(GOOD, {"tests": TESTS})  # warm: the probe and imports are not what is measured
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    grade = g.grade(flood, {"tests": TESTS})
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grade.score == 1.0, grade
    assert grown_mib < 200, f"the grader grew by {grown_mib:.0f} MiB reading 768 MiB of output"


# ---- S10: limits hold for the whole group ------------------------------------------------------
@needs_namespaces
def test_s10_the_process_count_is_limited_for_the_group():
    many = textwrap.dedent("""\
        import os, time
        for i in range(150):
            if os.fork() == 0:
                time.sleep(2)
                os._exit(0)
        """) + GOOD
    grade = _grader(timeout_s=30).grade(many, {"tests": TESTS})
    assert grade.score == 0.0, grade
    assert "Resource temporarily unavailable" in grade.reason or "BlockingIOError" in grade.reason


@pytest.mark.slow
@needs_namespaces
@pytest.mark.skipif(not _memory_cgroup(), reason="no memory cgroup can be made here: the group's "
                    "memory is then bounded only per process (RLIMIT_AS), as documented")
def test_s10_memory_is_limited_for_the_group():
    hog = textwrap.dedent("""\
        import os, time
        r, w = os.pipe()
        for _ in range(2):
            if os.fork() == 0:
                block = b'x' * (500 << 20)
                os.write(w, b'1')
                time.sleep(3)
                os._exit(0)
        os.close(w)
        block = b'x' * (500 << 20)
        got = b''
        while len(got) < 2:
            chunk = os.read(r, 2)
            if not chunk:
                break
            got += chunk
        assert got == b'11', got
        """) + GOOD
    g = _grader(timeout_s=60, memory_mb=1024)
    grade = g.grade(hog, {"tests": TESTS})
    assert grade.score == 0.0, grade
    assert "memory" in grade.reason, grade
    # one process of the same size is within the limit
    assert g.grade("block = b'x' * (500 << 20)\n" + GOOD, {"tests": TESTS}).score == 1.0


# ---- S11: nothing outlives its grading ---------------------------------------------------------
@needs_namespaces
def test_s11_a_double_forked_daemon_dies_with_its_grading():
    name = "d" + uuid.uuid4().hex[:12]
    daemon = textwrap.dedent(f"""\
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                with open('/proc/self/comm', 'w') as fh:
                    fh.write({name!r})
                for fd in (0, 1, 2):
                    os.close(fd)
                time.sleep(30)
            os._exit(0)
        time.sleep(0.5)
        """) + GOOD
    try:
        grade = _grader(timeout_s=10).grade(daemon, {"tests": TESTS})
        assert grade.score == 1.0, grade
        assert _gone(name), "the daemon outlived its grading"
    finally:
        _kill_named(name)


@pytest.mark.slow
@needs_namespaces
def test_a_python_installed_under_tmp_still_runs_in_the_sandbox() -> None:
    """A virtualenv in the system temp folder (a CI job's, a fresh clone's) is bound over the
    sandbox's private /tmp, not hidden by it (it once made the grader refuse to run)."""
    venv = Path(tempfile.mkdtemp(prefix="ponder-venv-", dir="/tmp"))
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                       timeout=120)
        root = Path(__file__).resolve().parents[2]
        code = ("from ponder.grading import CodeGrader\n"
                "g = CodeGrader(allow_code_execution=True)\n"
                f"print(g.grade({GOOD!r}, {{'tests': {TESTS!r}}}).score)")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path[1:]])}
        out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True,
                             text=True, env=env, timeout=120)
        assert out.returncode == 0 and out.stdout.strip() == "1.0", out.stderr[-2000:]
    finally:
        shutil.rmtree(venv, ignore_errors=True)

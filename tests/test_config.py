from pathlib import Path

import pytest

import ponder
from ponder import config_problems, load_config

GOOD = """
[cache]
path = "{tmp}/c"
ttl_s = 60

[providers.vllm]
type = "openai"
base_url = "http://127.0.0.1:9/v1"
max_retries = 1

[prices."vllm:qwen"]
input = 0.1
output = 0.2

[models]
fast = "vllm:qwen"
"""


def test_valid_config_loads(tmp_path: Path):
    p = tmp_path / "ponder.toml"
    p.write_text(GOOD.format(tmp=tmp_path))
    assert config_problems(p) == []
    cfg = load_config(p)
    assert cfg.providers["vllm"].base_url.endswith("/v1")
    assert cfg.models["fast"] == "vllm:qwen"
    client = ponder.Client(cfg)
    assert str(client.resolve("fast")) == "vllm:qwen"
    assert client.prices.lookup("vllm", "qwen").output == 0.2


def test_every_problem_is_reported_with_file_and_key(tmp_path: Path):
    p = tmp_path / "bad.toml"
    p.write_text(
        '[cache]\nsize_limit_mb = -5\n[providers.x]\ntype = "nope"\n[prices."a:b"]\ninput = "cheap"\n'
        '[models]\nfast = "no-colon"\n[unknown]\nz = 1\n'
    )
    problems = config_problems(p)
    keys = {pr.key for pr in problems}
    assert {"cache.size_limit_mb", "providers.x.type", "prices.a:b.input", "unknown"} <= keys
    assert all(pr.file == str(p) for pr in problems)
    with pytest.raises(ponder.ConfigError) as exc:
        load_config(p)
    assert str(p) in str(exc.value) and "more" in str(exc.value)


def test_invalid_toml_and_missing_file(tmp_path: Path):
    p = tmp_path / "broken.toml"
    p.write_text("[cache\n")
    (problem,) = config_problems(p)
    assert "invalid TOML" in str(problem) and str(p) in str(problem)
    (missing,) = config_problems(tmp_path / "nope.toml")
    assert "not found" in str(missing)


def test_api_key_in_config_is_secret(tmp_path: Path):
    p = tmp_path / "k.toml"
    p.write_text('[providers.openai]\napi_key = "sk-planted-secret-123456"\n')
    cfg = load_config(p)
    assert "sk-planted-secret-123456" not in repr(cfg)
    assert "sk-planted-secret-123456" not in cfg.model_dump_json()


def test_a_registered_provider_type_is_valid_in_the_config(tmp_path: Path, monkeypatch):
    """``@providers.register`` is the one list of provider types: the config checks against it."""
    from ponder._config import PROVIDER_TYPES
    from ponder.providers import build_provider, provider_kinds, register

    p = tmp_path / "p.toml"
    p.write_text('[providers.mine]\ntype = "echo"\n[providers.echo]\n[models]\nfast = "echo:m"\n')
    problems = {pr.key: pr for pr in config_problems(p)}
    assert set(problems) == {"providers.mine.type", "providers.echo.type"}
    typo = str(problems["providers.mine.type"])
    assert "unknown provider type 'echo'" in typo and str(p) in typo
    assert all(kind in typo for kind in provider_kinds())

    monkeypatch.setitem(PROVIDER_TYPES, "echo", None)  # removed again after the test
    built = object()
    register("echo")(lambda name, settings, prices, common: built)
    assert config_problems(p) == [] and "echo" in provider_kinds()
    cfg = load_config(p)
    assert build_provider("mine", cfg.providers["mine"], ponder.PriceTable.default()) is built

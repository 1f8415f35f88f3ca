"""Strategy files (small JSON), how a table's model names go live, and loading one as a live
strategy. The files a strategy file names must stay inside its own folder unless the caller
passes ``allow_outside=True``: a downloaded strategy must not read files it was not shipped with.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError
from .._persist import read_capped
from .._types import ModelSpec
from ._fallthrough import SingleModel
from ._protocol import LiveStrategy, as_live

_KIND_MODULES = {"cascade": "ponder.cascade", "router": "ponder.routers",
                 "route-cascade": "ponder.routers", "fallback": "ponder.strategies._fallthrough"}

STRATEGY_FORMAT = "ponder-strategy"
MAX_STRATEGY_BYTES = 1 << 20
_OUTSIDE_HINT = ("a strategy file may only name files in its own folder; move the file there, "
                 "or, if you trust this strategy file, pass --allow-outside (allow_outside=True in Python)")


def live_spec(model: str, model_map: dict[str, str] | None = None) -> str:
    """Outcome-table model name → ``provider:model`` (map first, ``a:b`` as is, else replay)."""
    if model_map and model in model_map:
        return str(model_map[model])
    return model if ":" in model else f"replay:{model}"


def live_model_map(models: Iterable[str], model_map: dict[str, str] | None = None,
                   config: Any = None) -> dict[str, str] | None:
    """``model_map``, over the ``config``'s ``[models]`` aliases of ``models``; None when empty."""
    aliases = getattr(config, "models", None) or {}
    out = {m: str(aliases[m]) for m in models if m in aliases}
    out.update(model_map or {})
    return out or None


def read_strategy_json(path: str | Path) -> dict[str, Any]:
    """Parse a strategy file: a regular file of at most 1 MiB holding a JSON object."""
    path = Path(path)
    try:
        data = json.loads(read_capped(path, MAX_STRATEGY_BYTES).decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError("strategy file not found", file=str(path)) from None
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: too big, not JSON, ...
        raise ConfigError(f"not a valid JSON strategy file: {exc}", file=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError("not a ponder strategy file (not a JSON object)", file=str(path))
    return data


def resolve_reference(strategy_file: str | Path, value: Any, *, key: str,
                      allow_outside: bool = False) -> Path:
    """The file a strategy file names under ``key``, relative to its folder and (unless
    ``allow_outside``) inside it, symlinks resolved."""
    strategy_file = Path(strategy_file)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"needs a string path in {key!r}", file=str(strategy_file), key=key)
    ref, base = Path(value), strategy_file.parent
    full = ref if ref.is_absolute() else base / ref
    if allow_outside:
        return full
    if ref.is_absolute() or ref.drive:
        problem = f"{value!r} is an absolute path"
    elif ".." in ref.parts:
        problem = f"{value!r} leads out of the strategy's folder ('..')"
    elif not full.resolve().is_relative_to(base.resolve()):
        problem = f"{value!r} resolves to {full.resolve()}, outside the strategy's folder"
    else:
        return full
    raise ConfigError(f"{problem}; {_OUTSIDE_HINT}", file=str(strategy_file), key=key)


def load_strategy(path: str | Path, *, allow_outside: bool = False) -> LiveStrategy:
    """Load a strategy file as a live strategy. Model files load with bounded memory and never
    execute code, but only load strategies from sources you trust."""
    path = Path(path)
    data = read_strategy_json(path)
    if data.get("format") != STRATEGY_FORMAT:
        raise ConfigError("not a ponder strategy file (missing \"format\": \"ponder-strategy\")",
                          file=str(path))
    kind = str(data.get("kind", ""))
    module = next((m for k, m in _KIND_MODULES.items() if kind == k or kind.startswith(k + "-")
                   or kind.startswith(k + ":")), None)
    strategy: LiveStrategy
    if kind == "single":
        strategy = SingleModel(str(data["model"]))
    elif module is None:
        raise ConfigError(f"unknown strategy kind {kind!r}", file=str(path), key="kind")
    else:
        strategy = importlib.import_module(module).load_strategy_file(path, data,
                                                                      allow_outside=allow_outside)
    if not allow_outside:
        for model in strategy.models:
            _check_local_model(path, model)
    return strategy


def resolve(strategy: Any, config: Any = None, *, allow_outside: bool = False) -> LiveStrategy:
    """A live object, a strategy file, a ``[strategies.NAME]`` entry of ``config``, a ``[models]``
    alias or a ``provider:model`` spec, as a live strategy (for the CLI and the server alike)."""
    if not isinstance(strategy, (str, Path)):
        return as_live(strategy)
    path = Path(strategy)
    entries = getattr(config, "strategies", {}) or {}
    if not path.exists() and str(strategy) in entries:
        base = Path(config.source).parent if config.source else Path(".")
        path = base / entries[str(strategy)].path
    if path.exists() or isinstance(strategy, Path) or str(strategy).endswith(".json"):
        return load_strategy(path, allow_outside=allow_outside)
    aliases = getattr(config, "models", {}) or {}
    return SingleModel(str(ModelSpec.parse(aliases.get(str(strategy), str(strategy)))))


def _check_local_model(strategy_file: Path, model: str) -> None:
    """A ``local:PATH`` model is a file the strategy names (from the working directory, as the
    provider opens it): the same rule holds. Built-in names (``local:smollm2``) are not files."""
    from ..local._provider import _DEFAULT_NAMES

    provider, _, name = model.partition(":")
    if provider != "local" or not name:
        return
    opened = Path(name).expanduser()
    if not opened.exists() and name.lower() in _DEFAULT_NAMES:
        return
    base = strategy_file.parent.resolve()
    if not opened.resolve().is_relative_to(base):
        raise ConfigError(f"the local model {model!r} opens {opened.resolve()}, outside the "
                          f"strategy's folder; {_OUTSIDE_HINT}", file=str(strategy_file),
                          key="models")

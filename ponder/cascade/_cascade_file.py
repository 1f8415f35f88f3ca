"""Reading a cascade's strategy file back: :func:`load_strategy_file` checks every field and
loads the scorers safely (moved here from :mod:`._cascade`, which writes the file with
:meth:`Cascade.save`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError, ModelFileError
from ..strategies import STRATEGY_FORMAT, live_spec, read_strategy_json, resolve_reference
from ._agreement import AgreementSet
from ._cascade import SET_STRATEGY_VERSION, STRATEGY_VERSION, Cascade
from ._policy import Rung

__all__ = ["load_strategy_file"]


def load_strategy_file(path: str | Path, data: dict[str, Any] | None = None, *,
                       allow_outside: bool = False) -> Cascade:
    """Build a :class:`Cascade` from a strategy JSON (``kind: "cascade"``); scorers load safely.

    Scorer folders must lie in the strategy file's folder unless ``allow_outside`` (see
    :func:`ponder.strategies.resolve_reference`).
    """
    from ..scorers import AnswerScorer

    p = Path(path)
    if data is None:
        data = read_strategy_json(p)

    def bad(reason: str, key: str) -> ConfigError:
        return ConfigError(reason, file=str(p), key=key)

    if data.get("format") != STRATEGY_FORMAT:
        raise bad("not a ponder strategy file (format)", "format")
    if data.get("version") not in (STRATEGY_VERSION, SET_STRATEGY_VERSION):
        raise bad(f"strategy version {data.get('version')!r} is not supported (this ponder reads "
                  f"{STRATEGY_VERSION} and {SET_STRATEGY_VERSION})", "version")
    if data.get("kind") != "cascade":
        raise bad(f"kind {data.get('kind')!r} is not a cascade", "kind")
    raw = data.get("rungs")
    if not isinstance(raw, list) or not raw:
        raise bad("'rungs' must be a non-empty list", "rungs")
    model_map = data.get("model_map") or {}
    cache: dict[str, AnswerScorer] = {}
    rungs = []
    for i, r in enumerate(raw):
        if not isinstance(r, dict) or "model" not in r:
            raise bad("each rung needs a 'model'", f"rungs[{i}]")
        scorer = None
        spath = r.get("scorer")
        agree = None
        if r.get("agree") is not None:
            if data.get("version") != SET_STRATEGY_VERSION:
                raise bad(f"set rungs need strategy version {SET_STRATEGY_VERSION}", "version")
            try:
                agree = AgreementSet.from_json(r["agree"], where=f"rungs[{i}].agree")
            except ConfigError as exc:
                raise bad(exc.reason, f"rungs[{i}].agree") from None
            except ModelFileError as exc:
                raise ModelFileError(str(exc), path=str(p)) from None
            agree = replace(agree, specs=tuple(live_spec(m, model_map) for m in agree.members))
        if spath is not None and not isinstance(spath, str):
            raise bad("'scorer' must be a path (a rung without one accepts any answer its "
                      "verifiers pass)", f"rungs[{i}].scorer")
        if spath:
            full = resolve_reference(p, spath, key=f"rungs[{i}].scorer",
                                     allow_outside=allow_outside)
            if str(full) not in cache:
                cache[str(full)] = AnswerScorer.load(full)
            scorer = cache[str(full)]
        try:
            threshold = float(r.get("threshold", 0.5))
        except (TypeError, ValueError):
            raise bad("threshold must be a number", f"rungs[{i}].threshold") from None
        samples, logprobs = r.get("samples", 1), r.get("logprobs", False)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise bad("samples must be a whole number >= 1", f"rungs[{i}].samples")
        if not isinstance(logprobs, bool):
            raise bad("logprobs must be true or false", f"rungs[{i}].logprobs")
        rungs.append(Rung(
            model=str(r["model"]), threshold=threshold, scorer=scorer,
            spec=live_spec(str(r["model"]), model_map),
            expected_cost_usd=r.get("expected_cost_usd"),
            scorer_path=str(spath) if spath else None, samples=samples, logprobs=logprobs,
            agree=agree,
        ))
    info = {k: v for k, v in data.items()
            if k not in ("format", "version", "kind", "name", "rungs", "budget_usd", "model_map")}
    return Cascade(rungs, budget_usd=data.get("budget_usd"), name=str(data.get("name", p.stem)),
                   info=info)

"""Apache-2.0 outcome tables shipped in ``ponder/data/`` (SHA-256 checked on load), so ``ponder
eval`` works offline. Rebuild: ``python -m ponder.evaluation._bundled /path/to/shared/data``."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._exceptions import DataError
from . import _loaders as L
from ._table import OutcomeTable, table_format, write_table

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
INDEX = DATA_DIR / "datasets.json"
DEFAULT_DATASET = "llmdrift-prime"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class _Recipe:
    name: str
    description: str
    source: str
    license: str
    build: str  # loader call, for the record
    load: Callable[..., OutcomeTable]  # the loader that builds it from the raw file ``raw``
    raw: str  # under the shared data folder
    options: dict[str, Any] = field(default_factory=dict)


RECIPES = (
    _Recipe("llmdrift-prime",
            "Is N prime? 1,000 queries × 4 OpenAI snapshots (GPT-3.5/GPT-4, March and June 2023); "
            "real per-call USD cost; scored by the last [Yes]/[No] against the reference.",
            "github.com/lchen001/LLMDrift @ 4938eb7, generation/PRIME_FULL_EVAL.csv",
            "Apache-2.0", "load_generation_cache(PRIME_FULL_EVAL.csv, scoring='prime')",
            L.load_generation_cache, "llmdrift/PRIME_FULL_EVAL.csv", {"scoring": "prime"}),
    _Recipe("routellm-gsm8k",
            "GSM8K test: GPT-4-1106 vs Mixtral-8x7B with responses and RouteLLM's grading; "
            "decontaminated as RouteLLM does; cost estimated from text length at the paper's "
            "$24.7 / $0.24 per 1M tokens.",
            "github.com/lm-sys/RouteLLM @ 0b64fda, routellm/evals/gsm8k/",
            "Apache-2.0", "load_routellm_gsm8k(gsm8k_responses.csv)",
            L.load_routellm_gsm8k, "routellm-evals/gsm8k_responses.csv"),
    _Recipe("routellm-mmlu",
            "MMLU (57 subjects, 14k questions): GPT-4-1106 vs Mixtral-8x7B correctness; "
            "decontaminated; cost estimated from prompt length at the paper's prices.",
            "github.com/lm-sys/RouteLLM @ 0b64fda, routellm/evals/mmlu/responses/",
            "Apache-2.0", "load_routellm_mmlu(mmlu_responses.csv)",
            L.load_routellm_mmlu, "routellm-evals/mmlu_responses.csv"),
    _Recipe("routellm-mt-bench",
            "MT-Bench: GPT-4-1106 vs Mixtral-8x7B, GPT-4 single-grade judgments (score/10, mean "
            "of both turns); decontaminated; cost estimated at the paper's prices.",
            "github.com/lm-sys/RouteLLM @ 0b64fda, routellm/evals/mt_bench/",
            "Apache-2.0", "load_routellm_mtbench(mt_bench_judgements.jsonl)",
            L.load_routellm_mtbench, "routellm-evals/mt_bench_judgements.jsonl"),
    _Recipe("routerarena",
            "RouterArena sub_10 split (809 queries over ~36 benchmarks): Gemini-2.0-Flash vs "
            "Claude-3-Haiku with answers, RouterArena's per-benchmark scores and USD cost.",
            "github.com/RouteWorks/RouterArena @ 4714a9a, cached_results/",
            "Apache-2.0", "load_routerarena(cached_results/)",
            L.load_routerarena, "routerarena/cached_results"),
)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _index() -> dict[str, dict[str, Any]]:
    if not INDEX.exists():
        return {}
    data = json.loads(INDEX.read_text(encoding="utf-8"))
    if data.get("format") != "ponder-datasets" or data.get("version") != FORMAT_VERSION:
        raise DataError("unsupported bundled-data index", file=str(INDEX))
    return {d["name"]: d for d in data["datasets"]}


def list_datasets() -> list[dict[str, Any]]:
    """Bundled datasets: name, description, models, queries, rows, source, license."""
    return [dict(v) for v in _index().values()]


def load_bundled(name: str) -> OutcomeTable:
    idx = _index()
    if name not in idx:
        raise DataError(f"no bundled dataset {name!r}; bundled: {', '.join(idx) or 'none'}")
    entry = idx[name]
    path = DATA_DIR / entry["file"]
    if not path.exists():
        raise DataError("bundled file missing from the installation", file=str(path))
    if _sha256(path) != entry["sha256"]:
        raise DataError("bundled file does not match its recorded SHA-256", file=str(path))
    return OutcomeTable.read(path, name=name)


def load_dataset(name_or_path: str | Path, *, graded: bool = True) -> OutcomeTable:
    """A bundled dataset by name, or any supported file/folder by path (see ``load_path``)."""
    key = str(name_or_path)
    if not isinstance(name_or_path, Path) and key in _index():
        return load_bundled(key)
    p = Path(key)
    if not p.exists():
        raise DataError(
            f"not a file and not a bundled dataset (bundled: {', '.join(_index()) or 'none'})",
            file=key)
    return L.load_path(p, graded=graded)


def export_dataset(name: str, out: str | Path) -> Path:
    """Write a dataset as an outcome table in the format its suffix says."""
    table_format(Path(out))  # an unknown format fails before the dataset is read
    return write_table(load_dataset(name).df, out)


def build(shared: str | Path, out_dir: Path = DATA_DIR) -> list[dict[str, Any]]:
    """Convert the raw public files into the bundled Parquet tables and write the index."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for r in RECIPES:
        t = r.load(Path(shared) / r.raw, **r.options)
        file = f"{r.name}.parquet"
        # Rows of one query side by side: the repeated prompt then compresses to almost nothing.
        order = t.df["query_id"].map({q: i for i, q in enumerate(t.query_ids)})
        df = t.df.assign(_o=order).sort_values(["_o", "model"], kind="stable").drop(columns="_o")
        df.to_parquet(out_dir / file, index=False, compression="zstd", compression_level=19,
                      row_group_size=len(df))
        entries.append({"name": r.name, "file": file, "description": r.description,
                        "source": r.source, "license": r.license, "built_with": r.build,
                        "models": list(t.models), "n_queries": len(t.query_ids), "n_rows": len(t),
                        "sha256": _sha256(out_dir / file)})
    (out_dir / "datasets.json").write_text(json.dumps(
        {"format": "ponder-datasets", "version": FORMAT_VERSION, "default": DEFAULT_DATASET,
         "datasets": entries}, indent=1) + "\n", encoding="utf-8")
    return entries


if __name__ == "__main__":  # pragma: no cover - a maintainer's build step
    for e in build(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"):
        print(f"{e['name']}: {e['n_rows']} rows, {(DATA_DIR / e['file']).stat().st_size:,} bytes")

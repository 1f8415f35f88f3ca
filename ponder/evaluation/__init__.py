"""Offline evaluation on outcome tables."""

from ._bundled import DEFAULT_DATASET, export_dataset, list_datasets, load_dataset
from ._evaluator import EvalResult, evaluate
from ._loaders import (
    SCORING_RULES,
    load_generation_cache,
    load_path,
    load_routellm_gsm8k,
    load_routellm_mmlu,
    load_routellm_mtbench,
    load_routerarena,
    load_routerbench,
)
from ._strategy import (
    OperatingPoint,
    Strategy,
    build_strategies,
    register_strategy,
    registered_strategies,
)
from ._table import OPTIONAL, REQUIRED, OutcomeTable, read_outcomes

__all__ = [
    "DEFAULT_DATASET",
    "OPTIONAL",
    "REQUIRED",
    "SCORING_RULES",
    "EvalResult",
    "OperatingPoint",
    "OutcomeTable",
    "Strategy",
    "build_strategies",
    "evaluate",
    "export_dataset",
    "list_datasets",
    "load_dataset",
    "load_generation_cache",
    "load_path",
    "load_routellm_gsm8k",
    "load_routellm_mmlu",
    "load_routellm_mtbench",
    "load_routerarena",
    "load_routerbench",
    "read_outcomes",
    "register_strategy",
    "registered_strategies",
]

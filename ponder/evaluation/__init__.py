"""Offline evaluation on outcome tables."""

from ._strategy import OperatingPoint, Strategy, build_strategies, register_strategy, registered_strategies
from ._table import OPTIONAL, REQUIRED, OutcomeTable, read_outcomes

__all__ = [
    "OPTIONAL",
    "REQUIRED",
    "OperatingPoint",
    "OutcomeTable",
    "Strategy",
    "build_strategies",
    "read_outcomes",
    "register_strategy",
    "registered_strategies",
]

"""Answer scorers: P(response acceptable | query, response, model, earlier rungs' answers), as
scikit-learn estimators saved as JSON + npz (nothing is unpickled)."""

from ._scorer import AnswerScorer, scorer_frame
from ._signals import SIGNAL_NAMES, signal_columns, table_signals

__all__ = ["SIGNAL_NAMES", "AnswerScorer", "scorer_frame", "signal_columns", "table_signals"]

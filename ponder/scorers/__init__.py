"""Answer scorers: P(response acceptable | query, response, model, earlier rungs' answers).

A scorer is a scikit-learn style estimator (``fit(X, y)`` returns self, learned state ends in
``_``, ``NotFittedError`` before fit, calibrated ``predict_proba``). It saves as JSON + npz with a
format version and content hash (``save(dir)`` / ``AnswerScorer.load(dir)``); nothing is unpickled.
"""

from ._scorer import AnswerScorer, scorer_frame
from ._signals import SIGNAL_NAMES, signal_columns, table_signals

__all__ = ["SIGNAL_NAMES", "AnswerScorer", "scorer_frame", "signal_columns", "table_signals"]

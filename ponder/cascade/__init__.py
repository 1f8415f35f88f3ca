"""FrugalGPT-style cascades: cheapest model first, a scorer judges, climb only when needed.

- :class:`Cascade` / :class:`Rung`: the live object (``run``/``arun`` with a ``ponder.Client``)
  that also replays outcome tables offline; :func:`decide` is its whole policy.
- :class:`CascadeOptimizer`: cross-fitted scorers + a vectorised search over every chain of
  ≤ 3 models and its thresholds (:func:`optimize_chains`), for a budget or a target quality.
- :class:`AgreementSet` / :class:`Acceptor`: a rung that is a set of models whose answers are
  compared (two called, the third only on disagreement), accepted by a learned, calibrated
  acceptor on the agreement pattern; :func:`set_state` is its pure policy.
- :func:`certify`: thresholds with an (ε, δ) guarantee on the quality drop (Learn-then-Test).
- :func:`load_strategy_file`: build a cascade from a strategy JSON (``ponder ask --strategy``).
Importing this module registers the ``cascade`` strategy for ``ponder eval``.
"""

from ..strategies import live_spec
from ._agreement import Acceptor, AgreementSet, set_state
from ._cascade import Cascade
from ._cascade_file import load_strategy_file
from ._fit import CascadeOptimizer, certify, crossfit_scores, fit_scorer, training_frame
from ._optimize import ChainChoice, Frontier, optimize_chains
from ._policy import Rung, Step, decide
from ._strategy import CascadeStrategy

__all__ = [
    "Acceptor",
    "AgreementSet",
    "Cascade",
    "CascadeOptimizer",
    "CascadeStrategy",
    "ChainChoice",
    "Frontier",
    "Rung",
    "Step",
    "certify",
    "crossfit_scores",
    "decide",
    "fit_scorer",
    "live_spec",
    "load_strategy_file",
    "optimize_chains",
    "set_state",
    "training_frame",
]

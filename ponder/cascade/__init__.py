"""FrugalGPT-style cascades: cheapest model first, a scorer judges, climb only when needed.

:class:`Cascade` answers live and replays tables by one policy (:func:`decide`);
:class:`CascadeOptimizer` searches chains and thresholds for a budget or a target;
:class:`AgreementSet` rungs compare several models' answers; :func:`certify` adds an (ε, δ)
guarantee. Importing this module registers the ``cascade`` strategy for ``ponder eval``.
"""

from ..strategies import live_spec
from ._agreement import Acceptor, AgreementSet, set_state
from ._cascade import Cascade, load_strategy_file
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

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cascade"


@pytest.fixture(scope="session")
def outcomes_path() -> Path:
    return FIXTURES / "outcomes.csv"


@pytest.fixture(scope="session")
def table(outcomes_path):
    from ponder.evaluation import read_outcomes

    return read_outcomes(outcomes_path)


@pytest.fixture(scope="session")
def split(table):
    return table.split()


@pytest.fixture(scope="session")
def scorer(split):
    from ponder.cascade import fit_scorer

    return fit_scorer(split[0])


@pytest.fixture(scope="session")
def optimizer(split):
    from ponder.cascade import CascadeOptimizer

    return CascadeOptimizer(folds=3).fit(split[0])

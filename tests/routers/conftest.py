from __future__ import annotations

from pathlib import Path

import pytest

from ponder.evaluation import read_outcomes

FIXTURE = Path(__file__).parents[1] / "fixtures" / "routers" / "outcomes.csv"


@pytest.fixture(scope="session")
def table():
    return read_outcomes(FIXTURE)


@pytest.fixture(scope="session")
def split(table):
    return table.split()  # the fixture's split column: 100 train / 50 test queries


@pytest.fixture
def fixture_path() -> Path:
    return FIXTURE

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

HERE = Path(__file__).parent
FIXTURES = HERE.parent / "fixtures" / "evaluation"


def hand_rows() -> list[dict]:
    """A table small enough to compute by hand (values are exact in binary floating point).

    test queries q1..q4, models a (cheap) / b / c (dear):
        q1: a 1.0 $0.25 | b 1.0 $0.50 | c 1.00 $2
        q2: a 0.0 $0.25 | b 1.0 $0.50 | c 1.00 $2
        q3: a 0.0 $0.25 | b 0.0 $0.50 | c 1.00 $2
        q4: a 0.5 $0.25 | b 0.5 $0.75 | c 0.25 $4
    train queries t1..t4 mirror them.
    """
    grid = {
        "1": [(1.0, 0.25), (1.0, 0.5), (1.0, 2.0)],
        "2": [(0.0, 0.25), (1.0, 0.5), (1.0, 2.0)],
        "3": [(0.0, 0.25), (0.0, 0.5), (1.0, 2.0)],
        "4": [(0.5, 0.25), (0.5, 0.75), (0.25, 4.0)],
    }
    rows = []
    for split, prefix in (("train", "t"), ("test", "q")):
        for k, cells in grid.items():
            for model, (score, cost) in zip("abc", cells, strict=True):
                rows.append({"query_id": f"{prefix}{k}", "query": f"question {k}" + " long" * int(k),
                             "model": model, "score": score, "cost_usd": cost, "split": split,
                             "task": "even" if int(k) % 2 == 0 else "odd"})
    return rows


@pytest.fixture
def hand_df() -> pd.DataFrame:
    return pd.DataFrame(hand_rows())


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES

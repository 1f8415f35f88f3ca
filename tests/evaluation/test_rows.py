"""OutcomeRows: a strategy's (settings × queries) outcomes held as model indices where exact."""

from __future__ import annotations

import numpy as np
import pytest

from ponder.evaluation._rows import OutcomeRows, compact


def _table(rng: np.random.Generator, q: int = 50, m: int = 4) -> np.ndarray:
    values = rng.random((q, m))
    values[3, 1] = np.nan  # a missing answer
    return values


def test_rows_read_back_bit_for_bit_and_routed_rows_take_one_byte_a_query():
    rng = np.random.default_rng(0)
    values = _table(rng)
    q = values.shape[0]
    pick = rng.integers(0, 4, (3, q))
    routed = values[np.arange(q), pick]  # a router's rows: the table's own values
    failed = routed[0].copy()
    failed[[5, 7]] = 0.0  # a failed call scores 0, which no model has there
    failed[9] = np.nan
    summed = values[:, 0] + values[:, 2]  # a cascade's cost: not any one model's
    rows = np.vstack([routed, failed, summed])
    held = OutcomeRows(values, rows)
    assert held.shape == rows.shape and len(held) == 5
    assert np.asarray(held).tobytes() == rows.tobytes()
    assert [r.dtype for r in held._rows] == [np.int8] * 4 + [np.float64]
    assert held.nbytes == 4 * q + 8 * q
    assert held[1].tobytes() == rows[1].tobytes()
    assert np.array_equal(held[3, [5, 9]], rows[3, [5, 9]], equal_nan=True)
    assert np.array_equal(held[:, 2:6], rows[:, 2:6], equal_nan=True)
    assert np.array_equal(held[np.array([4, 0])], rows[[4, 0]], equal_nan=True)
    row = held[0]
    row[:] = -1  # a row read out is a copy: the held one stays
    assert held[0].tobytes() == rows[0].tobytes()


def test_a_row_of_the_wrong_length_is_refused_and_other_shapes_pass_through():
    values = _table(np.random.default_rng(1))
    with pytest.raises(ValueError, match="shape"):
        OutcomeRows(values, [np.zeros(7)])
    one = np.zeros(values.shape[0])
    assert compact(values, one) is one  # not (P, Q): left as it is
    held = compact(values, values[:, :2].T.copy())
    assert isinstance(held, OutcomeRows) and compact(values, held) is held


def test_numpy_operators_read_the_rows_whole():
    values = _table(np.random.default_rng(2))
    rows = values[:, [0, 2]].T.copy()
    held = OutcomeRows(values, rows)
    assert np.array_equal(held >= rows[:, :1], rows >= rows[:, :1])
    assert np.array_equal(rows[:, :1] <= held, rows[:, :1] <= rows)
    assert np.isfinite(held).sum() == np.isfinite(rows).sum()

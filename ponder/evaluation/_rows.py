"""Per-query outcomes of many settings, held compactly and without loss: at 10^6 queries they
are most of what ``ponder eval`` holds, but most rows are, query by query, some model's value in
the table (a router's pick, the oracle), kept as model indices (a byte a query), bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeAlias

import numpy as np


class OutcomeRows:
    """A read-only (P, Q) float64 array stored row by row as indices into the table's per-model
    ``values`` (Q, M) where that is exact. ``a[i]``/``a[i, cols]`` decode that row only."""

    def __init__(self, values: np.ndarray, rows: Iterable[np.ndarray]) -> None:
        self._values = np.asarray(values, dtype=np.float64)  # the table's own array, not a copy
        q, m = self._values.shape
        # two codes past the models for values a row may hold that no model does: NaN and 0
        self._nan, self._zero = m, m + 1
        code_type = np.int8 if m + 2 <= 127 else np.int32
        self._rows: list[np.ndarray] = [self._encode(np.asarray(r, dtype=np.float64), code_type)
                                        for r in rows]
        self.shape = (len(self._rows), q)

    def _encode(self, row: np.ndarray, code_type: type) -> np.ndarray:
        if row.shape != (self._values.shape[0],):
            raise ValueError(f"a row has shape {row.shape}, expected ({self._values.shape[0]},)")
        eq = self._values == row[:, None]
        found, nan = eq.any(axis=1), np.isnan(row)
        if not (found | nan | (row == 0.0)).all():
            kept: np.ndarray = row.copy()  # not the table's values: kept as it is
            return kept
        code: np.ndarray = np.where(found, eq.argmax(axis=1), np.where(nan, self._nan, self._zero))
        return code.astype(code_type)

    def _decode(self, i: int) -> np.ndarray:
        r = self._rows[i]
        if r.dtype == np.float64:
            return r
        out: np.ndarray = np.take_along_axis(
            self._values, np.minimum(r, self._nan - 1).astype(np.intp)[:, None], axis=1)[:, 0]
        if r.size and r.max() >= self._nan:
            out[r == self._nan], out[r == self._zero] = np.nan, 0.0
        return out

    ndim = 2
    dtype = np.dtype(np.float64)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = np.empty(self.shape)
        for i in range(self.shape[0]):
            out[i] = self._decode(i)
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            row = self._decode(int(key))
            return row.copy() if row is self._rows[int(key)] else row  # (a held row: a copy)
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], (int, np.integer)):
            return self._decode(int(key[0]))[key[1]]
        return np.asarray(self)[key]

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self._rows)


def compact(values: np.ndarray, rows: np.ndarray | OutcomeRows) -> np.ndarray | OutcomeRows:
    """``rows`` (P, Q) as :class:`OutcomeRows` against the table's ``values`` (Q, M)."""
    if isinstance(rows, OutcomeRows) or rows.ndim != 2 or rows.shape[1] != values.shape[0]:
        return rows
    return OutcomeRows(values, rows)


# what a curve or a replay holds per setting and query: a plain (P, Q) array or OutcomeRows
Rows: TypeAlias = "np.ndarray | OutcomeRows"

"""The scorer's group folds are GroupKFold's, fold for fold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import GroupKFold

from ponder.scorers._stacking import group_folds


@pytest.mark.parametrize("per_group", [1, 3, "uneven"])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_group_folds_are_group_k_folds(per_group, k):
    rng = np.random.default_rng(k)
    n_groups = 103
    sizes = rng.integers(1, 5, n_groups) if per_group == "uneven" else np.full(n_groups, per_group)
    groups = rng.permutation(np.repeat(rng.permutation(n_groups) * 7, sizes))
    for g in (groups, groups.astype(str)):
        want = list(GroupKFold(n_splits=k).split(g, g, g))
        got = group_folds(g, k)
        assert len(got) == len(want)
        for (tr, te), (wtr, wte) in zip(got, want, strict=True):
            assert np.array_equal(tr, wtr) and np.array_equal(te, wte)


def test_too_few_groups_is_group_k_folds_error():
    with pytest.raises(ValueError, match="number of groups"):
        group_folds(np.array([1, 1, 2]), 3)

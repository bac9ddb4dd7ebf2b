"""A client's own choice of local K and reg_covar on held-out rows."""

from __future__ import annotations

import numpy as np
import pytest

from fedgmm.federated.local_selection import candidate_components, select_local_model


def test_candidates_are_capped_by_the_rows() -> None:
    assert candidate_components(10, 1000) == [10, 20, 40]
    assert candidate_components(10, 120, min_samples_per_component=5) == [10, 20, 24]
    assert candidate_components(10, 12) == [2]


def test_chooses_by_held_out_likelihood_and_refits_on_all_rows(blobs) -> None:  # type: ignore[no-untyped-def]
    X, _ = blobs(400, 3, 3, seed=0)
    state, rec = select_local_model(X, [2, 3, 6], reg_covars=(1e-6, 0.1), seed=1)
    assert set(rec.scores) == {(k, r) for k in (2, 3, 6) for r in (1e-6, 0.1)}
    assert (rec.n_components, rec.reg_covar) == max(rec.scores, key=rec.scores.__getitem__)
    assert rec.n_components >= 3  # three well-separated blobs
    assert rec.n_train + rec.n_holdout == 400 and rec.n_holdout == 100
    assert state.n_components == rec.n_components
    again, rec2 = select_local_model(X, [2, 3, 6], reg_covars=(1e-6, 0.1), seed=1)
    np.testing.assert_array_equal(state.means, again.means)
    assert rec2 == rec


def test_overfitting_client_picks_a_larger_reg_covar() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8))  # 8-D, 60 rows, 4 full components: 1e-6 overfits badly
    _, rec = select_local_model(X, 4, reg_covars=(1e-6, 0.3), seed=0)
    assert rec.reg_covar == 0.3
    assert rec.scores[(4, 0.3)] > rec.scores[(4, 1e-6)]


def test_tiny_client_degrades_with_a_clear_record(blobs) -> None:  # type: ignore[no-untyped-def]
    X, _ = blobs(15, 2, 2, seed=0)
    state, rec = select_local_model(X, [4, 8], reg_covars=(1e-6, 0.05, 0.3), seed=0)
    assert rec.scores == {} and rec.n_holdout == 0 and rec.n_train == 15
    assert (rec.n_components, rec.reg_covar) == (3, 0.3)
    assert "only 15 rows" in rec.reason and "K=3" in rec.reason
    assert state.n_components == 3


def test_rejects_bad_arguments(blobs) -> None:  # type: ignore[no-untyped-def]
    X, _ = blobs(50, 2, 2, seed=0)
    with pytest.raises(ValueError, match="holdout_fraction"):
        select_local_model(X, 2, holdout_fraction=1.0, seed=0)
    with pytest.raises(ValueError, match="at least one"):
        select_local_model(X, [], seed=0)
    with pytest.raises(ValueError, match="2 rows"):
        select_local_model(X[:1], 2, seed=0)

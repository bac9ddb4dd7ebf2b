"""The membership audit detects an overfit release and reports chance on an unrelated one."""

from __future__ import annotations

import numpy as np
import pytest

from fedgmm.gaussian_mixture import GaussianMixture
from fedgmm.privacy.audit import audit_release, evaluate_attack, likelihood_attack


def _population(rng: np.random.Generator, n: int) -> np.ndarray:
    centres = np.array([[-2.0, 0, 0, 0], [2.0, 0, 0, 0], [0, 2.0, 0, 0]])
    return centres[rng.integers(0, 3, n)] + rng.normal(size=(n, 4))


def test_overfit_model_leaks_membership() -> None:
    rng = np.random.default_rng(0)
    members, non_members, reference = _population(rng, 60), _population(rng, 60), _population(rng, 600)
    overfit = GaussianMixture(n_components=20, reg_covar=1e-6, covariance_type="diag", random_state=0).fit(members)
    results = audit_release(overfit, members, non_members, reference=reference, n_bootstrap=100, random_state=1)
    for r in results:
        assert r.auc > 0.8, r
        assert r.auc_ci[0] > 0.6
        assert r.auc_ci[0] <= r.auc <= r.auc_ci[1]
    assert [r.attack for r in results] == ["likelihood", "density-ratio"]


def test_model_of_other_data_is_at_chance() -> None:
    rng = np.random.default_rng(2)
    members, non_members, other = _population(rng, 300), _population(rng, 300), _population(rng, 300)
    model = GaussianMixture(n_components=3, random_state=0).fit(other)
    results = audit_release(model, members, non_members, reference=_population(rng, 600), n_bootstrap=100, random_state=3)
    for r in results:
        assert r.auc_ci[0] <= 0.5 <= r.auc_ci[1], r
        assert abs(r.auc - 0.5) < 0.08


def test_evaluate_attack_uses_sklearn_auc_and_a_tpr_at_low_fpr() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(1.0, 1.0, 500), rng.normal(0.0, 1.0, 500)
    r = evaluate_attack(a, b, n_bootstrap=50, random_state=0)
    from sklearn.metrics import roc_auc_score

    assert r.auc == pytest.approx(roc_auc_score(np.r_[np.ones(500), np.zeros(500)], np.r_[a, b]))
    assert 0.0 < r.tpr < 0.5 and r.tpr_ci[0] <= r.tpr <= r.tpr_ci[1]
    # Seeded: the same intervals twice.
    assert evaluate_attack(a, b, n_bootstrap=50, random_state=0).auc_ci == r.auc_ci


def test_infinite_log_density_ranks_lowest() -> None:
    r = evaluate_attack(np.array([0.0, 1.0, 2.0]), np.array([-np.inf, -np.inf, -1.0]), n_bootstrap=10, random_state=0)
    assert r.auc == 1.0


def test_likelihood_attack_accepts_a_mixture_state() -> None:
    rng = np.random.default_rng(5)
    X = _population(rng, 100)
    gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    state_result = likelihood_attack(gm.state_ if hasattr(gm, "state_") else gm, X, _population(rng, 100),
                                     n_bootstrap=10, random_state=0)
    assert 0.0 <= state_result.auc <= 1.0

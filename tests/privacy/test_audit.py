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


# ----------------------------------------------------------------------------- audit_run
def _clients(rng: np.random.Generator, n_clients: int, n: int) -> list[np.ndarray]:
    return [_population(rng, n) for _ in range(n_clients)]


def test_audit_run_finds_the_overfit_upload_and_not_the_unrelated_global_model() -> None:
    from fedgmm.privacy.audit import audit_run

    rng = np.random.default_rng(6)
    members, non_members = _clients(rng, 2, 80), _clients(rng, 2, 80)
    uploads = {
        c: GaussianMixture(n_components=25, reg_covar=1e-6, covariance_type="diag", random_state=c).fit(X).state_
        for c, X in enumerate(members)
    }
    unrelated = GaussianMixture(n_components=3, random_state=0).fit(_population(rng, 600)).state_
    audits = audit_run(unrelated, uploads, members, non_members, reference=_population(rng, 600), n_bootstrap=100,
                       random_state=7)
    assert [(a.artefact, a.client) for a in audits] == [("upload", 0), ("upload", 1), ("global", None)]
    for a in audits[:2]:
        assert [r.attack for r in a.results] == ["likelihood", "density-ratio"]
        for r in a.results:
            assert r.auc > 0.8 and r.auc_ci[0] > 0.6, (a.name, r)
    for r in audits[2].results:
        assert r.auc_ci[0] <= 0.5 <= r.auc_ci[1], r
        assert r.n_members == 160 and r.n_non_members == 160  # pooled over the clients


def test_audit_run_is_seeded_and_json_ready() -> None:
    import json

    from fedgmm.privacy.audit import audit_run

    rng = np.random.default_rng(8)
    members, non_members = _clients(rng, 2, 50), _clients(rng, 2, 60)
    gm = GaussianMixture(n_components=3, random_state=0).fit(np.vstack(members)).state_
    first = audit_run(gm, {1: gm}, members, non_members, n_bootstrap=30, random_state=3)
    again = audit_run(gm, {1: gm}, members, non_members, n_bootstrap=30, random_state=3)
    assert [a.to_dict() for a in first] == [a.to_dict() for a in again]
    assert [len(a.results) for a in first] == [1, 1]  # no reference: the likelihood attack only
    assert first[0].name == "upload of client 1" and first[1].name == "global model"
    json.dumps([a.to_dict() for a in first])


def test_audit_run_shared_non_members_and_mapping_inputs() -> None:
    from fedgmm.privacy.audit import audit_run

    rng = np.random.default_rng(9)
    members = {3: _population(rng, 40), 5: _population(rng, 40)}
    gm = GaussianMixture(n_components=3, random_state=0).fit(_population(rng, 300)).state_
    audits = audit_run(None, {5: gm}, members, _population(rng, 100), n_bootstrap=5, random_state=0)
    assert [(a.artefact, a.client) for a in audits] == [("upload", 5)]


def test_audit_run_refuses_bad_input_with_a_clear_message() -> None:
    from fedgmm.privacy.audit import audit_run

    rng = np.random.default_rng(10)
    X = _population(rng, 30)
    gm = GaussianMixture(n_components=2, random_state=0).fit(X).state_
    with pytest.raises(ValueError, match="nothing to audit"):
        audit_run(None, None, [X], [X])
    with pytest.raises(ValueError, match="client 2 has no member rows"):
        audit_run(gm, {2: gm}, [X], [X])
    with pytest.raises(ValueError, match="has 2 features, the artefact 4"):
        audit_run(gm, None, [X[:, :2]], [X])
    with pytest.raises(ValueError, match="1 row"):
        audit_run(gm, {0: gm}, [X[:1]], [X])
    with pytest.raises(ValueError, match="NaN"):
        audit_run(gm, None, [np.where(X > 1, np.nan, X)], [X])


def test_holdout_split_is_disjoint_seeded_and_checked() -> None:
    from fedgmm.privacy.audit import holdout_split

    X = np.arange(200.0).reshape(100, 2)
    members, non_members, reference = holdout_split([X], 0.3, random_state=0)
    assert members[0].shape == (70, 2) and non_members[0].shape == (15, 2) and reference[0].shape == (15, 2)
    rows = np.vstack([members[0], non_members[0], reference[0]])
    assert sorted(rows[:, 0]) == sorted(X[:, 0])  # a partition of the rows: disjoint, nothing lost
    again = holdout_split([X], 0.3, random_state=0)
    assert np.array_equal(again[0][0], members[0])
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        holdout_split([X], 1.0)
    with pytest.raises(ValueError, match="client 0 has 5 rows"):
        holdout_split([X[:5]], 0.3)

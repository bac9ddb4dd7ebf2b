"""The MAP M-step against a direct computation of Fraley & Raftery's (2007) posterior modes."""

from __future__ import annotations

import numpy as np
import pytest

from fedgmm.em.prior import (
    GaussianMixturePrior,
    default_prior,
    map_m_step,
    prior_from_data,
    run_map_em,
)
from fedgmm.em.stats import statistics_from_responsibilities
from fedgmm.mixture import MixtureState


@pytest.fixture()
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)) @ np.array([[1.0, 0.3, 0.0], [0.0, 0.5, 0.2], [0.0, 0.0, 2.0]]) + 4.0
    resp = rng.dirichlet(np.ones(4), size=60)
    return X, resp


def _direct(X: np.ndarray, resp: np.ndarray, prior: GaussianMixturePrior, ctype: str) -> tuple:
    """Posterior modes written out component by component (Fraley & Raftery 2007, Table 2)."""
    n, d = X.shape
    K = resp.shape[1]
    kap, nu, mp = prior.shrinkage, prior.dof, prior.mean
    nk = resp.sum(axis=0)
    ybar = resp.T @ X / nk[:, None]
    W = np.stack([(resp[:, k, None] * (X - ybar[k])).T @ (X - ybar[k]) for k in range(K)])
    B = np.stack([kap * nk[k] / (kap + nk[k]) * np.outer(ybar[k] - mp, ybar[k] - mp) for k in range(K)])
    means = (nk[:, None] * ybar + kap * mp) / (nk + kap)[:, None]
    if ctype == "full":
        cov = np.stack([(prior.scale + B[k] + W[k]) / (nu + nk[k] + d + 2) for k in range(K)])
    elif ctype == "tied":
        cov = (prior.scale + B.sum(0) + W.sum(0)) / (nu + n + d + K + 1)
    elif ctype == "diag":
        cov = np.stack([(prior.scale + np.diag(B[k]) + np.diag(W[k])) / (nu + nk[k] + 3) for k in range(K)])
    else:
        cov = np.array([(prior.scale + np.trace(B[k]) + np.trace(W[k])) / (nu + (nk[k] + 1) * d + 2) for k in range(K)])
    a = prior.weight_concentration
    weights = (nk + a - 1) / (n + K * (a - 1))
    return weights, means, cov


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("concentration", [1.0, 3.0])
def test_map_m_step_matches_direct_computation(data, ctype, concentration) -> None:  # type: ignore[no-untyped-def]
    X, resp = data
    prior = prior_from_data(X, 4, ctype, shrinkage=0.5, weight_concentration=concentration)
    # A shift far from the data checks that the centred statistics are handled exactly.
    stats = statistics_from_responsibilities(X, resp, ctype, shift=np.array([1.0, -2.0, 3.0]))
    state = map_m_step(stats, prior)
    weights, means, cov = _direct(X, resp, prior, ctype)
    np.testing.assert_allclose(state.weights, weights, rtol=1e-9)
    np.testing.assert_allclose(state.means, means, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(state.covariances, cov, rtol=1e-8, atol=1e-12)


def test_default_prior_is_mclusts(data) -> None:  # type: ignore[no-untyped-def]
    X, _ = data
    n, d = X.shape
    cov = np.cov(X.T, bias=True)
    prior = default_prior(n, X.sum(0), X.T @ X, 4, "full")
    np.testing.assert_allclose(prior.mean, X.mean(0))
    np.testing.assert_allclose(prior.scale, cov / 4 ** (2 / d))
    assert prior.dof == d + 2 and prior.shrinkage == 0.01
    assert prior_from_data(X, 4, "spherical").scale.shape == ()
    np.testing.assert_allclose(prior_from_data(X, 4, "diag").scale, np.diag(cov) / 4 ** (2 / d))


def test_empty_component_stays_finite_at_the_prior(data) -> None:  # type: ignore[no-untyped-def]
    X, resp = data
    resp = np.column_stack([resp[:, :3] / resp[:, :3].sum(1, keepdims=True), np.zeros(60)])
    prior = prior_from_data(X, 4, "full")
    state = map_m_step(statistics_from_responsibilities(X, resp, "full"), prior)
    np.testing.assert_allclose(state.means[3], prior.mean)
    np.testing.assert_allclose(state.covariances[3], prior.scale / (prior.dof + 3 + 2), rtol=1e-9)


def test_map_em_increases_fit_and_converges(data) -> None:  # type: ignore[no-untyped-def]
    X, resp = data
    prior = prior_from_data(X, 2, "full")
    start = map_m_step(statistics_from_responsibilities(X, resp[:, :2] / resp[:, :2].sum(1, keepdims=True), "full"), prior)
    state, n_iter, converged = run_map_em(X, start, prior, max_iter=200)
    assert converged and n_iter >= 1
    assert isinstance(state, MixtureState) and state.n_components == 2


def test_prior_rejects_bad_settings(data) -> None:  # type: ignore[no-untyped-def]
    X, resp = data
    with pytest.raises(ValueError, match="weight_concentration"):
        GaussianMixturePrior(np.zeros(3), np.eye(3), weight_concentration=0.5)
    stats = statistics_from_responsibilities(X, resp, "full")
    with pytest.raises(ValueError, match="features"):
        map_m_step(stats, GaussianMixturePrior(np.zeros(2), np.eye(2)))

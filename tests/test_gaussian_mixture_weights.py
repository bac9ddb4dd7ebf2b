"""``sample_weight``: integer weights equal repeated rows, zero weights equal dropped rows."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from fedgmm import GaussianMixture
from fedgmm.em import e_step
from fedgmm.types import COVARIANCE_TYPES


def blobs(n: int = 300, d: int = 4, k: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, d))
    return centers[rng.integers(k, size=n)] + rng.normal(size=(n, d))


def given_init(X: np.ndarray, k: int, ctype: str) -> dict[str, np.ndarray]:
    d = X.shape[1]
    prec = {"full": np.stack([np.eye(d)] * k), "tied": np.eye(d), "diag": np.ones((k, d)), "spherical": np.ones(k)}
    return {"weights_init": np.full(k, 1.0 / k), "means_init": X[[0, 1, 2]], "precisions_init": prec[ctype]}


def assert_same_parameters(a: GaussianMixture, b: GaussianMixture, rtol: float = 1e-6, atol: float = 1e-9) -> None:
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.lower_bound_, b.lower_bound_, rtol=rtol)
    np.testing.assert_allclose(a.weights_, b.weights_, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(a.means_, b.means_, rtol=rtol, atol=atol)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=rtol, atol=atol)


def fit(X: np.ndarray, w: np.ndarray | None = None, **kw) -> GaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(**kw).fit(X, sample_weight=w)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_integer_weights_equal_repeated_rows(ctype: str, dtype: str) -> None:
    X = blobs()
    w = np.random.default_rng(1).integers(0, 4, size=X.shape[0])
    w[:3] = 1  # the given initial means are rows 0..2 of both data sets
    tol = 1e-10 if dtype == "float64" else 0.0  # float32: a fixed number of iterations
    kw = dict(n_components=3, covariance_type=ctype, max_iter=30, tol=tol, dtype=dtype, **given_init(X, 3, ctype))
    weighted = fit(X, w, **kw)
    repeated = fit(np.repeat(X, w, axis=0), **{**kw, "means_init": X[[0, 1, 2]]})
    if dtype == "float64":
        assert_same_parameters(weighted, repeated)
    else:  # float32 block arithmetic: agreement to its precision
        assert_same_parameters(weighted, repeated, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(weighted.bic(X, sample_weight=w), repeated.bic(np.repeat(X, w, axis=0)), rtol=1e-6)
    np.testing.assert_allclose(weighted.aic(X, sample_weight=w), repeated.aic(np.repeat(X, w, axis=0)), rtol=1e-6)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_zero_weights_equal_dropped_rows(ctype: str) -> None:
    X = blobs(seed=2)
    keep = np.random.default_rng(3).random(X.shape[0]) < 0.6
    keep[:3] = True
    X[~keep] *= 1e6  # far-away rows: they would dominate the fit if they counted at all
    kw = dict(n_components=3, covariance_type=ctype, max_iter=30, tol=1e-10, **given_init(X, 3, ctype))
    weighted = fit(X, keep.astype(float), **kw)
    dropped = fit(X[keep], **kw)
    assert_same_parameters(weighted, dropped)
    np.testing.assert_allclose(weighted.score(X[keep]), dropped.score(X[keep]), rtol=1e-10)


def test_fractional_weights_scale_invariant_and_match_statistics() -> None:
    """Multiplying every weight by a constant changes nothing; statistics are Σ w r (…)."""
    X = blobs(seed=4)
    w = np.random.default_rng(5).uniform(0.1, 2.0, size=X.shape[0])
    kw = dict(n_components=3, covariance_type="full", max_iter=20, tol=1e-10, **given_init(X, 3, "full"))
    a, b = fit(X, w, **kw), fit(X, 7.5 * w, **kw)
    assert_same_parameters(a, b, rtol=1e-9)
    plain = e_step(X, a.state_)
    weighted = e_step(X, a.state_, sample_weight=np.ones(X.shape[0]))
    np.testing.assert_allclose(weighted.sxx, plain.sxx, rtol=1e-12)
    assert weighted.log_likelihood == pytest.approx(plain.log_likelihood, rel=1e-12)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random_from_data", "random"])
def test_weighted_initialisations_ignore_zero_weight_rows(init_params: str) -> None:
    X = blobs(seed=6)
    w = np.ones(X.shape[0])
    X[:50] = 1e4 + np.arange(50)[:, None]  # an outlying group carrying no weight
    w[:50] = 0.0
    gm = fit(X, w, n_components=3, init_params=init_params, random_state=0, max_iter=0)
    assert np.all(np.abs(gm.means_) < 1e3), gm.means_


def test_fit_predict_with_weights_equals_fit_then_predict() -> None:
    X = blobs(seed=7)
    w = np.random.default_rng(8).uniform(0.0, 3.0, size=X.shape[0])
    labels = GaussianMixture(3, random_state=0).fit_predict(X, sample_weight=w)
    np.testing.assert_array_equal(labels, GaussianMixture(3, random_state=0).fit(X, sample_weight=w).predict(X))


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (np.ones(5), r"sample_weight.shape == \(5,\), expected \(300,\)"),
        (-np.ones(300), "non-negative"),
        (np.zeros(300), "all sample_weight are zero"),
        (np.full(300, np.nan), "NaN"),
        (np.r_[1.0, 1.0, np.zeros(298)], "rows with non-zero sample_weight = 2"),
    ],
)
def test_bad_weights_are_rejected(weights: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GaussianMixture(3).fit(blobs(), sample_weight=weights)


def test_weights_are_not_modified() -> None:
    X = blobs()
    w = np.random.default_rng(9).uniform(size=X.shape[0])
    before = w.copy()
    GaussianMixture(2, random_state=0).fit(X, sample_weight=w)
    np.testing.assert_array_equal(w, before)

"""``from_sklearn`` / ``to_sklearn``: fitted models move both ways with identical densities."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from fedgmm import GaussianMixture
from fedgmm.types import COVARIANCE_TYPES


def blobs(n: int = 500, d: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(3, d))
    return centers[rng.integers(3, size=n)] + rng.normal(size=(n, d))


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_from_sklearn_scores_identically(ctype: str) -> None:
    X = blobs()
    theirs = SkGaussianMixture(3, covariance_type=ctype, random_state=0, reg_covar=1e-4).fit(X)
    ours = GaussianMixture.from_sklearn(theirs)
    np.testing.assert_allclose(ours.score_samples(X), theirs.score_samples(X), rtol=1e-12, atol=0)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-9, atol=1e-12)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name))
    assert (ours.n_iter_, ours.converged_, ours.lower_bound_) == (theirs.n_iter_, theirs.converged_, theirs.lower_bound_)
    assert ours.reg_covar == 1e-4 and ours.covariance_type == ctype and ours.n_components == 3


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_to_sklearn_scores_identically(ctype: str) -> None:
    X = blobs(seed=1)
    ours = GaussianMixture(3, covariance_type=ctype, random_state=0).fit(X)
    theirs = ours.to_sklearn()
    assert isinstance(theirs, SkGaussianMixture)
    np.testing.assert_allclose(theirs.score_samples(X), ours.score_samples(X), rtol=1e-12, atol=0)
    np.testing.assert_array_equal(theirs.predict(X), ours.predict(X))
    back = GaussianMixture.from_sklearn(theirs)
    np.testing.assert_array_equal(back.means_, ours.means_)
    np.testing.assert_array_equal(back.precisions_cholesky_, ours.precisions_cholesky_)
    # The scikit-learn model keeps working as one: it can be refitted from its parameters.
    theirs.set_params(warm_start=True, max_iter=5).fit(X)


def test_feature_names_travel() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(blobs(), columns=["a", "b", "c", "d"])
    theirs = SkGaussianMixture(2, random_state=0).fit(frame)
    ours = GaussianMixture.from_sklearn(theirs)
    assert list(ours.feature_names_in_) == ["a", "b", "c", "d"]
    assert list(ours.to_sklearn().feature_names_in_) == ["a", "b", "c", "d"]


def test_unfitted_model_is_rejected() -> None:
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        GaussianMixture.from_sklearn(SkGaussianMixture(2))
    with pytest.raises(NotFittedError):
        GaussianMixture(2).to_sklearn()

"""The state layer's d × d linear algebra: both paths (batched small d, LAPACK large d) are exact and refuse what is not SPD."""

from __future__ import annotations

import numpy as np
import pytest

from fedgmm.exceptions import DegenerateCovarianceError
from fedgmm.mixture import covariances_from_precisions, precision_cholesky_from_covariances


def _spd(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    a = rng.normal(size=(k, d, d))
    return a @ a.transpose(0, 2, 1) / d + 0.3 * np.eye(d)


@pytest.mark.parametrize("d", [5, 80])
def test_precision_cholesky_is_an_upper_factor_of_the_inverse(d: int) -> None:
    cov = _spd(np.random.default_rng(0), 3, d)
    pc = precision_cholesky_from_covariances(cov, "full")
    np.testing.assert_array_equal(pc, np.triu(pc))
    np.testing.assert_allclose(pc @ pc.transpose(0, 2, 1), np.linalg.inv(cov), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("d", [5, 80])
def test_covariances_from_precisions_inverts_them(d: int) -> None:
    prec = _spd(np.random.default_rng(1), 3, d)
    cov = covariances_from_precisions(prec, "full")
    np.testing.assert_array_equal(cov, cov.transpose(0, 2, 1))
    np.testing.assert_allclose(cov @ prec, np.broadcast_to(np.eye(d), cov.shape), atol=1e-9)


@pytest.mark.parametrize("d", [5, 80])
def test_not_positive_definite_is_refused_on_both_paths(d: int) -> None:
    bad = _spd(np.random.default_rng(2), 2, d)
    bad[1] -= 10.0 * np.eye(d)
    with pytest.raises(DegenerateCovarianceError):
        precision_cholesky_from_covariances(bad, "full")
    with pytest.raises(DegenerateCovarianceError, match="precision matrix 1 is not positive definite"):
        covariances_from_precisions(bad, "full")


def test_symmetry_check_of_a_large_matrix_looks_at_every_row_band() -> None:
    from fedgmm.mixture import validate_parameters

    d = 600  # (1 << 18) // d = 436 rows per band: the asymmetry sits in the second band
    cov = _spd(np.random.default_rng(3), 1, d)[0]
    validate_parameters(np.ones(1), np.zeros((1, d)), cov, "tied")
    cov[550, 3] += 1e-3
    with pytest.raises(ValueError, match="must be symmetric"):
        validate_parameters(np.ones(1), np.zeros((1, d)), cov, "tied")
    with pytest.raises(ValueError, match="must be symmetric"):
        validate_parameters(np.ones(1), np.zeros((1, d)), cov[None], "full")
    with pytest.raises(DegenerateCovarianceError, match="precision matrix 0 is not symmetric"):
        covariances_from_precisions(cov, "tied")
    cov[550, 3] -= 1e-3
    inv = covariances_from_precisions(cov, "tied")  # the lower triangle mirrored in place
    np.testing.assert_array_equal(inv, inv.T)
    np.testing.assert_allclose(inv @ cov, np.eye(d), atol=1e-8)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 3 iterations on purpose
def test_tied_fit_at_large_d_matches_scikit_learn_from_the_same_start() -> None:
    """d = 760: the tied (d, d) accumulator is above TIED_SHARED_ACCUMULATOR_BYTES, so the E-step runs
    in one thread with BLAS's threads, its statistic is symmetrised in place and the M-step
    works in place: the model is still scikit-learn's."""
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    from fedgmm import GaussianMixture
    from fedgmm.em.kernels import TIED_SHARED_ACCUMULATOR_BYTES
    from fedgmm.em.stats import _blas_has_the_threads

    rng = np.random.default_rng(4)
    d, k = 760, 3
    assert 8 * d * d > TIED_SHARED_ACCUMULATOR_BYTES and _blas_has_the_threads("tied", k, d)
    assert not _blas_has_the_threads("tied", k, 64)
    X = rng.normal(size=(900, d)) + np.repeat(rng.normal(scale=3.0, size=(k, d)), 300, axis=0)
    init = {"weights_init": np.full(k, 1 / k), "means_init": X[[0, 300, 600]], "precisions_init": np.eye(d)}
    ours = GaussianMixture(k, covariance_type="tied", max_iter=3, tol=0.0, reg_covar=1e-3, **init).fit(X)
    ref = SkGaussianMixture(k, covariance_type="tied", max_iter=3, tol=0.0, reg_covar=1e-3, **init).fit(X)
    np.testing.assert_array_equal(ours.covariances_, ours.covariances_.T)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.score(X), ref.score(X), rtol=1e-10)

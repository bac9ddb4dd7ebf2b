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

"""M-step: mixture parameters from summed sufficient statistics."""

from __future__ import annotations

import numpy as np

from fedgmm.em.stats import SufficientStatistics
from fedgmm.exceptions import DegenerateCovarianceError
from fedgmm.mixture import ILL_DEFINED_MESSAGE, MixtureState

#: Added to every N_k, as scikit-learn does, so an empty component stays finite.
NK_EPS = 10.0 * np.finfo(np.float64).eps


def m_step(stats: SufficientStatistics, reg_covar: float) -> MixtureState:
    """Maximise the expected complete-data log-likelihood given statistics.

    Parameters
    ----------
    stats : SufficientStatistics
        Statistics summed over all data (or all clients).
    reg_covar : float
        Non-negative value added to the diagonal of every covariance.

    Returns
    -------
    MixtureState
        ``π_k = N_k / Σ N``, ``μ_k = shift + S_k / N_k`` and
        ``Σ_k = (Σ r x̃ x̃ᵀ)_k / N_k − μ̃_k μ̃_kᵀ + reg_covar·I`` (or its tied/diag/
        spherical reduction), exactly as scikit-learn's ``_estimate_gaussian_parameters``.

    Raises
    ------
    DegenerateCovarianceError
        If a covariance is not positive definite; the message says what to do.
    """
    if reg_covar < 0:
        raise ValueError(f"reg_covar must be non-negative, got {reg_covar}.")
    nk = stats.nk + NK_EPS
    mu = stats.sx / nk[:, None]
    d = stats.n_features
    ctype = stats.covariance_type
    if ctype == "full":
        # Component by component: temporaries of (d, d), not (K, d, d) (memory at large d).
        cov = stats.sxx / nk[:, None, None]
        for k in range(cov.shape[0]):
            cov[k] -= np.outer(mu[k], mu[k])
            if not np.array_equal(cov[k], cov[k].T):  # statistics from elsewhere may be asymmetric
                cov[k] = 0.5 * (cov[k] + cov[k].T)
        cov[:, np.arange(d), np.arange(d)] += reg_covar
    elif ctype == "tied":
        cov = (stats.sxx - (nk[:, None] * mu).T @ mu) / nk.sum()
        cov = 0.5 * (cov + cov.T)
        cov[np.arange(d), np.arange(d)] += reg_covar
    elif ctype == "diag":
        cov = stats.sxx / nk[:, None] - mu**2 + reg_covar
    else:
        cov = (stats.sxx / nk - np.sum(mu**2, axis=1)) / d + reg_covar
    if not (np.all(np.isfinite(cov)) and np.all(np.isfinite(mu))):
        raise DegenerateCovarianceError(ILL_DEFINED_MESSAGE)
    weights = nk / nk.sum()
    try:
        return MixtureState.from_covariances(weights, mu + stats.shift, cov, ctype)
    except DegenerateCovarianceError:
        raise
    except ValueError as exc:  # e.g. a negative variance from round-off
        raise DegenerateCovarianceError(ILL_DEFINED_MESSAGE) from exc

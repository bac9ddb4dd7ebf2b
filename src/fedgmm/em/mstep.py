"""M-step: mixture parameters from summed sufficient statistics."""

from __future__ import annotations

import numpy as np

from fedgmm.em.stats import SufficientStatistics, linear_algebra_threads
from fedgmm.exceptions import DegenerateCovarianceError
from fedgmm.mixture import ILL_DEFINED_MESSAGE, MixtureState, row_bands

#: Added to every N_k, as scikit-learn does, so an empty component stays finite.
NK_EPS = 10.0 * np.finfo(np.float64).eps


def m_step(stats: SufficientStatistics, reg_covar: float, *, overwrite: bool = False) -> MixtureState:
    """Maximise the expected complete-data log-likelihood given statistics.

    Parameters
    ----------
    stats : SufficientStatistics
        Statistics summed over all data (or all clients).
    reg_covar : float
        Non-negative value added to the diagonal of every covariance.
    overwrite : bool, default=False
        Let the full-covariance M-step turn ``stats.sxx`` into the covariances in place
        (and the state keep it): for the fit loop, whose statistics are used once, so
        that an iteration allocates one ``(K, d, d)`` array instead of several.

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
        # In place, component by component: temporaries of (d, d), not (K, d, d) (memory at large d).
        sxx = stats.sxx
        owned = overwrite and sxx.dtype == np.float64 and sxx.flags.c_contiguous and sxx.flags.writeable
        cov = sxx if owned else np.array(sxx, dtype=np.float64)
        cov /= nk[:, None, None]
        for k in range(cov.shape[0]):
            cov[k] -= np.outer(mu[k], mu[k])
            if not np.array_equal(cov[k], cov[k].T):  # statistics from elsewhere may be asymmetric
                cov[k] += cov[k].T.copy()
                cov[k] *= 0.5
        cov.reshape(cov.shape[0], -1)[:, :: d + 1] += reg_covar
    elif ctype == "tied":
        # In place as for full: at d = 2000 every (d, d) temporary is 30 MiB.
        sxx = stats.sxx
        owned = overwrite and sxx.dtype == np.float64 and sxx.flags.c_contiguous and sxx.flags.writeable
        cov = sxx if owned else np.array(sxx, dtype=np.float64)
        weighted = nk[:, None] * mu
        for band in row_bands(d):  # Σ N_k μ̃_k μ̃_kᵀ a band of rows at a time
            cov[band] -= weighted[:, band].T @ mu
        cov /= nk.sum()
        if not np.array_equal(cov, cov.T):
            cov += cov.T.copy()
            cov *= 0.5
        cov.flat[:: d + 1] += reg_covar
    elif ctype == "diag":
        cov = stats.sxx / nk[:, None] - mu**2 + reg_covar
    else:
        cov = (stats.sxx / nk - np.sum(mu**2, axis=1)) / d + reg_covar
    if not (np.all(np.isfinite(cov)) and np.all(np.isfinite(mu))):
        raise DegenerateCovarianceError(ILL_DEFINED_MESSAGE)
    weights = nk / nk.sum()
    try:
        with linear_algebra_threads(d):
            return MixtureState.from_covariances(weights, mu + stats.shift, cov, ctype, owned=True)
    except DegenerateCovarianceError:
        raise
    except ValueError as exc:  # e.g. a negative variance from round-off
        raise DegenerateCovarianceError(ILL_DEFINED_MESSAGE) from exc

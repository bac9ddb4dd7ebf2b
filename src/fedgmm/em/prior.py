"""MAP M-step: mixture parameters from sufficient statistics under a conjugate prior (Fraley & Raftery 2007)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedgmm.em.mstep import NK_EPS
from fedgmm.em.stats import SufficientStatistics, e_step
from fedgmm.exceptions import DegenerateCovarianceError
from fedgmm.mixture import ILL_DEFINED_MESSAGE, MixtureState, check_covariance_type
from fedgmm.types import CovarianceType

#: mclust's ``priorControl()`` defaults: mean shrinkage κ_P and degrees of freedom ν_P = d + 2.
DEFAULT_SHRINKAGE = 0.01


@dataclass(frozen=True)
class GaussianMixturePrior:
    """Conjugate prior of a Gaussian mixture (Fraley & Raftery 2007, §2).

    ``μ_k | Σ_k ~ N(mean, Σ_k / shrinkage)``, ``Σ_k ~ inverse-Wishart(dof, scale)``
    (inverse-gamma per variance for diag/spherical, one shared Σ for tied) and
    ``π ~ Dirichlet(weight_concentration, …)``.

    Attributes
    ----------
    mean : ndarray of shape (d,)
        Prior mean μ_P (mclust: the data mean).
    scale : ndarray
        Λ_P: ``(d, d)`` for full/tied, ``(d,)`` for diag, a 0-d array for spherical
        (mclust: ``cov(X) / K^(2/d)``, its diagonal, or ``tr(cov(X)) / d / K^(2/d)``).
    shrinkage : float
        κ_P ≥ 0: the prior's number of pseudo-observations for the means (mclust: 0.01).
    dof : float
        ν_P (mclust: d + 2).
    weight_concentration : float
        Dirichlet parameter ``a`` of the weights; 1 is a flat prior (the ML weights).
    """

    mean: np.ndarray
    scale: np.ndarray
    shrinkage: float = DEFAULT_SHRINKAGE
    dof: float = 0.0
    weight_concentration: float = 1.0

    def __post_init__(self) -> None:
        if self.shrinkage < 0 or self.dof < 0 or self.weight_concentration < 1:
            raise ValueError("the prior needs shrinkage >= 0, dof >= 0 and weight_concentration >= 1.")


def default_prior(
    n_samples: float,
    sum_x: np.ndarray,
    sum_xx: np.ndarray,
    n_components: int,
    covariance_type: CovarianceType,
    *,
    shrinkage: float = DEFAULT_SHRINKAGE,
    dof: float | None = None,
    weight_concentration: float = 1.0,
) -> GaussianMixturePrior:
    """mclust's default prior from the data's moments ``(n, Σ x, Σ x xᵀ)``.

    Built from moments so a client's own rows or the federated preprocessing round's
    pooled moments serve alike. ``scale = cov / K^(2/d)`` (Fraley & Raftery 2007, §2.2:
    the prior's covariance is the data's spread shared among K components).

    Parameters
    ----------
    n_samples : float
    sum_x : ndarray of shape (d,)
    sum_xx : ndarray of shape (d, d)
    n_components : int
    covariance_type : {"full", "tied", "diag", "spherical"}
    shrinkage, weight_concentration : float
    dof : float, optional
        ``d + 2`` by default.
    """
    check_covariance_type(covariance_type)
    mean = np.asarray(sum_x, dtype=np.float64) / n_samples
    d = mean.shape[0]
    cov = np.asarray(sum_xx, dtype=np.float64) / n_samples - np.outer(mean, mean)
    cov = 0.5 * (cov + cov.T) / n_components ** (2.0 / d)
    scale: np.ndarray
    if covariance_type in ("full", "tied"):
        scale = cov
    elif covariance_type == "diag":
        scale = np.diag(cov).copy()
    else:
        scale = np.asarray(np.trace(cov) / d)
    return GaussianMixturePrior(mean, scale, shrinkage, float(d + 2) if dof is None else float(dof), weight_concentration)


def prior_from_data(X: np.ndarray, n_components: int, covariance_type: CovarianceType, **kwargs: float) -> GaussianMixturePrior:
    """:func:`default_prior` from the rows ``X`` of shape ``(n, d)``."""
    X = np.asarray(X, dtype=np.float64)
    return default_prior(X.shape[0], X.sum(axis=0), X.T @ X, n_components, covariance_type, **kwargs)  # type: ignore[arg-type]


def map_m_step(stats: SufficientStatistics, prior: GaussianMixturePrior, reg_covar: float = 0.0) -> MixtureState:
    """Posterior-mode parameters given the statistics (Fraley & Raftery 2007, Table 2).

    With ``n_k``, ``ȳ_k`` the component's weighted count and mean, ``W_k = Σ_i z_ik (y_i −
    ȳ_k)(y_i − ȳ_k)ᵀ`` and ``B_k = κ n_k / (κ + n_k) (ȳ_k − μ_P)(ȳ_k − μ_P)ᵀ``:

    - means ``μ_k = (n_k ȳ_k + κ μ_P) / (n_k + κ)`` (every type);
    - full (VVV) ``Σ_k = (Λ_P + B_k + W_k) / (ν_P + n_k + d + 2)``;
    - tied (EEE) ``Σ = (Λ_P + Σ_k (B_k + W_k)) / (ν_P + n + d + K + 1)``;
    - diag (VVI) ``σ²_kj = (λ_j + B_kjj + W_kjj) / (ν_P + n_k + 3)``;
    - spherical (VII) ``σ²_k = (ς²_P + tr B_k + tr W_k) / (ν_P + (n_k + 1) d + 2)``;
    - weights ``π_k = (n_k + a − 1) / (n + K (a − 1))`` (Dirichlet(a) prior; a = 1 is ML).

    ``reg_covar`` is then added to the diagonal (0 by default: the prior already keeps the
    covariances positive definite).

    Parameters
    ----------
    stats : SufficientStatistics
    prior : GaussianMixturePrior
        Of the statistics' dimension and a scale of the shape their covariance type needs.
    reg_covar : float

    Returns
    -------
    MixtureState

    Raises
    ------
    DegenerateCovarianceError
        If a covariance is not positive definite.
    """
    if reg_covar < 0:
        raise ValueError(f"reg_covar must be non-negative, got {reg_covar}.")
    d = stats.n_features
    if prior.mean.shape != (d,):
        raise ValueError(f"the prior mean has shape {prior.mean.shape}, the statistics {d} features.")
    ctype = stats.covariance_type
    nk = stats.nk + NK_EPS
    kappa, nu = prior.shrinkage, prior.dof
    ybar = stats.sx / nk[:, None]  # about the shift
    mp = prior.mean - stats.shift
    mu = (stats.sx + kappa * mp) / (nk + kappa)[:, None]
    dev = ybar - mp
    b = kappa * nk / (kappa + nk)
    scale = np.asarray(prior.scale, dtype=np.float64)
    if ctype == "full":
        w = stats.sxx - nk[:, None, None] * ybar[:, :, None] * ybar[:, None, :]
        num = scale[None] + b[:, None, None] * dev[:, :, None] * dev[:, None, :] + w
        cov = num / (nu + nk + d + 2)[:, None, None]
        cov = 0.5 * (cov + cov.transpose(0, 2, 1))
        cov[:, np.arange(d), np.arange(d)] += reg_covar
    elif ctype == "tied":
        # stats.sxx is Σ_n x̃ x̃ᵀ over all rows, so Σ_k W_k = sxx − Σ_k n_k ȳ_k ȳ_kᵀ.
        w = stats.sxx - (nk[:, None] * ybar).T @ ybar
        num = scale + (b[:, None] * dev).T @ dev + w
        cov = num / (nu + nk.sum() + d + nk.shape[0] + 1)
        cov = 0.5 * (cov + cov.T)
        cov[np.arange(d), np.arange(d)] += reg_covar
    elif ctype == "diag":
        w = stats.sxx - nk[:, None] * ybar**2
        cov = (scale[None] + b[:, None] * dev**2 + w) / (nu + nk + 3)[:, None] + reg_covar
    else:
        w = stats.sxx - nk * np.sum(ybar**2, axis=1)
        cov = (float(scale) + b * np.sum(dev**2, axis=1) + w) / (nu + (nk + 1) * d + 2) + reg_covar
    a = prior.weight_concentration
    weights = (nk + a - 1.0) / (nk.sum() + nk.shape[0] * (a - 1.0))
    if not (np.all(np.isfinite(cov)) and np.all(np.isfinite(mu))):
        raise DegenerateCovarianceError(ILL_DEFINED_MESSAGE)
    try:
        return MixtureState.from_covariances(weights / weights.sum(), mu + stats.shift, cov, ctype)
    except DegenerateCovarianceError:
        raise
    except ValueError as exc:
        raise DegenerateCovarianceError(ILL_DEFINED_MESSAGE) from exc


def run_map_em(
    X: np.ndarray,
    state: MixtureState,
    prior: GaussianMixturePrior,
    *,
    reg_covar: float = 0.0,
    tol: float = 1e-3,
    max_iter: int = 100,
) -> tuple[MixtureState, int, bool]:
    """EM with the MAP M-step from ``state`` until the mean log-likelihood changes < ``tol``.

    Returns
    -------
    (MixtureState, int, bool)
        Final parameters, iterations, whether it converged.
    """
    shift = X.mean(axis=0, dtype=np.float64)
    prev = -np.inf
    for n_iter in range(1, max_iter + 1):
        stats = e_step(X, state, shift=shift)
        state = map_m_step(stats, prior, reg_covar)
        ll = stats.log_likelihood / stats.n_samples
        if abs(ll - prev) < tol:
            return state, n_iter, True
        prev = ll
    return state, max_iter, False

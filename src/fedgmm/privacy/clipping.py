"""Row clipping to a data-independent L2 bound, and the sensitivities of the EM statistics it implies."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Default clipping radius in whitened coordinates, as a multiple of ``sqrt(d)``: for rows with
#: unit variance per feature ``E‖x‖² = d``, so ``1.5·sqrt(d)`` keeps almost every row of
#: well-behaved data whole.
DEFAULT_CLIP_FACTOR = 1.5
#: Default clipping radius of DP-EM in whitened coordinates, as a quantile of the chi
#: distribution with d degrees of freedom (the norm of a standard normal row); measured
#: for issue 10 with ``benchmarks/privacy_dpem.py``.
DEFAULT_CLIP_QUANTILE = 0.9


def chi_bound(n_features: int, quantile: float = DEFAULT_CLIP_QUANTILE) -> float:
    """A clipping radius that is a public function of the dimension only.

    After the federation's standardisation + PCA + whitening, a row has (about) identity
    covariance, so for Gaussian-like data ``‖x‖²`` is about ``χ²_d``. ``B`` is the
    ``quantile`` quantile of ``‖x‖`` under that model: ``B = sqrt(F⁻¹_{χ²_d}(quantile))``.
    It uses no client row, so clipping to it keeps the DP guarantee whatever the data are;
    only the utility depends on how well the model fits (heavier tails: more rows clipped).

    Parameters
    ----------
    n_features : int
        d.
    quantile : float
        In (0, 1).

    Returns
    -------
    float
    """
    from scipy.stats import chi2

    if n_features < 1:
        raise ValueError(f"n_features must be >= 1, got {n_features}.")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}.")
    return float(math.sqrt(chi2.ppf(quantile, n_features)))


def norm_bound(n_features: int, *, variances: np.ndarray | None = None, factor: float = DEFAULT_CLIP_FACTOR) -> float:
    """A clipping radius ``B`` fixed before any client row is seen.

    ``B = factor · sqrt(Σ_j v_j)`` with ``v_j`` the public per-feature variances (the
    preprocessing transform's: 1 per standardised feature, the kept eigenvalues after PCA);
    ``v_j = 1`` when not given.

    Parameters
    ----------
    n_features : int
        d.
    variances : ndarray of shape (d,), optional
        Public per-feature variances.
    factor : float
        Radius in units of the root expected squared norm.

    Returns
    -------
    float
    """
    if n_features < 1:
        raise ValueError(f"n_features must be >= 1, got {n_features}.")
    if not factor > 0:
        raise ValueError(f"factor must be positive, got {factor}.")
    if variances is None:
        total = float(n_features)
    else:
        v = np.asarray(variances, dtype=np.float64)
        if v.shape != (n_features,) or not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ValueError(f"variances must be {n_features} finite non-negative numbers.")
        total = float(v.sum())
    return factor * math.sqrt(max(total, 1e-300))


def clip_rows(X: np.ndarray, bound: float) -> tuple[np.ndarray, int]:
    """Scale every row of ``X`` with ``‖x‖₂ > bound`` onto the sphere of radius ``bound``.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    bound : float

    Returns
    -------
    X_clipped : ndarray of shape (n, d)
        A new array.
    n_clipped : int
        Rows that were shortened.
    """
    if not (bound > 0 and math.isfinite(bound)):
        raise ValueError(f"the clipping bound must be positive and finite, got {bound}.")
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1)
    over = norms > bound
    scale = np.where(over, bound / np.where(over, norms, 1.0), 1.0)
    return X * scale[:, None], int(over.sum())


@dataclass(frozen=True)
class Sensitivity:
    """L2 sensitivities, under adding or removing one row, of the three statistics of one E-step.

    For rows with ``‖x‖₂ ≤ B`` (about a data-independent shift of 0) and responsibilities
    ``r ∈ Δ^K`` (so ``‖r‖₂ ≤ ‖r‖₁ = 1``), one row changes

    - ``N = (N_k)``: by ``r``, norm ``≤ 1``;
    - ``S = (Σ r_k x)``: by ``r xᵀ``, Frobenius norm ``‖r‖₂‖x‖₂ ≤ B``;
    - second moments: full ``(r_k x xᵀ)`` with the upper triangle released (the lower one is
      its mirror), norm ``≤ ‖r‖₂ ‖x xᵀ‖_F = ‖x‖² ≤ B²``; diag ``(r_k x²)``,
      ``≤ ‖r‖₂ ‖x∘x‖₂ ≤ B²``; spherical ``(r_k ‖x‖²)``, ``≤ B²``; tied ``x xᵀ`` (it does not
      depend on ``r``), ``≤ B²``.

    Each statistic is released by its own Gaussian mechanism with noise ``σ = z · Δ``;
    their composition is what the accountant adds up.

    Attributes
    ----------
    bound : float
        B.
    count, first, second : float
        ``1``, ``B`` and ``B²``.
    """

    bound: float

    @property
    def count(self) -> float:
        """Sensitivity of ``N``."""
        return 1.0

    @property
    def first(self) -> float:
        """Sensitivity of ``Σ r x``."""
        return float(self.bound)

    @property
    def second(self) -> float:
        """Sensitivity of the second moments, any covariance type."""
        return float(self.bound) ** 2

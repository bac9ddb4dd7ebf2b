"""A frozen Gaussian-mixture parameter record: validation, sampling and plain-array form."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import lapack

from fedgmm.exceptions import DegenerateCovarianceError
from fedgmm.types import COVARIANCE_TYPES, CovarianceType

LOG_2PI = float(np.log(2.0 * np.pi))

ILL_DEFINED_MESSAGE = (
    "Fitting the mixture model failed because some components have an ill-defined "
    "covariance (singular, not positive definite or not finite), typically caused by "
    "singleton or collapsed samples or a constant feature. Increase reg_covar, decrease "
    "n_components, or scale the input data."
)


#: Lower Cholesky factor of every component's covariance, ``(K, d, d)``, from each type's array.
_COVARIANCE_CHOLESKY: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {
    "full": lambda cov, k, d: np.linalg.cholesky(cov),
    "tied": lambda cov, k, d: np.broadcast_to(np.linalg.cholesky(cov), (k, d, d)),
    "diag": lambda cov, k, d: np.sqrt(cov)[:, :, None] * np.eye(d),
    "spherical": lambda cov, k, d: np.sqrt(cov)[:, None, None] * np.eye(d),
}


def covariance_shape(covariance_type: str, n_components: int, n_features: int) -> tuple[int, ...]:
    """Return the array shape of the covariances for a covariance type.

    Returns
    -------
    shape : tuple of int
        ``(K, d, d)`` for full, ``(d, d)`` for tied, ``(K, d)`` for diag, ``(K,)`` for spherical.
    """
    check_covariance_type(covariance_type)
    return {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[covariance_type]


def check_covariance_type(covariance_type: str) -> None:
    """Raise a ValueError naming the valid covariance types."""
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"Invalid covariance_type {covariance_type!r}: expected one of {list(COVARIANCE_TYPES)}."
        )


def precision_cholesky_from_covariances(
    covariances: np.ndarray, covariance_type: str
) -> np.ndarray:
    """Cholesky factors of the precision matrices, ``P P^T = Σ^{-1}``.

    Parameters
    ----------
    covariances : ndarray
        ``(K, d, d)`` full, ``(d, d)`` tied, ``(K, d)`` diag, ``(K,)`` spherical.
    covariance_type : {"full", "tied", "diag", "spherical"}

    Returns
    -------
    precisions_cholesky : ndarray, same shape as ``covariances``
        Upper-triangular ``P`` per component for full/tied (as scikit-learn), and
        ``1 / sqrt(variance)`` for diag/spherical.

    Raises
    ------
    DegenerateCovarianceError
        If a covariance is not finite or not positive definite.
    """
    check_covariance_type(covariance_type)
    covariances = np.asarray(covariances, dtype=np.float64)
    if not np.all(np.isfinite(covariances)):
        raise DegenerateCovarianceError(ILL_DEFINED_MESSAGE)
    if covariance_type in ("full", "tied"):
        stack = covariances if covariance_type == "full" else covariances[None]
        k, d = stack.shape[0], stack.shape[-1]
        if covariance_type == "tied":
            return _precision_cholesky_stack(stack)[0]
        out = np.empty_like(stack)
        # Batched over a few components at a time: per-matrix calls cost ~25 µs each in
        # overhead, and batching all K would add (K, d, d) temporaries (memory at large d).
        for chunk in component_chunks(k, d):
            out[chunk] = _precision_cholesky_stack(stack[chunk])
        return out
    if np.any(covariances <= 0.0):
        raise DegenerateCovarianceError(ILL_DEFINED_MESSAGE)
    return 1.0 / np.sqrt(covariances)


def component_chunks(n_components: int, n_features: int, max_elements: int = 1 << 18) -> list[slice]:
    """Slices of components whose ``(·, d, d)`` stacks hold at most ``max_elements`` numbers
    (at least one component each): batched linear algebra with bounded temporaries."""
    step = max(1, max_elements // max(1, n_features * n_features))
    return [slice(lo, min(lo + step, n_components)) for lo in range(0, n_components, step)]


def _precision_cholesky_stack(stack: np.ndarray) -> np.ndarray:
    """Upper ``P`` with ``P Pᵀ = Σ⁻¹`` for a ``(m, d, d)`` stack of covariances."""
    d = stack.shape[-1]
    if d >= 64:
        # Large d, one matrix at a time through LAPACK: potrf, then trtri for L⁻¹ (d³/3
        # flops; a triangular solve against the identity is d³, and NumPy's batched
        # cholesky was 2× scipy's potrf at d = 512: 7.2 against 3.7 ms).
        out = np.empty_like(stack)
        for i, cov in enumerate(stack):
            chol, info = lapack.dpotrf(cov, lower=1, clean=1)
            if info != 0 or np.any(np.diagonal(chol) <= 0.0):
                raise DegenerateCovarianceError(ILL_DEFINED_MESSAGE)
            inv, info = lapack.dtrtri(chol, lower=1, overwrite_c=1)
            if info != 0:
                raise DegenerateCovarianceError(ILL_DEFINED_MESSAGE)
            out[i] = inv.T
    else:
        try:
            chol = np.linalg.cholesky(stack)
        except np.linalg.LinAlgError as exc:
            raise DegenerateCovarianceError(ILL_DEFINED_MESSAGE) from exc
        if np.any(np.diagonal(chol, axis1=1, axis2=2) <= 0.0):
            raise DegenerateCovarianceError(ILL_DEFINED_MESSAGE)
        out = np.tril(np.linalg.inv(chol)).transpose(0, 2, 1)
    if not np.all(np.isfinite(out)):
        raise DegenerateCovarianceError(ILL_DEFINED_MESSAGE)
    return out


_PRECISIONS_FROM_CHOLESKY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "full": lambda p: p @ p.transpose(0, 2, 1),  # batched GEMM (einsum here would not use BLAS)
    "tied": lambda p: p @ p.T,
    "diag": lambda p: p**2,
    "spherical": lambda p: p**2,
}


def precisions_from_cholesky(precisions_cholesky: np.ndarray, covariance_type: str) -> np.ndarray:
    """Precision matrices ``P P^T`` (full/tied) or ``P**2`` (diag/spherical)."""
    return _PRECISIONS_FROM_CHOLESKY[covariance_type](precisions_cholesky)


#: Numbers per row band of the band-wise ``d × d`` helpers below: whole-matrix temporaries
#: at d = 2000 are 30 MiB each, and they set the peak of a fit's initialisation.
_BAND_ELEMENTS = 1 << 18


def row_bands(d: int) -> list[slice]:
    """Slices of the rows of a ``(d, d)`` matrix, each band at most ~2**18 numbers: for
    band-wise ``d × d`` work with bounded temporaries."""
    step = max(1, _BAND_ELEMENTS // max(1, d))
    return [slice(lo, lo + step) for lo in range(0, d, step)]


def _close_to_transpose(mat: np.ndarray, rtol: float, atol: float) -> bool:
    """``np.allclose(mat, mat.T)`` for a ``(d, d)`` matrix, a band of rows at a time."""
    return all(np.allclose(mat[band], mat[:, band].T, rtol=rtol, atol=atol) for band in row_bands(mat.shape[0]))


def mirror_lower(mat: np.ndarray) -> None:
    """Copy the lower triangle of a ``(d, d)`` matrix onto its upper one, in place (no
    ``(d, d)`` temporaries)."""
    for i in range(mat.shape[0] - 1):
        mat[i, i + 1 :] = mat[i + 1 :, i]


def covariances_from_precisions(precisions: np.ndarray, covariance_type: str) -> np.ndarray:
    """Invert precisions given by the user (``precisions_init``) into covariances.

    Raises
    ------
    DegenerateCovarianceError
        If a precision matrix is not symmetric positive definite.
    """
    precisions = np.asarray(precisions, dtype=np.float64)
    if not np.all(np.isfinite(precisions)):
        raise DegenerateCovarianceError("precisions contain NaN or infinity.")
    if covariance_type in ("full", "tied"):
        stack = precisions if covariance_type == "full" else precisions[None]
        out = np.empty_like(stack)
        for k, prec in enumerate(stack):
            if not _close_to_transpose(prec, rtol=1e-8, atol=1e-12):
                raise DegenerateCovarianceError(f"precision matrix {k} is not symmetric.")
            # Σ = Λ⁻¹ from Λ's Cholesky factor (potrf + potri: d³ flops in all, no d × d
            # identity solve and product).
            chol, info = lapack.dpotrf(prec, lower=1, clean=1)
            if info != 0:
                raise DegenerateCovarianceError(f"precision matrix {k} is not positive definite.")
            inv, info = lapack.dpotri(chol, lower=1, overwrite_c=1)
            if info != 0:
                raise DegenerateCovarianceError(f"precision matrix {k} is not positive definite.")
            mirror_lower(inv)
            out[k] = inv
        return out if covariance_type == "full" else out[0]
    if np.any(precisions <= 0.0):
        raise DegenerateCovarianceError("precisions must be positive.")
    return 1.0 / precisions


_LOG_DET_CHOLESKY: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "full": lambda p, d: np.sum(np.log(p.reshape(p.shape[0], -1)[:, :: d + 1]), axis=1),
    "tied": lambda p, d: np.asarray(np.sum(np.log(np.diag(p)))),
    "diag": lambda p, d: np.sum(np.log(p), axis=1),
    "spherical": lambda p, d: d * np.log(p),
}


def log_det_cholesky(precisions_cholesky: np.ndarray, covariance_type: str, n_features: int) -> np.ndarray:
    """``log det P`` per component (``-½ log det Σ``); shape ``(K,)``, or a scalar for tied."""
    return _LOG_DET_CHOLESKY[covariance_type](precisions_cholesky, n_features)


def sample_gaussians(
    weights: np.ndarray, means: np.ndarray, factors: np.ndarray, n_samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n_samples`` rows from ``Σ_k w_k N(μ_k, A_k A_kᵀ)``, grouped by component.

    Parameters
    ----------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, d)
    factors : ndarray of shape (K, d, d)
        Any ``A_k`` with ``A_k A_kᵀ`` the covariance (a Cholesky factor, or a
        possibly singular square root).
    n_samples : int
    rng : numpy.random.Generator

    Returns
    -------
    X : ndarray of shape (n_samples, d)
        Rows grouped by component, in component order (as scikit-learn).
    labels : ndarray of shape (n_samples,)
        Component of each row.
    """
    counts = rng.multinomial(n_samples, weights / weights.sum())
    labels = np.repeat(np.arange(weights.shape[0]), counts)
    z = rng.standard_normal((n_samples, means.shape[1]))
    out = np.empty_like(z)
    start = 0
    for k in np.flatnonzero(counts):
        rows = slice(start, start + int(counts[k]))
        out[rows] = z[rows] @ factors[k].T + means[k]
        start += int(counts[k])
    return out, labels


@dataclass(frozen=True, eq=False)
class MixtureState:
    """Parameters of a fitted Gaussian mixture; immutable, no I/O, no fitting.

    Attributes
    ----------
    weights : ndarray of shape (K,)
        Mixing proportions, non-negative, summing to one.
    means : ndarray of shape (K, d)
    covariances : ndarray
        ``(K, d, d)`` full, ``(d, d)`` tied, ``(K, d)`` diag, ``(K,)`` spherical.
    precisions_cholesky : ndarray, same shape as ``covariances``
    covariance_type : {"full", "tied", "diag", "spherical"}
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    covariance_type: CovarianceType

    @classmethod
    def from_covariances(
        cls,
        weights: np.ndarray,
        means: np.ndarray,
        covariances: np.ndarray,
        covariance_type: CovarianceType,
        *,
        owned: bool = False,
    ) -> MixtureState:
        """Build a state, computing the precision Cholesky factors (validated).

        With ``owned=True`` the given float64 arrays are frozen in place instead of
        copied: for callers (the M-step) that built them for this state alone, so that
        a fit holds one ``(K, d, d)`` covariance array, not two.
        """
        weights = np.asarray(weights, dtype=np.float64)
        means = np.asarray(means, dtype=np.float64)
        covariances = np.asarray(covariances, dtype=np.float64)
        validate_parameters(weights, means, covariances, covariance_type)
        prec_chol = precision_cholesky_from_covariances(covariances, covariance_type)
        freeze = _frozen_in_place if owned else _frozen
        return cls(freeze(weights), freeze(means), freeze(covariances), _frozen_in_place(prec_chol), covariance_type)

    @property
    def n_components(self) -> int:
        """Number of components K."""
        return int(self.means.shape[0])

    @property
    def n_features(self) -> int:
        """Number of features d."""
        return int(self.means.shape[1])

    @property
    def precisions(self) -> np.ndarray:
        """Precision matrices, same shape as ``covariances``."""
        return precisions_from_cholesky(self.precisions_cholesky, self.covariance_type)

    def n_parameters(self) -> int:
        """Number of free parameters (for BIC/AIC), as scikit-learn counts them."""
        k, d = self.n_components, self.n_features
        cov_params = {
            "full": k * d * (d + 1) / 2.0,
            "tied": d * (d + 1) / 2.0,
            "diag": k * d,
            "spherical": k,
        }[self.covariance_type]
        return int(cov_params + k * d + k - 1)

    def covariance_cholesky(self) -> np.ndarray:
        """Lower Cholesky factor of each covariance, shape ``(K, d, d)`` for every type."""
        return _COVARIANCE_CHOLESKY[self.covariance_type](self.covariances, self.n_components, self.n_features)

    def sample(self, n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n_samples`` rows from the mixture with the given Generator.

        Returns
        -------
        X : ndarray of shape (n_samples, d)
            Rows grouped by component, in component order (as scikit-learn).
        labels : ndarray of shape (n_samples,)
            Component of each row.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError("rng must be a numpy.random.Generator")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
        return sample_gaussians(self.weights, self.means, self.covariance_cholesky(), n_samples, rng)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (weights, means, covariances); the type travels as metadata."""
        return {"weights": self.weights, "means": self.means, "covariances": self.covariances}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], covariance_type: CovarianceType) -> MixtureState:
        """Inverse of :meth:`to_arrays`, validating every array (use on untrusted input)."""
        missing = {"weights", "means", "covariances"} - set(arrays)
        if missing:
            raise ValueError(f"mixture arrays are missing {sorted(missing)}")
        return cls.from_covariances(
            np.asarray(arrays["weights"]),
            np.asarray(arrays["means"]),
            np.asarray(arrays["covariances"]),
            covariance_type,
        )


def _frozen_in_place(a: np.ndarray) -> np.ndarray:
    if a.dtype != np.float64 or not a.flags.c_contiguous or a.base is not None:
        return _frozen(a)
    a.setflags(write=False)
    return a


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


def validate_parameters(
    weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    covariance_type: str,
    *,
    weights_atol: float = 1e-6,
) -> None:
    """Check shapes, finiteness, weights on the simplex and symmetric covariances.

    Raises
    ------
    ValueError
        With a message naming the offending array.
    """
    check_covariance_type(covariance_type)
    for name, arr in (("weights", weights), ("means", means), ("covariances", covariances)):
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}.")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contain NaN or infinity.")
    if weights.ndim != 1 or weights.shape[0] < 1:
        raise ValueError(f"weights must have shape (n_components,), got {weights.shape}.")
    k = weights.shape[0]
    if means.ndim != 2 or means.shape[0] != k or means.shape[1] < 1:
        raise ValueError(f"means must have shape ({k}, n_features), got {means.shape}.")
    d = means.shape[1]
    expected = covariance_shape(covariance_type, k, d)
    if covariances.shape != expected:
        raise ValueError(
            f"{covariance_type!r} covariances must have shape {expected}, got {covariances.shape}."
        )
    if np.any(weights < 0.0):
        raise ValueError("weights must be non-negative.")
    if not np.isclose(weights.sum(), 1.0, rtol=0.0, atol=weights_atol):
        raise ValueError(f"weights must sum to one, they sum to {weights.sum():.9g}.")
    if covariance_type in ("full", "tied"):
        stack = covariances if covariance_type == "full" else covariances[None]
        for chunk in component_chunks(stack.shape[0], d):
            part = stack[chunk]
            scale = np.maximum(np.max(part, axis=(1, 2)), -np.min(part, axis=(1, 2)))[:, None, None]
            tol = 1e-8 * np.maximum(scale, 1e-300)
            for band in row_bands(d):  # not whole-matrix differences: memory at large d
                if np.any(np.abs(part[:, band] - np.swapaxes(part[:, :, band], 1, 2)) > tol):
                    raise ValueError("covariance matrices must be symmetric.")

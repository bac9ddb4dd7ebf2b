"""Sufficient statistics of a Gaussian mixture and the blocked E-step that produces them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from fedgmm.mixture import MixtureState, check_covariance_type, covariance_shape, log_gaussian_prob
from fedgmm.types import CovarianceType

#: Target number of elements of the largest per-block temporary (block × K × d).
DEFAULT_BLOCK_ELEMENTS = 1 << 18


@dataclass(frozen=True, eq=False)
class SufficientStatistics:
    """Additive E-step statistics about a common reference point ``shift``.

    With responsibilities ``r_nk`` and centred rows ``x_n − shift``:

    Attributes
    ----------
    nk : ndarray of shape (K,)
        ``Σ_n r_nk``.
    sx : ndarray of shape (K, d)
        ``Σ_n r_nk (x_n − shift)``.
    sxx : ndarray
        Second moments as the covariance type needs them:
        full ``(K, d, d)`` ``Σ_n r_nk x̃ x̃ᵀ``; tied ``(d, d)`` ``Σ_n x̃ x̃ᵀ``;
        diag ``(K, d)`` ``Σ_n r_nk x̃²``; spherical ``(K,)`` ``Σ_n r_nk ‖x̃‖²``.
    n_samples : int
        Number of rows summed.
    log_likelihood : float
        ``Σ_n log p(x_n)`` under the parameters used for the E-step (0 when built
        from given responsibilities).
    shift : ndarray of shape (d,)
    covariance_type : {"full", "tied", "diag", "spherical"}

    Notes
    -----
    Statistics of disjoint shards computed with the same parameters and ``shift``
    add up (``a + b``) to the statistics of their union: this is what federated EM
    and secure aggregation rely on. The shift only improves the conditioning of
    ``Σ r x̃ x̃ᵀ − N μ̃ μ̃ᵀ``; any value common to all shards is exact.
    """

    nk: np.ndarray
    sx: np.ndarray
    sxx: np.ndarray
    n_samples: int
    log_likelihood: float
    shift: np.ndarray
    covariance_type: CovarianceType

    @property
    def n_components(self) -> int:
        """Number of components K."""
        return int(self.nk.shape[0])

    @property
    def n_features(self) -> int:
        """Number of features d."""
        return int(self.sx.shape[1])

    def __add__(self, other: SufficientStatistics) -> SufficientStatistics:
        if not isinstance(other, SufficientStatistics):
            return NotImplemented
        if other.covariance_type != self.covariance_type:
            raise ValueError(
                f"cannot add {other.covariance_type!r} statistics to {self.covariance_type!r} ones."
            )
        if other.sx.shape != self.sx.shape or other.sxx.shape != self.sxx.shape:
            raise ValueError(
                f"cannot add statistics of shapes {other.sx.shape} and {self.sx.shape}."
            )
        if not np.array_equal(other.shift, self.shift):
            raise ValueError("cannot add statistics computed about different shifts.")
        return SufficientStatistics(
            nk=self.nk + other.nk,
            sx=self.sx + other.sx,
            sxx=self.sxx + other.sxx,
            n_samples=self.n_samples + other.n_samples,
            log_likelihood=self.log_likelihood + other.log_likelihood,
            shift=self.shift,
            covariance_type=self.covariance_type,
        )

    def __radd__(self, other: object) -> SufficientStatistics:
        # Lets ``sum(list_of_stats)`` work.
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    @classmethod
    def zeros(
        cls, n_components: int, n_features: int, covariance_type: CovarianceType, shift: np.ndarray | None = None
    ) -> SufficientStatistics:
        """Statistics of an empty shard."""
        check_covariance_type(covariance_type)
        return cls(
            nk=np.zeros(n_components),
            sx=np.zeros((n_components, n_features)),
            sxx=np.zeros(covariance_shape(covariance_type, n_components, n_features)),
            n_samples=0,
            log_likelihood=0.0,
            shift=np.zeros(n_features) if shift is None else np.asarray(shift, dtype=np.float64),
            covariance_type=covariance_type,
        )


def block_size_for(n_components: int, n_features: int, block_size: int | None = None) -> int:
    """Rows per block so that block × K × d stays near :data:`DEFAULT_BLOCK_ELEMENTS`."""
    if block_size is not None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}.")
        return int(block_size)
    return int(max(64, DEFAULT_BLOCK_ELEMENTS // max(1, n_components * n_features)))


def iter_blocks(n_samples: int, block: int) -> Iterator[slice]:
    """Consecutive row slices of at most ``block`` rows."""
    for start in range(0, n_samples, block):
        yield slice(start, min(start + block, n_samples))


def _accumulate(
    xc: np.ndarray,
    resp: np.ndarray,
    covariance_type: str,
    nk: np.ndarray,
    sx: np.ndarray,
    sxx: np.ndarray,
) -> None:
    """Add one block's statistics into float64 accumulators, in place.

    ``xc`` is ``(B, d)`` (already shifted), ``resp`` is ``(B, K)``; both share a dtype.
    For full covariance the K second moments come from one product
    ``X̃ᵀ [r_1 ⊙ X̃ … r_K ⊙ X̃]`` of shape ``d × K d``.
    """
    b, d = xc.shape
    k = resp.shape[1]
    nk += resp.sum(axis=0, dtype=np.float64)
    sx += resp.T @ xc
    if covariance_type == "full":
        z = (resp[:, :, None] * xc[:, None, :]).reshape(b, k * d)
        sxx += (xc.T @ z).reshape(d, k, d).transpose(1, 0, 2)
    elif covariance_type == "tied":
        sxx += xc.T @ xc
    elif covariance_type == "diag":
        sxx += resp.T @ (xc * xc)
    else:
        sxx += resp.T @ np.einsum("ij,ij->i", xc, xc)


def statistics_from_responsibilities(
    X: np.ndarray,
    resp: np.ndarray,
    covariance_type: CovarianceType,
    *,
    shift: np.ndarray | None = None,
    block_size: int | None = None,
) -> SufficientStatistics:
    """Sufficient statistics for given responsibilities (used to initialise EM).

    Parameters
    ----------
    X : ndarray of shape (n, d)
    resp : ndarray of shape (n, K)
    covariance_type : {"full", "tied", "diag", "spherical"}
    shift : ndarray of shape (d,), optional
        Reference point; zeros by default.
    block_size : int, optional
        Rows per block.
    """
    n, d = X.shape
    k = resp.shape[1]
    stats = SufficientStatistics.zeros(k, d, covariance_type, shift)
    nk, sx, sxx = stats.nk, stats.sx, stats.sxx
    shift_c = stats.shift.astype(X.dtype)
    for rows in iter_blocks(n, block_size_for(k, d, block_size)):
        _accumulate(X[rows] - shift_c, resp[rows].astype(X.dtype), covariance_type, nk, sx, sxx)
    return SufficientStatistics(nk, sx, sxx, n, 0.0, stats.shift, covariance_type)


def _shifted_state_arrays(state: MixtureState, shift: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore"):
        log_w = np.log(state.weights)
    return state.means - shift, log_w.astype(dtype)


def e_step(
    X: np.ndarray,
    state: MixtureState,
    *,
    shift: np.ndarray | None = None,
    block_size: int | None = None,
    dtype: np.dtype | type | None = None,
) -> SufficientStatistics:
    """E-step: responsibilities under ``state`` reduced to sufficient statistics.

    Works block by block, so memory is bounded by block × K × d whatever n is.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    state : MixtureState
        Current parameters.
    shift : ndarray of shape (d,), optional
        Reference point of the statistics (zeros by default); centring the data
        this way keeps float32 mode and the second moments well conditioned.
    block_size : int, optional
        Rows per block; by default chosen from K and d.
    dtype : numpy dtype, optional
        Compute dtype of the block arithmetic (float64 or float32); defaults to
        ``X.dtype``. Statistics are always accumulated in float64.

    Returns
    -------
    SufficientStatistics
        With ``log_likelihood = Σ_n log p(x_n | state)``.
    """
    n, d = X.shape
    cdtype = np.dtype(dtype) if dtype is not None else X.dtype
    stats = SufficientStatistics.zeros(state.n_components, d, state.covariance_type, shift)
    nk, sx, sxx = stats.nk, stats.sx, stats.sxx
    means_c, log_w = _shifted_state_arrays(state, stats.shift, cdtype)
    shift_c = stats.shift.astype(cdtype)
    total = 0.0
    for rows in iter_blocks(n, block_size_for(state.n_components, d, block_size)):
        xc = X[rows].astype(cdtype, copy=False) - shift_c
        logp = log_gaussian_prob(xc, means_c, state.precisions_cholesky, state.covariance_type)
        logp += log_w
        lse = logsumexp(logp, axis=1)
        total += float(np.sum(lse, dtype=np.float64))
        logp -= lse[:, None]
        np.exp(logp, out=logp)
        _accumulate(xc, logp, state.covariance_type, nk, sx, sxx)
    return SufficientStatistics(nk, sx, sxx, n, total, stats.shift, state.covariance_type)


def score_samples(
    X: np.ndarray, state: MixtureState, *, block_size: int | None = None, dtype: np.dtype | type | None = None
) -> np.ndarray:
    """Log-density of each row, ``(n,)``, computed block by block."""
    n, d = X.shape
    cdtype = np.dtype(dtype) if dtype is not None else X.dtype
    shift = np.zeros(d)
    means_c, log_w = _shifted_state_arrays(state, shift, cdtype)
    out = np.empty(n, dtype=np.float64)
    for rows in iter_blocks(n, block_size_for(state.n_components, d, block_size)):
        logp = log_gaussian_prob(X[rows].astype(cdtype, copy=False), means_c, state.precisions_cholesky, state.covariance_type)
        out[rows] = logsumexp(logp + log_w, axis=1)
    return out


def log_responsibilities(
    X: np.ndarray, state: MixtureState, *, block_size: int | None = None, dtype: np.dtype | type | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Log responsibilities ``(n, K)`` and per-row log-density ``(n,)``."""
    n, d = X.shape
    cdtype = np.dtype(dtype) if dtype is not None else X.dtype
    means_c, log_w = _shifted_state_arrays(state, np.zeros(d), cdtype)
    log_resp = np.empty((n, state.n_components), dtype=np.float64)
    log_norm = np.empty(n, dtype=np.float64)
    for rows in iter_blocks(n, block_size_for(state.n_components, d, block_size)):
        logp = log_gaussian_prob(X[rows].astype(cdtype, copy=False), means_c, state.precisions_cholesky, state.covariance_type)
        logp = logp + log_w
        lse = logsumexp(logp, axis=1)
        log_resp[rows] = logp - lse[:, None]
        log_norm[rows] = lse
    return log_resp, log_norm

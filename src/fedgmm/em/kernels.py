"""Per-covariance-type block kernels: component log-densities and statistic accumulation.

A kernel is built once per E-step from the parameters, the reference point ``shift`` and
the compute dtype; it then processes blocks of centred rows ``x̃ = x − shift``.
:func:`make_kernel` looks the kernel up in :data:`KERNELS` by covariance type (for full,
the formulation is then picked by shape).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from fedgmm.mixture import LOG_2PI, MixtureState, log_det_cholesky

#: Full covariance uses the outer-product form while d(d+1)/2 <= this factor × K·d.
OUTER_PRODUCT_MAX_RATIO = 4.0


class BlockKernel(Protocol):
    """What the blocked E-step needs from a covariance type."""

    #: Elements of the largest per-row temporary (sets the block size).
    row_elements: int

    def set_parameters(self, state: MixtureState, shift: np.ndarray, dtype: np.dtype) -> None:
        """Precompute what scoring needs from the parameters, centred at ``shift``."""

    def log_prob(self, xc: np.ndarray) -> tuple[np.ndarray, Any]:
        """``log π_k + log N(x̃_n | μ̃_k, Σ_k)`` of a block, ``(B, K)``, and a reusable context."""

    def accumulate(self, xc: np.ndarray, resp: np.ndarray, ctx: Any, weights: np.ndarray | None = None) -> None:
        """Add the block's second-moment statistic into the kernel's float64 accumulator.

        ``resp`` (B, K) already carries the row weights; ``weights`` (B,) is given again
        for the statistics that do not go through the responsibilities (tied).
        """

    def second_moments(self) -> np.ndarray:
        """The accumulated second-moment statistic in the shape the covariance type needs."""


def _log_weights(state: MixtureState) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(state.weights)


class FullOuterKernel:
    """Full covariance through the upper-triangular outer products ``q_n = triu(x̃ x̃ᵀ)``.

    The Mahalanobis term is ``x̃ᵀΛx̃ − 2 x̃ᵀΛμ̃ + μ̃ᵀΛμ̃`` with ``x̃ᵀΛx̃ = q_n · λ`` (λ the
    triangle of Λ with doubled off-diagonal), so the E-step is one ``(B, T) @ (T, K)``
    product and the M-step statistic ``Σ_n r_nk q_n`` is one ``(T, B) @ (B, K)`` product
    over the same ``q`` (T = d(d+1)/2). That is half the flops of forming ``P_kᵀx̃`` for
    every k and touches ``T`` instead of ``K·d`` numbers per row.
    """

    def __init__(self, n_components: int, n_features: int) -> None:
        d = n_features
        self.d = d
        self.iu, self.ju = np.triu_indices(d)
        self.offsets = np.concatenate([[0], np.cumsum(np.arange(d, 0, -1))])
        self.row_elements = int(self.offsets[-1])
        self.sxx = np.zeros((self.row_elements, n_components))
        self._q: np.ndarray | None = None

    def set_parameters(self, state: MixtureState, shift: np.ndarray, dtype: np.dtype) -> None:
        d = self.d
        prec = state.precisions  # (K, d, d)
        means_c = state.means - shift
        lam = prec[:, self.iu, self.ju] * np.where(self.iu == self.ju, 1.0, 2.0)
        self.lam = np.ascontiguousarray(lam.T, dtype=dtype)  # (T, K)
        lin = np.einsum("kij,kj->ki", prec, means_c)  # Λμ̃, (K, d)
        self.lin2 = np.ascontiguousarray(-2.0 * lin.T, dtype=dtype)  # (d, K)
        quad = np.einsum("ki,ki->k", lin, means_c)
        log_det = log_det_cholesky(state.precisions_cholesky, "full", d)
        self.const = (-0.5 * (d * LOG_2PI + quad) + log_det + _log_weights(state)).astype(dtype)

    def _outer(self, xc: np.ndarray) -> np.ndarray:
        """``triu(x̃ x̃ᵀ)`` of every row, laid out ``(T, B)``: each entry's values over the block
        are contiguous, so it is built with ``d`` broadcast products of whole rows of ``x̃ᵀ``
        (3× faster than writing ``(B, T)`` column strips)."""
        b = xc.shape[0]
        if self._q is None or self._q.shape[1] < b or self._q.dtype != xc.dtype:
            self._q = np.empty((self.row_elements, b), dtype=xc.dtype)
        q = self._q[:, :b]
        xt = np.ascontiguousarray(xc.T)
        off = self.offsets
        for i in range(self.d):
            np.multiply(xt[i], xt[i:], out=q[off[i] : off[i + 1]])
        return q

    def log_prob(self, xc: np.ndarray) -> tuple[np.ndarray, Any]:
        q = self._outer(xc)
        maha_half = q.T @ self.lam
        maha_half += xc @ self.lin2
        logp = self.const - 0.5 * maha_half
        return logp, q

    def accumulate(self, xc: np.ndarray, resp: np.ndarray, ctx: Any, weights: np.ndarray | None = None) -> None:
        q = ctx if ctx is not None else self._outer(xc)
        self.sxx += q @ resp

    def second_moments(self) -> np.ndarray:
        k = self.sxx.shape[1]
        out = np.empty((k, self.d, self.d))
        out[:, self.iu, self.ju] = self.sxx.T
        out[:, self.ju, self.iu] = self.sxx.T
        return out


class FullFactorKernel:
    """Full covariance through ``y = x̃ [P_1 … P_K] − [μ̃_1P_1 … μ̃_KP_K]`` (large d, small K).

    Used when ``d(d+1)/2`` outgrows ``K·d`` so much that the outer products would cost more
    than the factor products; the statistic is ``x̃ᵀ [r_1 ⊙ x̃ … r_K ⊙ x̃]``.
    """

    def __init__(self, n_components: int, n_features: int) -> None:
        self.d, self.k = n_features, n_components
        self.row_elements = n_components * n_features
        self.sxx = np.zeros((n_components, n_features, n_features))

    def set_parameters(self, state: MixtureState, shift: np.ndarray, dtype: np.dtype) -> None:
        d, k = self.d, self.k
        pc = state.precisions_cholesky
        means_c = state.means - shift
        self.pcat = np.ascontiguousarray(pc.transpose(1, 0, 2).reshape(d, k * d), dtype=dtype)
        self.bcat = np.einsum("kd,kde->ke", means_c, pc).reshape(k * d).astype(dtype)
        log_det = log_det_cholesky(pc, "full", d)
        self.const = (-0.5 * d * LOG_2PI + log_det + _log_weights(state)).astype(dtype)

    def log_prob(self, xc: np.ndarray) -> tuple[np.ndarray, Any]:
        b = xc.shape[0]
        y = xc @ self.pcat
        y -= self.bcat
        y2 = y.reshape(b * self.k, self.d)
        maha = np.einsum("ij,ij->i", y2, y2).reshape(b, self.k)
        return self.const - 0.5 * maha, None

    def accumulate(self, xc: np.ndarray, resp: np.ndarray, ctx: Any, weights: np.ndarray | None = None) -> None:
        b = xc.shape[0]
        z = (resp[:, :, None] * xc[:, None, :]).reshape(b, self.k * self.d)
        self.sxx += (xc.T @ z).reshape(self.d, self.k, self.d).transpose(1, 0, 2)

    def second_moments(self) -> np.ndarray:
        return self.sxx


class TiedKernel:
    """Tied covariance: ``y = x̃P``; ``‖y − μ̃_kP‖²`` expanded; statistic ``Σ x̃ x̃ᵀ``."""

    def __init__(self, n_components: int, n_features: int) -> None:
        self.d = n_features
        self.row_elements = max(n_features, n_components)
        self.sxx = np.zeros((n_features, n_features))

    def set_parameters(self, state: MixtureState, shift: np.ndarray, dtype: np.dtype) -> None:
        d = self.d
        pc = state.precisions_cholesky
        means_c = state.means - shift
        self.p = np.ascontiguousarray(pc, dtype=dtype)
        mp = means_c @ pc
        self.mp2 = np.ascontiguousarray(-2.0 * mp.T, dtype=dtype)  # (d, K)
        log_det = log_det_cholesky(pc, "tied", d)
        self.const = (
            -0.5 * (d * LOG_2PI + np.einsum("ij,ij->i", mp, mp)) + log_det + _log_weights(state)
        ).astype(dtype)

    def log_prob(self, xc: np.ndarray) -> tuple[np.ndarray, Any]:
        y = xc @ self.p
        maha = y @ self.mp2
        maha += np.einsum("ij,ij->i", y, y)[:, None]
        return self.const - 0.5 * maha, None

    def accumulate(self, xc: np.ndarray, resp: np.ndarray, ctx: Any, weights: np.ndarray | None = None) -> None:
        self.sxx += xc.T @ (xc if weights is None else xc * weights[:, None])

    def second_moments(self) -> np.ndarray:
        return self.sxx


class DiagKernel:
    """Diagonal covariance: ``Σ_j λ_kj (x̃_j − μ̃_kj)²`` expanded; statistic ``Σ r x̃²``."""

    def __init__(self, n_components: int, n_features: int) -> None:
        self.d = n_features
        self.row_elements = max(n_features, n_components)
        self.sxx = np.zeros((n_components, n_features))

    def set_parameters(self, state: MixtureState, shift: np.ndarray, dtype: np.dtype) -> None:
        d = self.d
        prec = state.precisions_cholesky**2  # (K, d)
        means_c = state.means - shift
        self.prec_t = np.ascontiguousarray(prec.T, dtype=dtype)  # (d, K)
        self.mp2 = np.ascontiguousarray(-2.0 * (means_c * prec).T, dtype=dtype)
        log_det = log_det_cholesky(state.precisions_cholesky, "diag", d)
        quad = np.sum(means_c**2 * prec, axis=1)
        self.const = (-0.5 * (d * LOG_2PI + quad) + log_det + _log_weights(state)).astype(dtype)

    def log_prob(self, xc: np.ndarray) -> tuple[np.ndarray, Any]:
        x2 = xc * xc
        maha = x2 @ self.prec_t
        maha += xc @ self.mp2
        return self.const - 0.5 * maha, x2

    def accumulate(self, xc: np.ndarray, resp: np.ndarray, ctx: Any, weights: np.ndarray | None = None) -> None:
        x2 = ctx if ctx is not None else xc * xc
        self.sxx += resp.T @ x2

    def second_moments(self) -> np.ndarray:
        return self.sxx


class SphericalKernel:
    """Spherical covariance: ``λ_k ‖x̃ − μ̃_k‖²`` expanded; statistic ``Σ r ‖x̃‖²``."""

    def __init__(self, n_components: int, n_features: int) -> None:
        self.d = n_features
        self.row_elements = max(n_features, n_components)
        self.sxx = np.zeros(n_components)

    def set_parameters(self, state: MixtureState, shift: np.ndarray, dtype: np.dtype) -> None:
        d = self.d
        prec = state.precisions_cholesky**2  # (K,)
        means_c = state.means - shift
        self.prec = prec.astype(dtype)
        self.mp2 = np.ascontiguousarray(-2.0 * (means_c * prec[:, None]).T, dtype=dtype)
        log_det = log_det_cholesky(state.precisions_cholesky, "spherical", d)
        quad = np.sum(means_c**2, axis=1) * prec
        self.const = (-0.5 * (d * LOG_2PI + quad) + log_det + _log_weights(state)).astype(dtype)

    def log_prob(self, xc: np.ndarray) -> tuple[np.ndarray, Any]:
        sq = np.einsum("ij,ij->i", xc, xc)
        maha = sq[:, None] * self.prec
        maha += xc @ self.mp2
        return self.const - 0.5 * maha, sq

    def accumulate(self, xc: np.ndarray, resp: np.ndarray, ctx: Any, weights: np.ndarray | None = None) -> None:
        sq = ctx if ctx is not None else np.einsum("ij,ij->i", xc, xc)
        self.sxx += resp.T @ sq

    def second_moments(self) -> np.ndarray:
        return self.sxx


def _full_kernel(n_components: int, n_features: int) -> BlockKernel:
    """The cheaper full-covariance formulation for this shape."""
    d = n_features
    if d * (d + 1) / 2 <= OUTER_PRODUCT_MAX_RATIO * n_components * d:
        return FullOuterKernel(n_components, d)
    return FullFactorKernel(n_components, d)


#: Kernel factory of each covariance type, called as ``factory(n_components, n_features)``.
KERNELS: dict[str, Callable[[int, int], BlockKernel]] = {
    "full": _full_kernel,
    "tied": TiedKernel,
    "diag": DiagKernel,
    "spherical": SphericalKernel,
}


def make_kernel(
    covariance_type: str,
    n_components: int,
    n_features: int,
    *,
    state: MixtureState | None = None,
    shift: np.ndarray | None = None,
    dtype: np.dtype | None = None,
) -> BlockKernel:
    """The block kernel of a covariance type (for full, the cheaper of the two forms).

    Without ``state`` the kernel can only accumulate statistics of given responsibilities;
    with it (and ``shift`` of shape ``(d,)``) it also scores blocks in ``dtype``.
    """
    try:
        factory = KERNELS[covariance_type]
    except KeyError:
        raise ValueError(f"unknown covariance_type {covariance_type!r}") from None
    kernel = factory(n_components, n_features)
    if state is not None:
        kernel.set_parameters(
            state,
            np.zeros(n_features) if shift is None else shift,
            np.dtype(np.float64) if dtype is None else np.dtype(dtype),
        )
    return kernel

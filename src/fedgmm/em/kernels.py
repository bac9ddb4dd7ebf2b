"""Per-covariance-type block kernels: component log-densities and statistic accumulation.

A kernel is built once per E-step (and per thread) from the reference point ``shift``,
the compute dtype and, to score, the parameters; it then processes blocks of rows:
``prepare`` centres a block (``x̃ = x − shift``) into the kernel's reusable design
buffer, ``log_prob`` returns ``log π_k + log N(x̃ | μ̃_k, Σ_k)`` and ``accumulate`` adds the
block's ``N_k``, ``Σ r x̃`` and second-moment statistic. :func:`make_kernel` looks the
kernel up in :data:`KERNELS` by covariance type (for full, the formulation is then
picked by shape, see :func:`full_formulation`).

Most kernels fold everything into two matrix products per block: with a design row
``z_n = [1, x̃_n, φ(x̃_n)]`` (``φ`` the squares, the squared norm or ``triu(x̃x̃ᵀ)``), the
log-densities are ``Wᵀ Z`` (``W`` holds the constants, ``Λμ̃`` and ``−½Λ``) and the
statistics are ``Z Rᵀ`` (its rows are ``N_k``, ``Σ r x̃`` and ``Σ r φ``). Few passes
over ``(K, B)`` arrays, one output per product: that is what makes diag and spherical,
which are memory-bound, fast.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from scipy.linalg import blas

from fedgmm.em.fused import block_step
from fedgmm.mixture import LOG_2PI, MixtureState, component_chunks, log_det_cholesky, mirror_lower

#: Full covariance uses the shared outer-product form while a row's triangle
#: ``d(d+1)/2`` is at most ``(K + 1)·d`` numbers, i.e. ``d <= 2K + 1`` (measured crossover,
#: single thread, CPU time per row: d=16 K=16 outer 1.1 µs vs factor 2.4; d=48 K=16 outer
#: 12.1 vs 10.7; d=64 K=128 outer 65 vs 115; d=128 K=16 outer 90 vs 37) ...
OUTER_PRODUCT_MAX_RATIO = 1.0
#: ... and ``d`` is at most this: beyond it a block of ``triu(x̃x̃ᵀ)`` rows is tens of MiB
#: (128 rows × d²/2) and the per-component Cholesky products, whose temporaries are
#: ``(B, d)``, are the safer choice at every K.
OUTER_PRODUCT_MAX_FEATURES = 256
#: A kernel's compiled step (:mod:`fedgmm.em.fused`) hands the rest of the E-step to the
#: numpy passes after a block that keeps more than this fraction of its K·B responsibilities.
FUSED_MAX_KEPT_FRACTION = 0.5


class BlockKernel(Protocol):
    """What the blocked E-step needs from a covariance type.

    Per-block arrays are laid out component-major: log-densities and responsibilities are
    ``(K, B)``, so the per-row reductions of the normalisation (max and sum over the K
    components) run along contiguous rows instead of across short strided ones.
    """

    #: Elements of the largest per-row temporary (sets the block size).
    row_elements: int

    def set_parameters(self, state: MixtureState) -> None:
        """Precompute what scoring needs from the parameters, centred at the kernel's shift."""

    def prepare(self, x: np.ndarray) -> Any:
        """Centre a block of raw rows ``(B, d)`` into the kernel's buffers; return a context."""

    def log_prob(self, ctx: Any) -> np.ndarray:
        """``log π_k + log N(x̃_n | μ̃_k, Σ_k)`` of the prepared block, a new ``(K, B)`` array."""

    def accumulate(self, ctx: Any, resp: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add the block's statistics into the kernel's float64 accumulators.

        ``resp`` (K, B) already carries the row weights; ``weights`` (B,) is given again
        for the statistics that do not go through the responsibilities (tied).
        """

    #: Whether :meth:`fused_step` is available (a compiled pass, see :mod:`fedgmm.em.fused`).
    has_fused_step: bool

    def fused_step(self, x: np.ndarray, weights: np.ndarray | None, cut: float) -> float:
        """``prepare``, ``log_prob``, the normalisation with log-responsibility ``cut`` and
        ``accumulate`` of a block of raw rows ``x`` (B, d) in one pass; returns the block's
        ``Σ w log p(x)``. Only where :attr:`has_fused_step`, which the kernel may turn off
        after a block (then the four steps do the remaining blocks)."""

    def statistics(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Accumulated ``N_k`` (K,), ``Σ r x̃`` (K, d) and the second moments of the type."""

    def fork(self) -> BlockKernel:
        """A kernel sharing these parameters (read-only) with its own buffers and zeroed
        accumulators: one per thread, so the parameters exist once."""

    def absorb(self, other: BlockKernel) -> None:
        """Add ``other``'s accumulators (a fork's) into this kernel's, in place."""


class _Accumulating:
    """Fork/absorb over the accumulator attributes a kernel names in ``_accumulators``."""

    _accumulators: tuple[str, ...]
    _buffers: tuple[str, ...]
    has_fused_step = False

    def fused_step(self, x: np.ndarray, weights: np.ndarray | None, cut: float) -> float:
        raise NotImplementedError(f"{type(self).__name__} has no fused step.")

    def fork(self) -> Any:
        new = copy.copy(self)
        for name in self._accumulators:
            setattr(new, name, np.zeros_like(getattr(self, name)))
        for name in self._buffers:
            setattr(new, name, None)
        return new

    def absorb(self, other: Any) -> None:
        for name in self._accumulators:
            mine = getattr(self, name)
            mine += getattr(other, name)


_NO_WEIGHTS = np.empty(0)


def _log_weights(state: MixtureState) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(state.weights)


def _rows_buffer(buf: np.ndarray | None, rows: int, cols: int, dtype: np.dtype) -> np.ndarray:
    """A ``(≥rows, cols)`` buffer of ``dtype``, reused across blocks."""
    if buf is None or buf.shape[0] < rows or buf.dtype != dtype:
        buf = np.empty((rows, cols), dtype=dtype)
    return buf


class DesignKernel(_Accumulating):
    """Kernels whose block work is two matrix products over a design ``Z`` (cols, B).

    Column ``n`` of ``Z`` is ``z_n = [1, x̃_n, φ(x̃_n)]``; a subclass says what ``φ`` is
    (:meth:`_features`) and builds ``W = [const + log π; Λμ̃; −½λ]`` from the parameters,
    so that ``Wᵀ Z`` is the ``(K, B)`` block of log-densities and ``Z Rᵀ`` adds ``N_k``,
    ``Σ r x̃`` and ``Σ r φ`` into one ``(cols, K)`` accumulator. ``Z`` is stored feature-major:
    every feature's values over the block are contiguous, so centring, squaring and the
    outer products are whole-row operations.
    """

    d: int
    cols: int
    _accumulators = ("acc", "acc_rows")
    _buffers = ("_z",)
    #: Covariance type of the compiled block step, if the kernel has one (:mod:`fedgmm.em.fused`).
    _fused_type: str | None = None
    #: ... and the fewest features it is used from, per compute dtype (where it measured
    #: faster than the numpy passes; a dtype not named keeps the numpy passes).
    _fused_min_features: tuple[tuple[str, int], ...] = ()  # (dtype name, fewest features)
    _step: Any = None

    def __init__(self, n_components: int, n_features: int, shift: np.ndarray, dtype: np.dtype) -> None:
        self.d, self.k = n_features, n_components
        self.row_elements = self.cols + n_components
        # Kept in float64: blocks are centred in float64 and then rounded to ``dtype``, so
        # the statistics are about exactly the shift they are labelled with.
        self.shift = np.asarray(shift, dtype=np.float64)
        self._shift_col = self.shift[:, None]
        self.dtype = np.dtype(dtype)
        self.acc = np.zeros((self.cols, n_components))
        # The fused step's accumulator, component-major; (K, cols) only where it runs.
        self.acc_rows = np.zeros((0, self.cols))
        self._wt: np.ndarray | None = None
        self._z: np.ndarray | None = None
        self._logw_apart: np.ndarray | None = None

    def _set_w(self, const: np.ndarray, linear: np.ndarray, quad: np.ndarray, logw: np.ndarray) -> None:
        """``Wᵀ = [const + log π, (Λμ̃)ᵀ, −½λᵀ]`` (K, cols) from ``linear`` (K, d), ``quad``
        (K, cols − 1 − d); an impossible (zero-weight) component's ``−inf`` is added after
        the product instead, so it never meets a BLAS padding zero."""
        finite = bool(np.all(np.isfinite(logw)))
        top = const + logw if finite else const
        self._logw_apart = None if finite else logw.astype(self.dtype)[:, None]
        ftype, min_d = self._fused_type, dict(self._fused_min_features).get(self.dtype.name)
        self._step = block_step(ftype) if ftype is not None and min_d is not None and self.d >= min_d else None
        self.has_fused_step = self._step is not None
        if self._step is None:
            self._wt = np.ascontiguousarray(np.hstack([top[:, None], linear, quad]), dtype=self.dtype)
            return
        # The compiled pass has no BLAS padding: log π goes into the constant even if −inf.
        # Its (d, K) arrays stand in for W, which is built from them only if the numpy
        # passes run (memory: at d = 2000, K = 128 each is 2 MiB).
        self._step_const = (const + logw).astype(self.dtype)
        self._step_linear = np.ascontiguousarray(linear.T, dtype=self.dtype)
        self._step_quad = np.ascontiguousarray(quad.T, dtype=self.dtype)
        self._wt_top = top.astype(self.dtype)
        self.acc_rows = np.zeros((self.k, self.cols))

    @property
    def wt(self) -> np.ndarray:
        """``Wᵀ`` (K, cols) in the compute dtype."""
        if self._wt is None:
            self._wt = np.ascontiguousarray(
                np.hstack([self._wt_top[:, None], self._step_linear.T, self._step_quad.T]), dtype=self.dtype
            )
        return self._wt

    def fused_step(self, x: np.ndarray, weights: np.ndarray | None, cut: float) -> float:
        if self._step is None:
            raise NotImplementedError(f"{type(self).__name__} has no fused step here (no numba?).")
        ll, kept = self._step(
            x, self.shift, self._step_const, self._step_linear, self._step_quad, cut,
            _NO_WEIGHTS if weights is None else weights, self.acc_rows,
        )
        if kept > FUSED_MAX_KEPT_FRACTION * self.k * x.shape[0]:
            self.has_fused_step = False  # dense responsibilities: the numpy passes from the next block
        return float(ll)

    def prepare(self, x: np.ndarray) -> np.ndarray:
        b, d = x.shape[0], self.d
        if self._z is None or self._z.shape[1] < b or self._z.dtype != self.dtype:
            self._z = np.empty((self.cols, b), dtype=self.dtype)
            self._z[0] = 1.0
        z = self._z[:, :b]
        xt = z[1 : 1 + d]
        np.subtract(x.T, self._shift_col, out=xt)
        self._features(xt, z[1 + d :])
        return z

    def _features(self, xt: np.ndarray, out: np.ndarray) -> None:
        """Write ``φ`` of the centred block ``xt`` (d, B) into ``out`` (cols − 1 − d, B)."""
        raise NotImplementedError

    def log_prob(self, ctx: np.ndarray) -> np.ndarray:
        logp = self.wt @ ctx
        if self._logw_apart is not None:
            logp += self._logw_apart
        return logp

    def accumulate(self, ctx: np.ndarray, resp: np.ndarray, weights: np.ndarray | None = None) -> None:
        self.acc += ctx @ resp.T

    def statistics(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d = self.d
        acc = self.acc + self.acc_rows.T if self.acc_rows.size else self.acc
        return acc[0].copy(), acc[1 : 1 + d].T.copy(), self._second(acc[1 + d :])

    def _second(self, block: np.ndarray) -> np.ndarray:
        """The type's second-moment statistic from the accumulator rows of ``φ`` (cols − 1 − d, K)."""
        return block.T.copy()


class DiagKernel(DesignKernel):
    """Diagonal covariance: ``φ(x̃) = x̃²``, ``W = [c; μ̃λ; −½λ]``; statistic ``Σ r x̃²``."""

    _fused_type = "diag"
    # One thread, CPU time, compiled / numpy passes: d = 32 K = 16 float64 27 / 45 ms
    # (after 4 iterations), float32 29 / 38; d = 512 22 / 46; d = 8 float64 51 / 41 and
    # float32 46 / 24 in the first iteration (the per-row normalisation and scalar exp
    # dominate at small d), d = 16 float32 36 / 32 there.
    _fused_min_features = (("float64", 16), ("float32", 32))

    def __init__(self, n_components: int, n_features: int, shift: np.ndarray, dtype: np.dtype) -> None:
        self.cols = 1 + 2 * n_features
        super().__init__(n_components, n_features, shift, dtype)

    def set_parameters(self, state: MixtureState) -> None:
        d = self.d
        prec = state.precisions_cholesky**2  # (K, d)
        means_c = state.means - self.shift
        log_det = log_det_cholesky(state.precisions_cholesky, "diag", d)
        const = -0.5 * (d * LOG_2PI + np.sum(means_c**2 * prec, axis=1)) + log_det
        self._set_w(const, means_c * prec, -0.5 * prec, _log_weights(state))

    def _features(self, xt: np.ndarray, out: np.ndarray) -> None:
        np.multiply(xt, xt, out=out)


class SphericalKernel(DesignKernel):
    """Spherical covariance: ``φ(x̃) = ‖x̃‖²``, ``W = [c; μ̃λ; −½λ]``; statistic ``Σ r ‖x̃‖²``."""

    _fused_type = "spherical"
    # float64 d = 32 K = 16: 24 / 37 ms, d = 512: 18 / 36, d = 8: 48 / 37 (first
    # iteration). float32 keeps the numpy passes: numpy's vectorised exp on the dense early
    # iterations beats the compiled pass's scalar one (d = 32 K = 16: 27 / 23 ms per 100k rows).
    _fused_min_features = (("float64", 16),)

    def __init__(self, n_components: int, n_features: int, shift: np.ndarray, dtype: np.dtype) -> None:
        self.cols = 2 + n_features
        super().__init__(n_components, n_features, shift, dtype)

    def set_parameters(self, state: MixtureState) -> None:
        d = self.d
        prec = state.precisions_cholesky**2  # (K,)
        means_c = state.means - self.shift
        log_det = log_det_cholesky(state.precisions_cholesky, "spherical", d)
        const = -0.5 * (d * LOG_2PI + np.sum(means_c**2, axis=1) * prec) + log_det
        self._set_w(const, means_c * prec[:, None], -0.5 * prec[:, None], _log_weights(state))

    def _features(self, xt: np.ndarray, out: np.ndarray) -> None:
        np.einsum("ij,ij->j", xt, xt, out=out[0])

    def _second(self, block: np.ndarray) -> np.ndarray:
        return block[0].copy()


class FullOuterKernel(DesignKernel):
    """Full covariance through the upper-triangular outer products ``φ(x̃) = triu(x̃ x̃ᵀ)``.

    The Mahalanobis term is ``x̃ᵀΛx̃ − 2 x̃ᵀΛμ̃ + μ̃ᵀΛμ̃`` with ``x̃ᵀΛx̃ = φ(x̃) · λ`` (λ the
    triangle of Λ with doubled off-diagonal), so the E-step is one ``(K, 1+d+T) @ (1+d+T, B)``
    product and every statistic one ``(1+d+T, B) @ (B, K)`` product over the same ``Z``
    (T = d(d+1)/2). That is half the flops of forming ``P_kᵀx̃`` for every k and touches
    ``T`` instead of ``K·d`` numbers per row: the cheaper form while d is small against K
    (see :func:`full_formulation`).
    """

    def __init__(self, n_components: int, n_features: int, shift: np.ndarray, dtype: np.dtype) -> None:
        d = n_features
        self.iu, self.ju = np.triu_indices(d)
        self.offsets = np.concatenate([[0], np.cumsum(np.arange(d, 0, -1))])
        self.cols = 1 + d + int(self.offsets[-1])
        super().__init__(n_components, n_features, shift, dtype)

    def set_parameters(self, state: MixtureState) -> None:
        d, k = self.d, self.k
        means_c = state.means - self.shift
        doubled = np.where(self.iu == self.ju, 1.0, 2.0)
        lam = np.empty((k, self.cols - 1 - d))
        lin = np.empty((k, d))  # Λμ̃
        for chunk in component_chunks(k, d):  # (·, d, d) precisions a few components at a time
            pc = state.precisions_cholesky[chunk]
            prec = pc @ pc.transpose(0, 2, 1)
            lam[chunk] = prec[:, self.iu, self.ju] * doubled
            lin[chunk] = np.einsum("kij,kj->ki", prec, means_c[chunk])
        quad = np.einsum("ki,ki->k", lin, means_c)
        log_det = log_det_cholesky(state.precisions_cholesky, "full", d)
        const = -0.5 * (d * LOG_2PI + quad) + log_det
        self._set_w(const, lin, -0.5 * lam, _log_weights(state))

    def _features(self, xt: np.ndarray, out: np.ndarray) -> None:
        off = self.offsets
        for i in range(self.d):
            np.multiply(xt[i], xt[i:], out=out[off[i] : off[i + 1]])

    def _second(self, block: np.ndarray) -> np.ndarray:
        tri = block.T  # (K, T)
        out = np.empty((self.k, self.d, self.d))
        out[:, self.iu, self.ju] = tri
        out[:, self.ju, self.iu] = tri
        return out


def _syrk_upper(a_t: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """``acc += a_tᵀ-form product``: upper triangle of ``a_t a_tᵀ`` (``a_t`` is (d, B), Fortran
    order) added into the Fortran-ordered float64 ``acc`` (d, d), in place where possible."""
    if a_t.dtype == np.float64:
        return blas.dsyrk(1.0, a_t, beta=1.0, c=acc, trans=0, lower=0, overwrite_c=1)
    acc += blas.ssyrk(1.0, a_t, trans=0, lower=0)
    return acc


class _RowsKernel(_Accumulating):
    """Kernels that work on the centred rows ``x̃`` (B, d) themselves (full factor form, tied)."""

    _accumulators = ("nk", "sx", "acc")
    _buffers = ("_x", "_y")

    def __init__(self, n_components: int, n_features: int, shift: np.ndarray, dtype: np.dtype) -> None:
        self.d, self.k = n_features, n_components
        self.row_elements = 2 * n_features + n_components
        # Kept in float64: blocks are centred in float64 and then rounded to ``dtype``, so
        # the statistics are about exactly the shift they are labelled with.
        self.shift = np.asarray(shift, dtype=np.float64)
        self.dtype = np.dtype(dtype)
        self.nk = np.zeros(n_components)
        self.sx = np.zeros((n_components, n_features))
        self._x: np.ndarray | None = None

    def prepare(self, x: np.ndarray) -> np.ndarray:
        b = x.shape[0]
        self._x = _rows_buffer(self._x, b, self.d, self.dtype)
        xc = self._x[:b]
        np.subtract(x, self.shift, out=xc)
        return xc

    def accumulate_first(self, ctx: np.ndarray, resp: np.ndarray) -> None:
        """Add the block's ``N_k`` and ``Σ r x̃`` (``resp`` (K, B) carries the row weights)."""
        self.nk += resp.sum(axis=1, dtype=np.float64)
        self.sx += resp @ ctx


class FullFactorKernel(_RowsKernel):
    """Full covariance through the per-component Cholesky products ``y_k = x̃ P_k − μ̃_k P_k``.

    Per component and block one ``(B, d) @ (d, d)`` product for the Mahalanobis term, and
    one rank-B update ``Σ r_nk x̃ x̃ᵀ`` (``syrk``: the upper triangle only, half a GEMM) for
    the statistic; temporaries are ``(B, d)``, never ``(B, K·d)`` or ``(B, d²)``. The cheaper
    form when d is large (see :func:`full_formulation`).
    """

    def __init__(self, n_components: int, n_features: int, shift: np.ndarray, dtype: np.dtype) -> None:
        super().__init__(n_components, n_features, shift, dtype)
        # acc[k].T is Fortran-ordered, what syrk updates in place; statistics() symmetrises
        # acc in place and hands it out (no second (K, d, d) array).
        self.acc = np.zeros((n_components, n_features, n_features))
        self._y: np.ndarray | None = None

    def set_parameters(self, state: MixtureState) -> None:
        d = self.d
        pc = state.precisions_cholesky
        means_c = state.means - self.shift
        self.p = [np.ascontiguousarray(pc[k], dtype=self.dtype) for k in range(self.k)]
        self.b = np.einsum("kd,kde->ke", means_c, pc).astype(self.dtype)
        log_det = log_det_cholesky(pc, "full", d)
        self.const = (-0.5 * d * LOG_2PI + log_det + _log_weights(state)).astype(self.dtype)[:, None]

    def log_prob(self, ctx: np.ndarray) -> np.ndarray:
        b = ctx.shape[0]
        self._y = _rows_buffer(self._y, b, self.d, self.dtype)
        logp = np.empty((self.k, b), dtype=self.dtype)
        self.log_prob_into(ctx, logp, range(self.k), self._y[:b])
        return logp

    def log_prob_into(self, ctx: np.ndarray, logp: np.ndarray, components: range, y: np.ndarray) -> None:
        """Rows ``components`` of the ``(K, B)`` log-densities, written into ``logp``; ``y``
        is a ``(B, d)`` scratch buffer (one per thread when components are split)."""
        for k in components:
            np.matmul(ctx, self.p[k], out=y)
            y -= self.b[k]
            np.einsum("ij,ij->i", y, y, out=logp[k])
            logp[k] *= -0.5
            logp[k] += self.const[k]

    def accumulate(self, ctx: np.ndarray, resp: np.ndarray, weights: np.ndarray | None = None) -> None:
        b = ctx.shape[0]
        self.accumulate_first(ctx, resp)
        self._y = _rows_buffer(self._y, b, self.d, self.dtype)
        self.accumulate_second(ctx, resp, range(self.k), self._y[:b])

    def accumulate_second(self, ctx: np.ndarray, resp: np.ndarray, components: range, a: np.ndarray) -> None:
        """Add ``Σ r_nk x̃ x̃ᵀ`` of ``components`` into their accumulators; ``a`` is a ``(B, d)``
        scratch buffer. Each component's accumulator is touched by one caller only, so
        threads given disjoint component ranges share one ``(K, d, d)`` accumulator."""
        for k in components:
            np.multiply(ctx, np.sqrt(resp[k])[:, None], out=a)
            target = self.acc[k].T
            updated = _syrk_upper(a.T, target)
            if updated is not target and not np.shares_memory(updated, target):
                target[...] = updated

    def statistics(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lower = np.tril_indices(self.d, -1)
        for full in self.acc:
            upper = full.T  # the Fortran view syrk filled: its upper triangle is set
            upper[lower] = full[lower]
        return self.nk.copy(), self.sx.copy(), self.acc  # handed out: call once per E-step


class TiedKernel(_RowsKernel):
    """Tied covariance: ``y = x̃P``; ``‖y − μ̃_kP‖²`` expanded; statistic ``Σ w x̃ x̃ᵀ`` (syrk)."""

    def __init__(self, n_components: int, n_features: int, shift: np.ndarray, dtype: np.dtype) -> None:
        super().__init__(n_components, n_features, shift, dtype)
        self.acc = np.zeros((n_features, n_features), order="F")

    def set_parameters(self, state: MixtureState) -> None:
        d = self.d
        pc = state.precisions_cholesky
        means_c = state.means - self.shift
        self.p = np.ascontiguousarray(pc, dtype=self.dtype)
        mp = means_c @ pc
        self.mp = np.ascontiguousarray(mp, dtype=self.dtype)  # (K, d)
        log_det = log_det_cholesky(pc, "tied", d)
        self.const = (
            -0.5 * (d * LOG_2PI + np.einsum("ij,ij->i", mp, mp)) + log_det + _log_weights(state)
        ).astype(self.dtype)[:, None]

    def log_prob(self, ctx: np.ndarray) -> np.ndarray:
        y = ctx @ self.p
        logp = self.mp @ y.T
        logp -= 0.5 * np.einsum("ij,ij->i", y, y)
        logp += self.const
        return logp

    def accumulate(self, ctx: np.ndarray, resp: np.ndarray, weights: np.ndarray | None = None) -> None:
        self.accumulate_first(ctx, resp)
        a = ctx if weights is None else ctx * np.sqrt(weights)[:, None]
        self.acc = _syrk_upper(a.T, self.acc)

    def statistics(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # The Fortran-ordered acc's upper triangle is its C-ordered transpose's lower one:
        # symmetrised in place and handed out (call once per E-step), no (d, d) temporaries
        # (at d = 2000 they put the fit's peak above scikit-learn's).
        sym = self.acc.T
        mirror_lower(sym)
        return self.nk.copy(), self.sx.copy(), sym


#: ... and its ``W`` and statistic accumulator (each K·d(d+1)/2 numbers, besides the
#: (K, d, d) parameters) stay below this many bytes: beyond, they would push the fit's peak
#: memory above scikit-learn's (measured: d=128 K=128, 90 MiB against 51 MiB).
OUTER_PRODUCT_MAX_BYTES = 1 << 23
#: Full factor form with (K, d, d) statistics above this many bytes: one accumulator whose
#: components the threads split, instead of one accumulator per thread (which would put
#: peak memory above scikit-learn's; d=512 K=16: 133 vs 102 MiB; d=128 K=128: 67 vs 51).
SHARED_ACCUMULATOR_BYTES = 1 << 22
#: Tied covariance with its ``(d, d)`` accumulator above this many bytes (d > 724): one
#: accumulator, the E-step in one thread and BLAS given the threads for the block's ``d × d``
#: products; a second, per-thread accumulator put the fit's peak above scikit-learn's (d =
#: 2000: 223 against 153 MiB, with the in-place statistic and M-step 131). Not lower: at
#: d = 400 under load a two-thread BLAS on the (200 × 400) blocks took 3.8× our two threads.
TIED_SHARED_ACCUMULATOR_BYTES = 1 << 22


def full_formulation(n_components: int, n_features: int) -> str:
    """``"outer"`` or ``"factor"``: the cheaper full-covariance formulation for this shape."""
    d, k = n_features, n_components
    if (
        d <= OUTER_PRODUCT_MAX_FEATURES
        and d * (d + 1) / 2 <= OUTER_PRODUCT_MAX_RATIO * (k + 1) * d
        and 8 * k * d * (d + 1) / 2 <= OUTER_PRODUCT_MAX_BYTES
    ):
        return "outer"
    return "factor"


def shared_accumulator(covariance_type: str, n_components: int, n_features: int) -> bool:
    """Whether the E-step keeps one ``(K, d, d)`` accumulator (large full factor statistics,
    see :data:`SHARED_ACCUMULATOR_BYTES`) instead of one per row chunk in threads: its
    threads then split the components of every block (:class:`FullFactorKernel`'s
    ``log_prob_into`` / ``accumulate_second``), or, for one component, share a
    multi-threaded BLAS."""
    k, d = n_components, n_features
    return (
        covariance_type == "full"
        and full_formulation(k, d) == "factor"
        and 8 * k * d * d > SHARED_ACCUMULATOR_BYTES
    )


def row_flops(covariance_type: str, n_components: int, n_features: int) -> float:
    """Floating-point operations per row of one E-step (its matrix products), to size threads."""
    k, d = n_components, n_features
    if covariance_type == "full":
        if full_formulation(k, d) == "outer":
            return 4.0 * (1 + d + d * (d + 1) // 2) * k  # Wᵀ Z and Z Rᵀ
        return k * (3.0 * d * d + 4.0 * d)  # x̃P_k, syrk, sx
    if covariance_type == "tied":
        return 3.0 * d * d + 4.0 * d * k  # x̃P, syrk, (μP)·y, r·x̃
    return 4.0 * (1 + 2 * d if covariance_type == "diag" else 2 + d) * k


def row_elements(covariance_type: str, n_components: int, n_features: int) -> int:
    """Elements of a kernel's per-row temporaries (what sets the block size), without building it."""
    k, d = n_components, n_features
    if covariance_type == "full" and full_formulation(k, d) == "outer":
        return 1 + d + d * (d + 1) // 2 + k
    if covariance_type in ("full", "tied"):
        return 2 * d + k
    if covariance_type == "diag":
        return 1 + 2 * d + k
    if covariance_type == "spherical":
        return 2 + d + k
    raise ValueError(f"unknown covariance_type {covariance_type!r}")


def min_block_rows(covariance_type: str, n_components: int, n_features: int) -> int:
    """Fewest rows per block: kernels that add a ``d × d`` rank-B update per block (full
    factor form, tied) need ``B`` comparable to ``d`` for it to be compute-, not memory-bound."""
    d = n_features
    if covariance_type == "tied" or (covariance_type == "full" and full_formulation(n_components, d) == "factor"):
        return max(128, d // 2)
    return 128


KernelFactory = Callable[[int, int, np.ndarray, np.dtype], BlockKernel]


def _full_kernel(n_components: int, n_features: int, shift: np.ndarray, dtype: np.dtype) -> BlockKernel:
    if full_formulation(n_components, n_features) == "outer":
        return FullOuterKernel(n_components, n_features, shift, dtype)
    return FullFactorKernel(n_components, n_features, shift, dtype)


#: Kernel factory of each covariance type, ``factory(n_components, n_features, shift, dtype)``.
KERNELS: dict[str, KernelFactory] = {
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
    dtype: np.dtype | type | None = None,
) -> BlockKernel:
    """The block kernel of a covariance type (for full, the cheaper of the two forms).

    Without ``state`` the kernel can only accumulate statistics of given responsibilities;
    with it it also scores blocks. Blocks are centred at ``shift`` (zeros by default) and
    computed in ``dtype`` (float64 by default).
    """
    try:
        factory = KERNELS[covariance_type]
    except KeyError:
        raise ValueError(f"unknown covariance_type {covariance_type!r}") from None
    kernel = factory(
        n_components,
        n_features,
        np.zeros(n_features) if shift is None else np.asarray(shift, dtype=np.float64),
        np.dtype(np.float64) if dtype is None else np.dtype(dtype),
    )
    if state is not None:
        kernel.set_parameters(state)
    return kernel

"""Sufficient statistics of a Gaussian mixture and the blocked E-step that produces them."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from fedgmm.em.kernels import (
    TIED_SHARED_ACCUMULATOR_BYTES,
    BlockKernel,
    FullFactorKernel,
    make_kernel,
    min_block_rows,
    shared_accumulator,
)
from fedgmm.em.kernels import row_elements as kernel_row_elements
from fedgmm.em.kernels import row_flops as kernel_row_flops
from fedgmm.mixture import MixtureState, check_covariance_type, covariance_shape
from fedgmm.types import CovarianceType

#: Target number of elements of the largest per-block temporary (rows × per-row elements):
#: 2**17 float64 numbers (1 MiB) keep a block's temporaries in the CPU caches; measured
#: best for d = 8 … 64 with benchmarks/bench_em.py-style runs (single-thread CPU time).
DEFAULT_BLOCK_ELEMENTS = 1 << 17
#: Fewest rows per block: below it, per-block Python overhead dominates.
MIN_BLOCK_ROWS = 128


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


_NUM_THREADS: int | None = None
_EXECUTORS: dict[int, ThreadPoolExecutor] = {}


def get_num_threads() -> int:
    """Threads the blocked E-step may use: :func:`set_num_threads`, else the CPUs available."""
    if _NUM_THREADS is not None:
        return _NUM_THREADS
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def set_num_threads(n: int | None) -> None:
    """Limit the E-step's threads (``None``: all available CPUs); worker processes set 1."""
    global _NUM_THREADS
    if n is not None and n < 1:
        raise ValueError(f"the number of threads must be >= 1, got {n}.")
    _NUM_THREADS = n


def _executor(threads: int) -> ThreadPoolExecutor:
    if threads not in _EXECUTORS:
        _EXECUTORS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="fedgmm-estep")
    return _EXECUTORS[threads]


#: Fewest matrix-product flops a thread is given (~1 ms of one core): below it the
#: dispatch costs more than it saves.
MIN_FLOPS_PER_THREAD = 2e7

_BLAS: ThreadpoolController | None = None


def _component_threads(covariance_type: str, n_components: int, n_features: int, n_rows: int) -> int:
    """Threads that split each block's components (one shared accumulator, see
    :func:`~fedgmm.em.kernels.shared_accumulator`); 0 when the E-step splits rows instead."""
    if not shared_accumulator(covariance_type, n_components, n_features):
        return 0
    flops = n_rows * kernel_row_flops(covariance_type, n_components, n_features)
    return max(1, min(get_num_threads(), n_components, int(flops // MIN_FLOPS_PER_THREAD)))


def _blas_has_the_threads(covariance_type: str, n_components: int, n_features: int) -> bool:
    """One component with a shared accumulator, or a tied covariance whose ``(d, d)``
    accumulator is above :data:`~fedgmm.em.kernels.TIED_SHARED_ACCUMULATOR_BYTES`: nothing to
    split between our threads without a second accumulator (tied d = 2000: 30 MiB each),
    and the block work is ``d × d`` products a multi-threaded BLAS splits well, so the
    E-step runs in one thread and BLAS gets the threads allowed."""
    if covariance_type == "tied":
        return 8 * n_features * n_features > TIED_SHARED_ACCUMULATOR_BYTES
    return n_components == 1 and shared_accumulator(covariance_type, n_components, n_features)


def _blas_limits(covariance_type: str, n_components: int, n_features: int) -> Any:
    """:func:`_single_threaded_blas`, except where :func:`_blas_has_the_threads`."""
    if _blas_has_the_threads(covariance_type, n_components, n_features):
        # Explicit, not "no limit": the E-step may run inside :func:`linear_algebra_threads`.
        return _controller().limit(limits=get_num_threads(), user_api="blas")
    return _single_threaded_blas()


#: From this many features a ``d × d`` factorisation is big enough (``d³/3`` ≥ 4e7 flops)
#: for a multi-threaded BLAS to pay; below it the M-step and initialisation run in one.
THREADED_LINALG_MIN_FEATURES = 512


def linear_algebra_threads(n_features: int) -> Any:
    """Context for the per-component ``d × d`` linear algebra of a fit (Cholesky factors,
    triangular solves of the M-step and initialisation): one BLAS thread below
    :data:`THREADED_LINALG_MIN_FEATURES`. A multi-threaded BLAS on a small factorisation
    only spins, and on a loaded machine it spins for long (measured, d = 128, K = 128,
    load 5 on 2 cores: 0.2 s per 128 × 128 Cholesky, ~1000× its single-threaded time,
    scikit-learn's fit included). The E-step sets its own limit inside this one."""
    if n_features >= THREADED_LINALG_MIN_FEATURES:
        return _controller().limit(limits=get_num_threads(), user_api="blas")
    return _single_threaded_blas()


def _controller() -> ThreadpoolController:
    global _BLAS
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS


def _single_threaded_blas() -> Any:
    """Context limiting BLAS to one thread: the blocked products are cache-sized, and a
    multi-threaded BLAS on them (or under our own threads) only spins, worst on a loaded
    machine (measured: 20× the CPU time of the single-threaded E-step)."""
    return _controller().limit(limits=1, user_api="blas")


def _thread_bounds(n: int, covariance_type: str, n_components: int, n_features: int) -> np.ndarray:
    """Row bounds of the E-step's threads: as many as the CPUs allow, each with at least
    :data:`MIN_FLOPS_PER_THREAD` of matrix-product work (so large-d shapes split even a
    few hundred rows, and cheap ones keep thousands per thread). One thread where
    :func:`_blas_has_the_threads`."""
    if _blas_has_the_threads(covariance_type, n_components, n_features):
        return np.array([0, n])
    flops = kernel_row_flops(covariance_type, n_components, n_features)
    threads = max(1, min(get_num_threads(), int(n * flops // MIN_FLOPS_PER_THREAD)))
    return np.linspace(0, n, threads + 1).astype(int)


def block_size_for(row_elements: int, block_size: int | None = None, min_rows: int = MIN_BLOCK_ROWS) -> int:
    """Rows per block so that rows × ``row_elements`` stays near :data:`DEFAULT_BLOCK_ELEMENTS`."""
    if block_size is not None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}.")
        return int(block_size)
    return int(max(min_rows, DEFAULT_BLOCK_ELEMENTS // max(1, row_elements)))


def _kernel_block(covariance_type: str, n_components: int, n_features: int, block_size: int | None) -> int:
    return block_size_for(
        kernel_row_elements(covariance_type, n_components, n_features),
        block_size,
        min_block_rows(covariance_type, n_components, n_features),
    )


def iter_blocks(n_samples: int, block: int) -> Iterator[slice]:
    """Consecutive row slices of at most ``block`` rows."""
    for start in range(0, n_samples, block):
        yield slice(start, min(start + block, n_samples))


def _compute_dtype(X: np.ndarray, dtype: np.dtype | type | None) -> np.dtype:
    cdtype = np.dtype(dtype) if dtype is not None else X.dtype
    if cdtype not in (np.dtype(np.float64), np.dtype(np.float32)):
        cdtype = np.dtype(np.float64)
    return cdtype


#: Log-responsibility cut per compute dtype: an entry more than this below its row's
#: maximum gets responsibility 0 instead of ``exp(·)``. Its true value, below e^−45 ≈ 3e−20
#: (float64) or e^−25 ≈ 1e−11 (float32) of the row's largest, is under half an ulp of the
#: row total even summed over 128 components, so ``log p(x)`` is unchanged to the dtype's
#: precision. Two reasons: far-away components would otherwise give subnormal numbers
#: (``exp`` below e^−708 in float64, e^−87 in float32), whose arithmetic is ~100× slower
#: on x86 (it made float32 4× slower than float64); and the exponential, scalar in
#: float64 on CPUs without AVX-512 (~9 ns an entry), is then only evaluated on the
#: entries that matter: after a few iterations of a well-separated fit that is 1 in K.
_LOG_CUT = {np.dtype(np.float32): -25.0, np.dtype(np.float64): -45.0}
#: Above this fraction of entries over the cut, the exponential runs on the whole block.
_DENSE_FRACTION = 0.4


def _exp_above_cut(logp: np.ndarray) -> None:
    """``logp ← exp(logp)`` in place where ``logp`` > the cut, 0 elsewhere (``logp`` ≤ 0)."""
    cut = _LOG_CUT.get(logp.dtype, -45.0)
    mask = logp > cut
    keep = np.count_nonzero(mask)
    if keep > _DENSE_FRACTION * logp.size:
        np.maximum(logp, cut, out=logp)
        np.exp(logp, out=logp)
        np.multiply(logp, mask, out=logp)
        return
    flat = logp.reshape(-1)  # a view: logp is a fresh, contiguous block
    idx = np.flatnonzero(mask)
    values = np.exp(flat[idx])
    flat.fill(0.0)
    flat[idx] = values


def _normalise(logp: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Turn ``logp`` (K, B) into responsibilities in place; return ``log p(x_n)`` (B,).

    Log-sum-exp by the row maximum: rows whose every component has ``-inf`` weight are
    impossible and come out as ``-inf`` with zero responsibilities, never NaN. With
    ``weights`` (B,), each row's responsibilities are multiplied by its weight (in the
    same pass as the normalisation). The reductions run over the first axis: K
    contiguous rows, not B short strided ones.
    """
    mx = logp.max(axis=0)
    finite = np.isfinite(mx)
    all_finite = bool(finite.all())
    if not all_finite:
        mx[~finite] = 0.0
    logp -= mx
    _exp_above_cut(logp)
    total = logp.sum(axis=0)
    if not all_finite:
        total[~finite] = 1.0
    lse = np.log(total)
    lse += mx
    if weights is None:
        np.reciprocal(total, out=total)
    else:
        np.divide(weights, total, out=total)
    logp *= total
    if not all_finite:
        rows = ~finite
        lse[rows] = -np.inf
        logp[:, rows] = 0.0
    return lse


def statistics_from_responsibilities(
    X: np.ndarray,
    resp: np.ndarray,
    covariance_type: CovarianceType,
    *,
    shift: np.ndarray | None = None,
    block_size: int | None = None,
    sample_weight: np.ndarray | None = None,
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
    sample_weight : ndarray of shape (n,), optional
        Non-negative row weights multiplying the responsibilities (1 by default).
    """
    n, d = X.shape
    k = resp.shape[1]
    ref = SufficientStatistics.zeros(k, d, covariance_type, shift).shift
    # Always float64: initial responsibilities are often one-hot at single rows, whose
    # covariance ``Σ r x̃x̃ᵀ/N − μ̃μ̃ᵀ`` is 0 + reg_covar only if the cancellation is exact
    # well below reg_covar (float32 products leave ~1e-7·‖x̃‖², not positive definite).
    kernel = make_kernel(covariance_type, k, d, shift=ref, dtype=np.float64)
    for rows in iter_blocks(n, _kernel_block(covariance_type, k, d, block_size)):
        r = resp[rows].astype(np.float64, copy=False).T
        w = None
        if sample_weight is not None:
            w = np.asarray(sample_weight[rows], dtype=np.float64)
            r = r * w
        kernel.accumulate(kernel.prepare(X[rows]), r, w)
    nk, sx, sxx = kernel.statistics()
    return SufficientStatistics(nk, sx, sxx, n, 0.0, ref, covariance_type)


def _scoring_kernel(
    state: MixtureState, shift: np.ndarray, cdtype: np.dtype
) -> BlockKernel:
    return make_kernel(
        state.covariance_type, state.n_components, state.n_features, state=state, shift=shift, dtype=cdtype
    )


def e_step(
    X: np.ndarray,
    state: MixtureState,
    *,
    shift: np.ndarray | None = None,
    block_size: int | None = None,
    dtype: np.dtype | type | None = None,
    sample_weight: np.ndarray | None = None,
) -> SufficientStatistics:
    """E-step: responsibilities under ``state`` reduced to sufficient statistics.

    Works block by block, so memory is bounded by block × (K·d or d²/2) whatever n is.

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
    sample_weight : ndarray of shape (n,), optional
        Non-negative row weights: every statistic becomes ``Σ_n w_n r_nk (…)`` and the
        log-likelihood ``Σ_n w_n log p(x_n)``, so an integer weight is the same as
        repeating the row and a zero weight the same as dropping it. ``X`` may be a
        memory-mapped array: only one block per thread is ever in memory.

    Returns
    -------
    SufficientStatistics
        With ``log_likelihood = Σ_n w_n log p(x_n | state)`` (``w_n = 1`` by default).
    """
    n, d = X.shape
    if d != state.n_features:
        raise ValueError(f"X has {d} features, but the mixture has {state.n_features}.")
    cdtype = _compute_dtype(X, dtype)
    ref = np.zeros(d) if shift is None else np.asarray(shift, dtype=np.float64)
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        if sample_weight.shape != (n,):
            raise ValueError(f"sample_weight must have shape ({n},), got {sample_weight.shape}.")
    block = _kernel_block(state.covariance_type, state.n_components, d, block_size)
    split = _component_threads(state.covariance_type, state.n_components, d, n)
    bounds = np.array([0, n]) if split else _thread_bounds(n, state.covariance_type, state.n_components, d)
    kernels = _thread_kernels(_scoring_kernel(state, ref, cdtype), len(bounds) - 1)
    with _blas_limits(state.covariance_type, state.n_components, d):
        if split > 1:
            kernel = kernels[0]
            assert isinstance(kernel, FullFactorKernel)
            parts = [_e_step_components(X, kernel, split, block, sample_weight)]
        elif len(kernels) == 1:
            parts = [_e_step_rows(X, 0, n, kernels[0], cdtype, block, sample_weight)]
        else:
            # Statistics add, so row chunks run in threads (numpy and BLAS release the GIL),
            # each on its own fork of one kernel (the parameters exist once), and their
            # accumulators are added in chunk order: the result does not depend on timing.
            futures = [
                _executor(len(kernels)).submit(_e_step_rows, X, lo, hi, kern, cdtype, block, sample_weight)
                for (lo, hi), kern in zip(itertools.pairwise(bounds), kernels, strict=True)
            ]
            parts = [f.result() for f in futures]
    del kernels
    kernel, total = parts[0]
    for other, other_total in parts[1:]:
        kernel.absorb(other)
        total += other_total
    del parts
    nk, sx, sxx = kernel.statistics()
    return SufficientStatistics(nk, sx, sxx, n, total, ref, state.covariance_type)


def _thread_kernels(kernel: BlockKernel, threads: int) -> list[BlockKernel]:
    """``kernel`` and ``threads − 1`` forks of it (shared parameters, own accumulators)."""
    return [kernel] + [kernel.fork() for _ in range(threads - 1)]


def _e_step_rows(
    X: np.ndarray, lo: int, hi: int, kernel: BlockKernel, cdtype: np.dtype, block: int,
    sample_weight: np.ndarray | None = None,
) -> tuple[BlockKernel, float]:
    """One thread's share: rows ``lo:hi`` block by block into ``kernel``'s accumulators;
    returns the kernel and ``Σ w log p`` of the rows."""
    total = 0.0
    cut = _LOG_CUT.get(cdtype, -45.0)
    for rows in iter_blocks(hi - lo, block):
        part = slice(lo + rows.start, lo + rows.stop)
        if kernel.has_fused_step:
            total += kernel.fused_step(X[part], None if sample_weight is None else sample_weight[part], cut)
            continue
        ctx = kernel.prepare(X[part])
        resp = kernel.log_prob(ctx)  # (K, B)
        w = None if sample_weight is None else sample_weight[part]
        total += _normalise_block(resp, w)
        kernel.accumulate(ctx, resp, None if w is None else w.astype(cdtype, copy=False))
    return kernel, total


def _normalise_block(resp: np.ndarray, weights: np.ndarray | None) -> float:
    """Responsibilities of a ``(K, B)`` block in place (times the float64 row ``weights``
    (B,) if given); return the block's ``Σ w log p(x)``."""
    if weights is None:
        return float(np.sum(_normalise(resp), dtype=np.float64))
    lse = _normalise(resp, weights.astype(resp.dtype, copy=False))
    keep = weights > 0  # 0 · (−inf) must count as a dropped row, not NaN
    return float(np.dot(weights[keep], lse[keep]))


def _e_step_components(
    X: np.ndarray, kernel: FullFactorKernel, threads: int, block: int, sample_weight: np.ndarray | None
) -> tuple[BlockKernel, float]:
    """All rows into one kernel, each block's components split between ``threads`` threads:
    they write disjoint rows of the ``(K, B)`` log-densities, then add into disjoint
    components of the one accumulator, each component's in block order, so the result
    does not depend on timing; the normalisation and ``N_k``, ``Σ r x̃`` run between."""
    cuts = np.linspace(0, kernel.k, threads + 1).astype(int)
    shares = [range(lo, hi) for lo, hi in itertools.pairwise(cuts)]
    pool = _executor(threads)
    scratch: list[np.ndarray] = []
    total = 0.0
    for rows in iter_blocks(X.shape[0], block):
        ctx = kernel.prepare(X[rows])
        b = ctx.shape[0]
        if not scratch or scratch[0].shape[0] < b:
            scratch = [np.empty((b, kernel.d), dtype=kernel.dtype) for _ in shares]
        resp = np.empty((kernel.k, b), dtype=kernel.dtype)
        _wait([pool.submit(kernel.log_prob_into, ctx, resp, ks, y[:b]) for ks, y in zip(shares, scratch, strict=True)])
        total += _normalise_block(resp, None if sample_weight is None else sample_weight[rows])
        kernel.accumulate_first(ctx, resp)
        _wait([pool.submit(kernel.accumulate_second, ctx, resp, ks, a[:b]) for ks, a in zip(shares, scratch, strict=True)])
    return kernel, total


def _wait(futures: list[Any]) -> None:
    for f in futures:
        f.result()


def _score_rows(
    X: np.ndarray, lo: int, hi: int, kernel: BlockKernel, block: int,
    log_resp: np.ndarray | None, log_norm: np.ndarray,
) -> None:
    """Fill ``log_norm[lo:hi]`` (and ``log_resp[lo:hi]`` if given), block by block."""
    for rows in iter_blocks(hi - lo, block):
        out = slice(lo + rows.start, lo + rows.stop)
        logp = kernel.log_prob(kernel.prepare(X[out]))
        if log_resp is None:
            log_norm[out] = _normalise(logp)
            continue
        lse = _normalise(logp.copy())
        logp -= np.where(np.isfinite(lse), lse, 0.0).astype(logp.dtype)
        log_resp[out] = logp.T
        log_norm[out] = lse


def _score(
    X: np.ndarray,
    state: MixtureState,
    block_size: int | None,
    dtype: np.dtype | type | None,
    with_resp: bool,
) -> tuple[np.ndarray | None, np.ndarray]:
    n, d = X.shape
    if d != state.n_features:
        raise ValueError(f"X has {d} features, but the mixture has {state.n_features}.")
    cdtype = _compute_dtype(X, dtype)
    shift = state.means.mean(axis=0)
    block = _kernel_block(state.covariance_type, state.n_components, d, block_size)
    log_resp = np.empty((n, state.n_components), dtype=np.float64) if with_resp else None
    log_norm = np.empty(n, dtype=np.float64)
    bounds = _thread_bounds(n, state.covariance_type, state.n_components, d)
    kernels = _thread_kernels(_scoring_kernel(state, shift, cdtype), len(bounds) - 1)
    with _blas_limits(state.covariance_type, state.n_components, d):
        if len(kernels) == 1:
            _score_rows(X, 0, n, kernels[0], block, log_resp, log_norm)
        else:
            futures = [
                _executor(len(kernels)).submit(_score_rows, X, lo, hi, kern, block, log_resp, log_norm)
                for (lo, hi), kern in zip(itertools.pairwise(bounds), kernels, strict=True)
            ]
            for f in futures:
                f.result()
    return log_resp, log_norm


def score_samples(
    X: np.ndarray, state: MixtureState, *, block_size: int | None = None, dtype: np.dtype | type | None = None
) -> np.ndarray:
    """Log-density of each row, ``(n,)``, computed block by block."""
    return _score(X, state, block_size, dtype, with_resp=False)[1]


def log_responsibilities(
    X: np.ndarray, state: MixtureState, *, block_size: int | None = None, dtype: np.dtype | type | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Log responsibilities ``(n, K)`` and per-row log-density ``(n,)``."""
    log_resp, log_norm = _score(X, state, block_size, dtype, with_resp=True)
    assert log_resp is not None
    return log_resp, log_norm

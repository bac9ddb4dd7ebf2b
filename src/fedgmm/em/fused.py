"""Compiled one-pass E-step blocks for diagonal and spherical covariance (numba, optional).

Why hand-written loops: with numpy the block work of these memory-bound types is four
passes (centre into the design, ``Wᵀ Z``, the normalisation, ``Z Rᵀ``), each over
``(K, B)`` or ``(cols, B)`` arrays, and the statistics product is dense although after a
few iterations a row has ~1 responsibility above the cut of
:data:`fedgmm.em.stats._LOG_CUT`. A compiled loop does the centring, the ``K``
log-densities, the normalisation and the statistics of one row while it is in registers,
and adds a row's statistics only for its components above the cut. Measured, d = 32,
K = 16, one thread, CPU ms per 100k rows, compiled against numpy passes: diag float64
19 / 31 once ~1 component per row is kept, 33 / 38 in the first iterations (~16 kept);
diag float32 20 / 26 and 25 / 25; spherical float64 16 / 26 and 33 / 34. Spherical
float32 stays on the numpy passes (27 / 23 in the first iterations: numpy's ``exp`` is
vectorised there, the compiled one scalar), and so do d < 16 (float64) and d < 32 (diag
float32), where the per-row normalisation dominates (see the kernels' ``_fused_min_features``).
And an E-step whose rows keep most of their K responsibilities (the first iterations
from a broad initialisation) goes back to the numpy passes after its first such block:
there every entry costs a scalar ``exp`` and a ``2d`` update, against the dense products'
rate (first E-step, one thread: d = 32 K = 128, 125 of 128 kept, 61 / 36 ms; d = 128
K = 128, 31 of 128 kept, 23 / 40 ms).

The cut is the same as the numpy path's: a component ``q`` of row ``n`` gets
responsibility 0 when ``log p_q(x_n) − max_q' log p_q'(x_n) ≤ cut``, else
``exp(·) / Σ exp(·)``. So the responsibilities are the numpy path's, and skipping a zero
in ``Σ r φ(x̃)`` changes no sum; what differs is only the order of the floating-point
additions (a row's statistics go straight into the float64 accumulators, in float64).

numba is not a dependency of fedgmm (it comes with the ``studies`` extra, through aeon):
:func:`block_step` imports it on first use and returns ``None`` without it, and the
kernels then run their numpy passes. ``ENABLED = False`` forces the numpy passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

#: Use the compiled blocks when numba can be imported (tests set it False to compare).
ENABLED = True

#: ``step(x, shift, const, linear_t, quad_t, cut, weights, acc) -> (Σ w log p, kept)`` of one
#: block, ``kept`` the number of responsibilities above the cut.
BlockStep = Callable[..., float]

_STEPS: dict[str, BlockStep] | None = None
#: Rows scored together by the diagonal step (register blocking of its log-densities).
ROWS = 4


def block_step(covariance_type: str) -> BlockStep | None:
    """The compiled block step of ``"diag"`` or ``"spherical"``, or ``None`` (no numba,
    :data:`ENABLED` off, or another covariance type)."""
    global _STEPS
    if not ENABLED:
        return None
    if _STEPS is None:
        try:
            import numba
        except ImportError:
            _STEPS = {}
        else:
            _STEPS = _compile(numba)
    return _STEPS.get(covariance_type)


def _compile(numba: Any) -> dict[str, BlockStep]:
    global _normalise_row
    # reassoc/contract let LLVM vectorise the sums over components and use FMAs; no
    # "ninf"/"nnan": -inf log-weights (impossible components) must compare correctly.
    jit = numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
    # The steps call the module global, which numba resolves when it compiles them (on
    # their first call): replaced here by its compiled version.
    _normalise_row = jit(_normalise_row)
    return {"diag": jit(_diag_step), "spherical": jit(_spherical_step)}


def _normalise_row(lp: np.ndarray, keep: np.ndarray, cut: float) -> tuple[int, float, float]:
    """Row ``lp`` (K,) of log-densities → ``exp(lp − max)`` at the ``m`` components above the
    cut, whose indices go to ``keep[:m]``; returns ``(m, max, Σ exp)``. The exponential only
    runs on the kept entries: a branch-free loop would evaluate all K (scalar ``exp``)."""
    k = lp.shape[0]
    mx = lp[0]
    for q in range(1, k):
        mx = max(mx, lp[q])
    if mx == -np.inf:
        return 0, -np.inf, 0.0
    m = 0
    for q in range(k):  # branch-free compaction: the test is unpredictable in early iterations
        keep[m] = q
        m += lp[q] - mx > cut
    tot = 0.0
    for t in range(m):
        q = keep[t]
        v = math.exp(lp[q] - mx)
        lp[q] = v
        tot += v
    return m, float(mx), tot


def _diag_step(
    x: np.ndarray,
    shift: np.ndarray,
    const: np.ndarray,
    linear_t: np.ndarray,
    quad_t: np.ndarray,
    cut: float,
    weights: np.ndarray,
    acc: np.ndarray,
) -> tuple[float, int]:
    """One block of raw rows ``x`` (B, d) under a diagonal mixture, into ``acc`` (K, 1 + 2d).

    ``log p_q(x̃) = const_q + Σ_j x̃_j (linear_t[j, q] + quad_t[j, q] x̃_j)`` with
    ``x̃ = x − shift`` in the compute dtype of ``linear_t`` (d, K) and ``quad_t`` (d, K);
    a row of ``acc`` is a component's ``N_k``, ``Σ r x̃`` (d) and ``Σ r x̃²`` (d) (the
    transpose of :class:`~fedgmm.em.kernels.DiagKernel`'s accumulator: a kept entry's
    updates are contiguous). ``weights`` (B,) or empty. Rows go ``ROWS`` at a time
    through the log-densities, so that every loaded ``linear_t``/``quad_t`` entry serves
    several rows. Returns the block's ``Σ w log p(x)`` and its number of kept entries.
    """
    n, d = x.shape
    k = const.shape[0]
    rows = ROWS
    xt = np.empty((rows, d), dtype=linear_t.dtype)
    lp = np.empty((rows, k), dtype=linear_t.dtype)
    keep = np.empty(k, dtype=np.int64)
    weighted = weights.shape[0] > 0
    ll = 0.0
    kept = 0
    for i0 in range(0, n, rows):
        nr = min(rows, n - i0)
        for r in range(nr):
            for j in range(d):
                xt[r, j] = x[i0 + r, j] - shift[j]
            for q in range(k):
                lp[r, q] = const[q]
        for j in range(d):
            for r in range(nr):
                v = xt[r, j]
                for q in range(k):
                    lp[r, q] += v * (linear_t[j, q] + quad_t[j, q] * v)
        for r in range(nr):
            w = weights[i0 + r] if weighted else 1.0
            row = lp[r]
            m, mx, tot = _normalise_row(row, keep, cut)
            kept += m
            if w == 0.0:
                continue
            if m == 0:
                ll += -np.inf
                continue
            ll += w * (mx + math.log(tot))
            scale = w / tot
            for t in range(m):
                q = keep[t]
                p = row[q] * scale
                acc[q, 0] += p
                for j in range(d):
                    u = p * xt[r, j]
                    acc[q, 1 + j] += u
                    acc[q, 1 + d + j] += u * xt[r, j]
    return ll, kept


def _spherical_step(
    x: np.ndarray,
    shift: np.ndarray,
    const: np.ndarray,
    linear_t: np.ndarray,
    quad_t: np.ndarray,
    cut: float,
    weights: np.ndarray,
    acc: np.ndarray,
) -> tuple[float, int]:
    """As :func:`_diag_step` for a spherical mixture: ``quad_t`` is (1, K), the term
    ``quad_t[0, q] ‖x̃‖²``, and ``acc`` (K, 2 + d) holds ``N_k``, ``Σ r x̃``, ``Σ r ‖x̃‖²``."""
    n, d = x.shape
    k = const.shape[0]
    rows = ROWS
    xt = np.empty((rows, d), dtype=linear_t.dtype)
    lp = np.empty((rows, k), dtype=linear_t.dtype)
    sq = np.empty(rows)  # float64 in either compute dtype
    keep = np.empty(k, dtype=np.int64)
    weighted = weights.shape[0] > 0
    ll = 0.0
    kept = 0
    for i0 in range(0, n, rows):
        nr = min(rows, n - i0)
        for r in range(nr):
            s = 0.0
            for j in range(d):
                xt[r, j] = x[i0 + r, j] - shift[j]
                s += xt[r, j] * xt[r, j]
            sq[r] = s
            for q in range(k):
                lp[r, q] = const[q] + quad_t[0, q] * s
        for j in range(d):
            for r in range(nr):
                v = xt[r, j]
                for q in range(k):
                    lp[r, q] += v * linear_t[j, q]
        for r in range(nr):
            w = weights[i0 + r] if weighted else 1.0
            row = lp[r]
            m, mx, tot = _normalise_row(row, keep, cut)
            kept += m
            if w == 0.0:
                continue
            if m == 0:
                ll += -np.inf
                continue
            ll += w * (mx + math.log(tot))
            scale = w / tot
            for t in range(m):
                q = keep[t]
                p = row[q] * scale
                acc[q, 0] += p
                for j in range(d):
                    acc[q, 1 + j] += p * xt[r, j]
                acc[q, 1 + d] += p * sq[r]
    return ll, kept

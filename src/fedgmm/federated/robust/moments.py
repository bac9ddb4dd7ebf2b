"""Federated preprocessing: checks of the clients' moments (count, Σx, Σxxᵀ) and their capped sum."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedgmm.federated.robust.counts import (
    DEFAULT_MAX_CLIENT_WEIGHT,
    DEFAULT_MAX_COUNT_RATIO,
    cap_counts,
)
from fedgmm.federated.robust.mixtures import DEFAULT_LOCATION_THRESHOLD, DEFAULT_VARIANCE_LOG_RATIO
from fedgmm.federated.robust.records import (
    MIN_CLIENTS_TO_COMPARE,
    ClientDecision,
    client_id_list,
    merge_decisions,
    robust_center_scale,
)

#: A client whose total variance is below this fraction of the median client's is rejected
#: (rows that are all but identical, or sums divided by a forged count).
DEFAULT_MIN_VARIANCE_RATIO = 1e-6


@dataclass(frozen=True)
class CombinedMoments:
    """The robust pooled moments of the preprocessing round.

    Attributes
    ----------
    count : int
        Rows after the caps.
    total : ndarray of shape (d,) or None
        ``Σ x`` of the kept (possibly scaled-down) clients.
    outer : ndarray of shape (d, d) or None
        ``Σ x xᵀ``.
    kept : tuple of int
        Positions (input order) of the clients summed.
    decisions : tuple of ClientDecision
    """

    count: int
    total: np.ndarray | None
    outer: np.ndarray | None
    kept: tuple[int, ...]
    decisions: tuple[ClientDecision, ...]


def combine_moments(
    counts: Sequence[int],
    totals: Sequence[np.ndarray],
    outers: Sequence[np.ndarray],
    client_ids: Sequence[int] | None = None,
    *,
    max_count_ratio: float | None = DEFAULT_MAX_COUNT_RATIO,
    max_client_weight: float | None = DEFAULT_MAX_CLIENT_WEIGHT,
    location_threshold: float = DEFAULT_LOCATION_THRESHOLD,
    variance_log_ratio: float = DEFAULT_VARIANCE_LOG_RATIO,
    min_variance_ratio: float = DEFAULT_MIN_VARIANCE_RATIO,
) -> CombinedMoments:
    """Check each client's moments against the others, cap the counts, and sum.

    Rejected (with the reason): non-finite or mis-shaped moments, a negative implied
    variance, and — with at least 3 clients — an implied mean further than
    ``location_threshold`` robust scales from the clients' median (per feature), a
    feature variance above ``e^variance_log_ratio`` × the median, or a total variance
    below ``min_variance_ratio`` × the median client's, or second moments ``Σxxᵀ/n`` below
    ``min_variance_ratio`` × the median in *every* feature (a forged count that shrinks the
    implied moments, as ``ForgedMoments(X, 1e12)``). Counts are then capped
    as in :func:`~fedgmm.federated.robust.cap_counts`; a capped client's sums are scaled
    by the same factor, so its implied mean and covariance are kept.

    When nothing is flagged the sums are ``np.sum(list, axis=0)`` of the inputs, as the
    plain recipe computes them.
    """
    n = len(counts)
    if not len(totals) == len(outers) == n:
        raise ValueError("counts, totals and outers must have one entry per client.")
    ids = client_id_list(n, client_ids)
    reasons: list[str | None] = [None] * n
    means: list[np.ndarray | None] = [None] * n
    variances: list[np.ndarray | None] = [None] * n
    d = np.asarray(totals[0]).shape[0] if n else 0
    for i in range(n):
        c = float(counts[i])
        t = np.asarray(totals[i], dtype=np.float64)
        o = np.asarray(outers[i], dtype=np.float64)
        if t.shape != (d,) or o.shape != (d, d):
            reasons[i] = f"moments of shapes {t.shape}, {o.shape}; expected ({d},), ({d}, {d})"
            continue
        if not (c >= 1 and math.isfinite(c) and np.all(np.isfinite(t)) and np.all(np.isfinite(o))):
            reasons[i] = "moments are not finite or the count is below 1"
            continue
        with np.errstate(all="ignore"):
            mean = t / c
            var = np.diag(o) / c - mean**2
        scale = np.maximum(np.diag(o) / c, 1e-300)
        if not np.all(np.isfinite(var)) or np.any(var < -1e-6 * scale):
            reasons[i] = "moments imply a negative variance (they cannot come from real rows)"
            continue
        means[i], variances[i] = mean, np.maximum(var, 0.0)
    live = [i for i in range(n) if reasons[i] is None]
    if len(live) >= MIN_CLIENTS_TO_COMPARE:
        m = np.array([means[i] for i in live])
        v = np.array([variances[i] for i in live])
        loc, loc_spread = robust_center_scale(m)
        var_med, _ = robust_center_scale(v)
        scale_j = np.sqrt(np.maximum(var_med, 0.0) + loc_spread**2)
        scale_j = np.maximum(scale_j, max(1e-12 * float(scale_j.max(initial=0.0)), 1e-300))
        var_limit = np.maximum(var_med, 1e-12 * float(np.max(var_med, initial=0.0)) + 1e-300) * math.exp(variance_log_ratio)
        traces = v.sum(axis=1)
        trace_med = float(np.median(traces))
        raw = np.array([np.diag(np.asarray(outers[i], dtype=np.float64)) / float(counts[i]) for i in live])
        raw_med = np.median(raw, axis=0)
        with np.errstate(all="ignore"):
            raw_ratio = np.max(np.where(raw_med > 0, raw / np.where(raw_med > 0, raw_med, 1.0), 0.0), axis=1)
        for j, i in enumerate(live):
            with np.errstate(all="ignore"):
                z = float(np.max(np.abs(m[j] - loc) / scale_j))
            if not math.isfinite(z) or z > location_threshold:
                reasons[i] = f"implied mean lies {z:.3g} robust scales from the federation's median (threshold {location_threshold:g})"
            elif np.any(v[j] > var_limit):
                reasons[i] = f"an implied feature variance is above e^{variance_log_ratio:.3g} x the federation's median"
            elif np.any(raw_med > 0) and raw_ratio[j] < min_variance_ratio:
                reasons[i] = (f"implied second moments Σxxᵀ/n are below {min_variance_ratio:g} x the federation's "
                              "median in every feature (a forged count?)")
            elif trace_med > 0 and traces[j] < min_variance_ratio * trace_med:
                reasons[i] = (f"implied total variance {traces[j]:.3g} is below {min_variance_ratio:g} x the median "
                              f"client's {trace_med:.3g} (a forged count?)")
    rejected = [ClientDecision(c, "rejected", r) for c, r in zip(ids, reasons, strict=True) if r is not None]
    kept = [i for i in range(n) if reasons[i] is None]
    if not kept:
        return CombinedMoments(0, None, None, (), merge_decisions(ids, rejected))
    caps = cap_counts([counts[i] for i in kept], [ids[i] for i in kept],
                      max_ratio=max_count_ratio, max_client_weight=max_client_weight)
    factors = caps.factors
    if np.all(factors == 1.0):
        count = int(sum(int(counts[i]) for i in kept))
        total = np.sum([totals[i] for i in kept], axis=0)
        outer = np.sum([outers[i] for i in kept], axis=0)
    else:
        count = max(1, round(float(caps.counts.sum())))
        total = np.sum([np.asarray(totals[i]) * f for i, f in zip(kept, factors, strict=True)], axis=0)
        outer = np.sum([np.asarray(outers[i]) * f for i, f in zip(kept, factors, strict=True)], axis=0)
    return CombinedMoments(count, total, outer, tuple(kept), merge_decisions(ids, rejected, caps.decisions))

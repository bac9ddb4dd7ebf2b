"""Federated EM: per-client checks of E-step statistics and their robust, bounded-influence sum."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedgmm.em.stats import SufficientStatistics
from fedgmm.federated.robust.counts import (
    DEFAULT_MAX_CLIENT_WEIGHT,
    DEFAULT_MAX_COUNT_RATIO,
    _share_cap,
    cap_counts,
)
from fedgmm.federated.robust.mixtures import (
    DEFAULT_LOCATION_THRESHOLD,
    DEFAULT_VARIANCE_LOG_RATIO,
    ScreenResult,
)
from fedgmm.federated.robust.records import (
    MIN_CLIENTS_TO_COMPARE,
    ClientDecision,
    client_id_list,
    merge_decisions,
    robust_center_scale,
)
from fedgmm.mixture import LOG_2PI, MixtureState, covariance_shape, log_det_cholesky

#: Relative tolerance of the log-likelihood consistency check (covers float32 E-steps).
DEFAULT_LL_RTOL = 1e-5
#: Absolute tolerance of the log-likelihood consistency check, per row.
DEFAULT_LL_ATOL = 1e-3
#: Tolerance of the positive-semi-definiteness of implied covariances, relative to the second moment.
PSD_RTOL = 1e-7
#: Components with ``N_k`` below this fraction of the client's rows only get the Cauchy–Schwarz check.
MIN_COMPONENT_SHARE_FOR_PSD = 1e-8


def expected_complete_loglik(stats: SufficientStatistics, state: MixtureState) -> tuple[float, float]:
    """``Q = Σ_k Σ_n r_nk log(π_k N(x_n | μ_k, Σ_k))`` from the statistics alone, and its magnitude scale.

    For the exact posterior responsibilities under ``state``, the client's log-likelihood
    is ``Q + H`` with ``0 <= H <= N log K`` (the responsibilities' entropy), so honest
    statistics satisfy ``Q <= log-likelihood <= Q + N log K``.

    Returns
    -------
    (float, float)
        ``Q`` and the sum of the absolute values of its terms (for a rounding tolerance).
    """
    ctype = stats.covariance_type
    d = stats.n_features
    nk, sx, sxx = stats.nk, stats.sx, stats.sxx
    mu = np.asarray(state.means) - stats.shift
    prec = state.precisions
    logdet = log_det_cholesky(state.precisions_cholesky, ctype, d)
    log_w = np.log(np.maximum(np.asarray(state.weights), 1e-300))
    with np.errstate(all="ignore"):
        if ctype == "full":
            t1 = np.einsum("kij,kij->k", prec, sxx)
            t2 = 2.0 * np.einsum("ki,kij,kj->k", mu, prec, sx)
            t3 = nk * np.einsum("ki,kij,kj->k", mu, prec, mu)
        elif ctype == "tied":
            t1 = np.atleast_1d(np.sum(prec * sxx))
            t2 = 2.0 * np.einsum("ki,ij,kj->k", mu, prec, sx)
            t3 = nk * np.einsum("ki,ij,kj->k", mu, prec, mu)
        elif ctype == "diag":
            t1 = np.sum(prec * sxx, axis=1)
            t2 = 2.0 * np.sum(prec * mu * sx, axis=1)
            t3 = nk * np.sum(prec * mu**2, axis=1)
        else:
            t1 = prec * sxx
            t2 = 2.0 * prec * np.sum(mu * sx, axis=1)
            t3 = nk * prec * np.sum(mu**2, axis=1)
        const = nk * (log_w + logdet - 0.5 * d * LOG_2PI)
        q = float(np.sum(const) - 0.5 * (np.sum(t1) - np.sum(t2) + np.sum(t3)))
        scale = float(np.sum(np.abs(const)) + 0.5 * (np.sum(np.abs(t1)) + np.sum(np.abs(t2)) + np.sum(np.abs(t3))))
    return q, scale


def _second_moment_diagonal(stats: SufficientStatistics) -> np.ndarray:
    """Diagonal of the second moments, ``(K, d)`` (tied: ``(1, d)``; spherical: ``(K, 1)``)."""
    sxx = stats.sxx
    if stats.covariance_type == "full":
        return np.einsum("kii->ki", sxx)
    if stats.covariance_type == "tied":
        return np.diag(sxx)[None, :]
    if stats.covariance_type == "diag":
        return sxx
    return sxx[:, None]


def _moment_problem(stats: SufficientStatistics) -> str | None:
    """Why the statistics cannot come from real rows (Cauchy–Schwarz, PSD), or None."""
    nk, sx, sxx = stats.nk, stats.sx, stats.sxx
    ctype = stats.covariance_type
    n = float(nk.sum())
    with np.errstate(all="ignore"):
        sq = sx**2
        if ctype == "full":
            lhs, rhs = np.einsum("kii->k", sxx) * nk, sq.sum(axis=1)
        elif ctype == "diag":
            lhs, rhs = sxx * nk[:, None], sq
        elif ctype == "spherical":
            lhs, rhs = sxx * nk, sq.sum(axis=1)
        else:
            live = nk > 0
            lhs = np.atleast_1d(np.trace(sxx))
            rhs = np.atleast_1d(np.sum(sq[live].sum(axis=1) / nk[live]))
            if np.any(~live & np.any(sx != 0, axis=1)):
                return "a component with no responsibility has a non-zero Σ r x"
        bad = ~(rhs <= lhs * (1 + 1e-9) + 1e-300)
    if np.any(bad):
        return "Σ r x and Σ r x xᵀ violate the Cauchy–Schwarz inequality (they cannot come from real rows)"
    if ctype in ("diag", "spherical"):
        return None
    with np.errstate(all="ignore"):
        if ctype == "full":
            live = nk > max(MIN_COMPONENT_SHARE_FOR_PSD * n, 1e-300)
            if not live.any():
                return None
            m = sx[live] / nk[live, None]
            cov = sxx[live] / nk[live, None, None] - m[:, :, None] * m[:, None, :]
            ref = np.max(np.einsum("kii->ki", sxx[live]) / nk[live, None], axis=1)
        else:
            live = nk > 0
            cov = (sxx - (sx[live].T / nk[live]) @ sx[live]) / max(n, 1e-300)
            cov, ref = cov[None], np.atleast_1d(np.max(np.diag(sxx)) / max(n, 1e-300))
        cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
        if not np.all(np.isfinite(cov)):
            return "implied covariances are not finite"
        low = np.linalg.eigvalsh(cov)[:, 0]
    if np.any(low < -PSD_RTOL * np.maximum(ref, 1e-300)):
        return (f"implied covariance has eigenvalue {float(low.min()):.3g} < 0 "
                "(the second moments cannot come from real rows)")
    return None


def _pooled(stats: SufficientStatistics) -> tuple[np.ndarray, np.ndarray]:
    """A client's implied data mean ``(d,)`` and per-feature variance ``(d,)``."""
    n = max(float(stats.nk.sum()), 1e-300)
    d = stats.n_features
    with np.errstate(all="ignore"):
        centred = stats.sx.sum(axis=0) / n
        second = _second_moment_diagonal(stats).sum(axis=0) / n
        if stats.covariance_type == "spherical":
            second = np.full(d, float(second[0]) / d)
            var = np.full(d, float(second[0] - np.sum(centred**2) / d))
        else:
            var = second - centred**2
    return stats.shift + centred, var


def check_statistics(
    stats: Sequence[SufficientStatistics],
    client_ids: Sequence[int] | None = None,
    *,
    state: MixtureState | None = None,
    location_threshold: float = DEFAULT_LOCATION_THRESHOLD,
    variance_log_ratio: float = DEFAULT_VARIANCE_LOG_RATIO,
    ll_rtol: float = DEFAULT_LL_RTOL,
    ll_atol: float = DEFAULT_LL_ATOL,
) -> ScreenResult:
    """Reject E-step statistics that cannot come from real rows or are implausible next to the others.

    Exact checks (an honest client always passes them, up to rounding):

    - same covariance type, shapes and reference point as the broadcast (``state``, else
      the first contribution); every number finite; ``N_k >= 0`` summing to ``n_samples``;
    - per component, Cauchy–Schwarz ``‖Σ r x̃‖² <= N_k tr(Σ r x̃ x̃ᵀ)`` and (full, tied)
      positive semi-definite implied covariances ``Σ r x̃ x̃ᵀ / N_k − m mᵀ``;
    - with the broadcast ``state``: the log-likelihood between ``Q`` and ``Q + N log K``
      (see :func:`expected_complete_loglik`), up to ``ll_rtol`` of ``Q``'s terms plus
      ``ll_atol`` per row. This catches forged log-likelihoods (1e308, ±1e6) and forged
      means or second moments that were not matched by a recomputed log-likelihood.

    Relative checks (at least 3 clients): every implied component mean within
    ``location_threshold`` robust scales of the clients' median mean (as
    :func:`~fedgmm.federated.robust.check_mixtures`), and no implied feature variance
    above ``e^variance_log_ratio`` × the clients' median.

    Returns
    -------
    ScreenResult
    """
    n = len(stats)
    ids = client_id_list(n, client_ids)
    reasons: list[str | None] = [None] * n
    ref = stats[0] if n else None
    ctype = state.covariance_type if state is not None else (ref.covariance_type if ref is not None else "full")
    k = state.n_components if state is not None else (ref.n_components if ref is not None else 0)
    d = state.n_features if state is not None else (ref.n_features if ref is not None else 0)
    shift = ref.shift if ref is not None else None
    for i, s in enumerate(stats):
        expected = covariance_shape(ctype, k, d)
        if s.covariance_type != ctype or s.nk.shape != (k,) or s.sx.shape != (k, d) or s.sxx.shape != expected:
            reasons[i] = f"statistics of type {s.covariance_type!r}, shapes {s.nk.shape}, {s.sx.shape}, {s.sxx.shape}"
        elif shift is not None and not np.array_equal(s.shift, shift):
            reasons[i] = "statistics about another reference point"
        elif not (np.all(np.isfinite(s.nk)) and np.all(np.isfinite(s.sx)) and np.all(np.isfinite(s.sxx))
                  and math.isfinite(s.log_likelihood)):
            reasons[i] = "statistics are not finite"
        elif np.any(s.nk < 0) or not math.isclose(float(s.nk.sum()), s.n_samples, rel_tol=1e-6, abs_tol=1e-6):
            reasons[i] = f"responsibility counts sum to {float(s.nk.sum()):.6g}, not n_samples={s.n_samples}"
        else:
            reasons[i] = _moment_problem(s)
        if reasons[i] is None and state is not None:
            q, scale = expected_complete_loglik(s, state)
            total_r = float(s.nk.sum())
            tol = ll_rtol * scale + ll_atol * total_r
            upper = q + total_r * math.log(max(k, 1))
            ll = s.log_likelihood
            if not (math.isfinite(q) and q - tol <= ll <= upper + tol):
                reasons[i] = (f"log-likelihood {ll:.6g} is outside [{q:.6g}, {upper:.6g}], the range the "
                              "statistics imply under the broadcast model")
    live = [i for i in range(n) if reasons[i] is None]
    if len(live) >= MIN_CLIENTS_TO_COMPARE:
        pooled = [_pooled(stats[i]) for i in live]
        means = np.array([m for m, _ in pooled])
        variances = np.array([v for _, v in pooled])
        loc, loc_spread = robust_center_scale(means)
        var_med, _ = robust_center_scale(variances)
        scale_j = np.sqrt(np.maximum(var_med, 0.0) + loc_spread**2)
        scale_j = np.maximum(scale_j, max(1e-12 * float(scale_j.max(initial=0.0)), 1e-300))
        var_limit = np.maximum(var_med, 1e-12 * float(np.max(var_med, initial=0.0)) + 1e-300) * math.exp(variance_log_ratio)
        for j, i in enumerate(live):
            s = stats[i]
            nz = s.nk > 0
            with np.errstate(all="ignore"):
                comp = s.shift + s.sx[nz] / s.nk[nz, None]
                z = float(np.max(np.abs(comp - loc) / scale_j, initial=0.0))
            if not math.isfinite(z) or z > location_threshold:
                reasons[i] = (f"an implied component mean lies {z:.3g} robust scales from the federation's median "
                              f"(threshold {location_threshold:g})")
            elif np.any(~(variances[j] <= var_limit)):
                worst = int(np.nanargmax(variances[j] / var_limit))
                reasons[i] = (f"implied variance {variances[j][worst]:.3g} of feature {worst} is above "
                              f"e^{variance_log_ratio:.3g} x the federation's median")
    decisions = [ClientDecision(c, "rejected", r) for c, r in zip(ids, reasons, strict=True) if r is not None]
    return ScreenResult(tuple(i for i in range(n) if reasons[i] is None), merge_decisions(ids, decisions))


def scale_statistics(stats: SufficientStatistics, factor: float) -> SufficientStatistics:
    """Statistics of ``factor ×`` the rows (same implied means and covariances)."""
    return SufficientStatistics(
        nk=stats.nk * factor, sx=stats.sx * factor, sxx=stats.sxx * factor,
        n_samples=max(1, round(stats.n_samples * factor)), log_likelihood=stats.log_likelihood * factor,
        shift=stats.shift, covariance_type=stats.covariance_type,
    )


def _cap_component_shares(
    stats: list[SufficientStatistics], ids: list[int], share: float
) -> tuple[list[SufficientStatistics], list[ClientDecision]]:
    """Scale down any client's component-k statistics above ``share`` of the federation's ``N_k``."""
    if stats[0].covariance_type == "tied":
        raise ValueError("max_component_share needs per-component second moments; tied statistics have none.")
    nk = np.array([s.nk for s in stats])  # (C, K)
    factors = np.ones_like(nk)
    decisions = []
    for k in range(nk.shape[1]):
        col = nk[:, k]
        if col.sum() <= 0 or np.count_nonzero(col) < 2:
            continue
        capped = _share_cap(col + 1e-300, share)
        over = capped < col / col.sum() * (1 - 1e-12)
        if over.any():
            scale = float(np.min(col[~over] / capped[~over])) if (~over).any() else float(col.min() / capped.min())
            factors[over, k] = np.minimum(1.0, capped[over] * scale / col[over])
    out = []
    for c, s in enumerate(stats):
        f = factors[c]
        if np.all(f == 1.0):
            out.append(s)
            continue
        decisions.append(ClientDecision(
            ids[c], "down-weighted",
            f"share of N_k above max_component_share={share:g} for components {np.flatnonzero(f < 1).tolist()}",
        ))
        sxx = s.sxx * (f[:, None, None] if s.covariance_type == "full" else f[:, None] if s.covariance_type == "diag" else f)
        out.append(SufficientStatistics(
            nk=s.nk * f, sx=s.sx * f[:, None], sxx=sxx, n_samples=s.n_samples,
            log_likelihood=s.log_likelihood, shift=s.shift, covariance_type=s.covariance_type,
        ))
    return out, decisions


@dataclass(frozen=True)
class CombinedStatistics:
    """The robust sum of a round's statistics.

    Attributes
    ----------
    total : SufficientStatistics or None
        Sum of the kept (possibly scaled-down) contributions; None when none is left.
    kept : tuple of int
        Positions (input order) of the contributions summed.
    decisions : tuple of ClientDecision
        One per input contribution.
    """

    total: SufficientStatistics | None
    kept: tuple[int, ...]
    decisions: tuple[ClientDecision, ...]

    @property
    def flagged(self) -> bool:
        """Whether any client was not kept as sent."""
        return any(d.action != "kept" for d in self.decisions)


def combine_statistics(
    stats: Sequence[SufficientStatistics],
    client_ids: Sequence[int] | None = None,
    *,
    state: MixtureState | None = None,
    max_count_ratio: float | None = DEFAULT_MAX_COUNT_RATIO,
    max_client_weight: float | None = DEFAULT_MAX_CLIENT_WEIGHT,
    max_component_share: float | None = None,
    location_threshold: float = DEFAULT_LOCATION_THRESHOLD,
    variance_log_ratio: float = DEFAULT_VARIANCE_LOG_RATIO,
    ll_rtol: float = DEFAULT_LL_RTOL,
    ll_atol: float = DEFAULT_LL_ATOL,
) -> CombinedStatistics:
    """Federated EM's robust server sum: :func:`check_statistics`, count caps, optional per-component caps.

    A kept client's claimed ``n_samples`` is capped at ``max_count_ratio ×`` the others'
    median and its share of all rows at ``max_client_weight`` (see
    :func:`~fedgmm.federated.robust.cap_counts`); a capped client's statistics are scaled
    down as a whole (:func:`scale_statistics`), so its implied means and covariances
    are kept and only its weight shrinks. ``max_component_share`` (off by default: under
    strong heterogeneity one honest client may own a component) also caps any client's
    share of each ``N_k``.

    **Exactness**: when no client is flagged, ``total`` is
    ``sum(stats, SufficientStatistics.zeros(K, d, type, shift))`` — the plain recipe's
    sum, bit for bit — so federated EM stays exactly centralized EM.
    """
    n = len(stats)
    ids = client_id_list(n, client_ids)
    check = check_statistics(
        stats, ids, state=state, location_threshold=location_threshold,
        variance_log_ratio=variance_log_ratio, ll_rtol=ll_rtol, ll_atol=ll_atol,
    )
    kept = list(check.kept)
    if not kept:
        return CombinedStatistics(None, (), check.decisions)
    kept_stats = [stats[i] for i in kept]
    kept_ids = [ids[i] for i in kept]
    caps = cap_counts([s.n_samples for s in kept_stats], kept_ids,
                      max_ratio=max_count_ratio, max_client_weight=max_client_weight)
    factors = caps.factors
    kept_stats = [s if f == 1.0 else scale_statistics(s, float(f)) for s, f in zip(kept_stats, factors, strict=True)]
    groups: list[Sequence[ClientDecision]] = [check.decisions, caps.decisions]
    if max_component_share is not None:
        if not 0 < max_component_share <= 1:
            raise ValueError(f"max_component_share must be in (0, 1], got {max_component_share}.")
        kept_stats, comp = _cap_component_shares(kept_stats, kept_ids, max_component_share)
        groups.append(comp)
    first = kept_stats[0]
    zero = SufficientStatistics.zeros(first.n_components, first.n_features, first.covariance_type, first.shift)
    total = sum(kept_stats, zero)
    return CombinedStatistics(total, tuple(kept), merge_decisions(ids, *groups))

"""Uploaded local mixtures: plausibility against the federation, and a DFMR-style distance filter."""

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
from fedgmm.federated.robust.records import (
    MIN_CLIENTS_TO_COMPARE,
    ClientDecision,
    client_id_list,
    merge_decisions,
    robust_center_scale,
)
from fedgmm.mixture import MixtureState

#: A component mean further than this many robust federation scales from the federation's
#: median location is implausible (honest outliers of the robustness study sit within ~3).
DEFAULT_LOCATION_THRESHOLD = 100.0
#: The same for the components of an uploaded local mixture (:func:`check_mixtures`). Looser:
#: a detailed local model has components on single rows, and honest non-IID clients put them
#: far out — issue 9's Fashion-MNIST regime (standardised PCA, α = 0.1) has honest clients
#: at 124–190 robust scales (whole heavy-tailed classes: their 99th-percentile row at 60–90),
#: which 100 rejected (a fifth of the rows lost, 3.1 nats/sample). The gross-scale uploads
#: this check exists for sit many orders beyond (the robustness tests use 1e15).
DEFAULT_MIXTURE_LOCATION_THRESHOLD = 1000.0
#: A covariance eigenvalue more than e^this away from the federation's typical variance
#: (log of a 1e12 ratio) is implausible; honest collapsed components stop at reg_covar.
DEFAULT_VARIANCE_LOG_RATIO = math.log(1e12)
#: Log condition numbers this far above the federation's median are implausible.
DEFAULT_CONDITION_LOG_RATIO = math.log(1e10)
#: Robust z-score beyond which a DFMR score is an outlier.
DEFAULT_DFMR_Z = 3.5
#: ...and it must also exceed the median score by this factor (squared-distance units).
DEFAULT_DFMR_MIN_RATIO = 10.0
#: Above this many clients, each client is compared with this many reference clients only.
DEFAULT_MAX_REFERENCE = 50
#: Full covariances enter the DFMR features as their d² square-root entries up to this d;
#: above it, their diagonal only (d entries) keeps the features small.
FULL_FEATURE_MAX_D = 64


@dataclass(frozen=True)
class ScreenResult:
    """Which contributions a check kept, and a decision for every one.

    Attributes
    ----------
    kept : tuple of int
        Positions (in the input order) of the contributions kept.
    decisions : tuple of ClientDecision
        One per input contribution, in input order.
    scores : ndarray of shape (n,) or None
        The per-client statistic the check thresholded (DFMR: nearest-half distance).
    """

    kept: tuple[int, ...]
    decisions: tuple[ClientDecision, ...]
    scores: np.ndarray | None = None

    @property
    def rejected(self) -> tuple[int, ...]:
        """Client ids rejected."""
        return tuple(d.client_id for d in self.decisions if d.action == "rejected")


def _eigenvalues(state: MixtureState) -> np.ndarray:
    """Covariance eigenvalues per component, ``(K, d)``."""
    k, d = state.n_components, state.n_features
    cov = np.asarray(state.covariances)
    with np.errstate(all="ignore"):
        if state.covariance_type == "full":
            return np.linalg.eigvalsh(cov)
        if state.covariance_type == "tied":
            return np.broadcast_to(np.linalg.eigvalsh(cov), (k, d))
        if state.covariance_type == "diag":
            return cov
        return np.broadcast_to(cov[:, None], (k, d))


def _diagonals(state: MixtureState) -> np.ndarray:
    """Covariance diagonals per component, ``(K, d)``."""
    k, d = state.n_components, state.n_features
    cov = np.asarray(state.covariances)
    if state.covariance_type == "full":
        return np.einsum("kii->ki", cov)
    if state.covariance_type == "tied":
        return np.broadcast_to(np.diag(cov), (k, d))
    if state.covariance_type == "diag":
        return cov
    return np.broadcast_to(cov[:, None], (k, d))


def _summary(state: MixtureState) -> tuple[np.ndarray, np.ndarray]:
    """The mixture's mean ``(d,)`` and per-feature variance ``(d,)`` (non-finite on overflow)."""
    with np.errstate(all="ignore"):
        w = np.asarray(state.weights)
        mean = w @ state.means
        var = w @ (_diagonals(state) + (state.means - mean) ** 2)
    return mean, var


def check_mixtures(
    states: Sequence[MixtureState],
    client_ids: Sequence[int] | None = None,
    *,
    reg_covar: float = 0.0,
    location_threshold: float = DEFAULT_MIXTURE_LOCATION_THRESHOLD,
    variance_log_ratio: float = DEFAULT_VARIANCE_LOG_RATIO,
    condition_log_ratio: float = DEFAULT_CONDITION_LOG_RATIO,
) -> ScreenResult:
    """Reject uploaded mixtures whose scale cannot be the federation's.

    Checks, per client (a failure rejects it, with the reason):

    - every array finite (precision factors included);
    - every covariance eigenvalue ``>= reg_covar`` (an honest local M-step adds
      ``reg_covar·I`` to a positive semi-definite scatter, so this is exact);
    - against the federation (with at least 3 clients): every component mean within
      ``location_threshold`` robust scales of the median client location, per feature
      (scale: root of the median client variance plus the squared MAD of the client
      locations); every eigenvalue within ``e^±variance_log_ratio`` of the median client
      log-variance; every component's log condition number at most
      ``condition_log_ratio`` above the median client's largest.

    The reference statistics are medians over clients, so fewer than half the clients
    cannot move them far.

    Parameters
    ----------
    states : sequence of MixtureState
        The decoded local models (same covariance type and d).
    client_ids : sequence of int, optional
    reg_covar : float
        The ``reg_covar`` the server asked the clients' local fits to use.
    location_threshold, variance_log_ratio, condition_log_ratio : float

    Returns
    -------
    ScreenResult
    """
    n = len(states)
    ids = client_id_list(n, client_ids)
    reasons: list[str | None] = [None] * n
    for i, s in enumerate(states):
        arrays = (s.weights, s.means, s.covariances, s.precisions_cholesky)
        if not all(np.all(np.isfinite(a)) for a in arrays):
            reasons[i] = "local model has non-finite parameters"
    eig = [_eigenvalues(s) if reasons[i] is None else None for i, s in enumerate(states)]
    floor = reg_covar * (1 - 1e-6)
    for i, ev in enumerate(eig):
        if ev is None:
            continue
        if not np.all(np.isfinite(ev)) or np.min(ev) <= 0:
            reasons[i] = "covariances are not positive definite"
        elif reg_covar > 0 and np.min(ev) < floor:
            reasons[i] = f"covariance eigenvalue {np.min(ev):.3g} below the requested reg_covar {reg_covar:.3g}"
    live = [i for i in range(n) if reasons[i] is None]
    if len(live) >= MIN_CLIENTS_TO_COMPARE:
        summaries = [_summary(states[i]) for i in live]
        means = np.array([m for m, _ in summaries])
        variances = np.array([v for _, v in summaries])
        loc, loc_spread = robust_center_scale(means)
        var_med, _ = robust_center_scale(variances)
        scale = np.sqrt(np.maximum(var_med, 0.0) + loc_spread**2)
        scale = np.maximum(scale, max(1e-12 * float(scale.max(initial=0.0)), 1e-300))
        live_eig = [np.asarray(eig[i]) for i in live]
        with np.errstate(all="ignore"):
            log_var = np.array([np.mean(np.log(ev), axis=1) @ states[i].weights for i, ev in zip(live, live_eig, strict=True)])
            log_cond = np.array([np.max(np.log(ev.max(axis=1) / ev.min(axis=1))) for ev in live_eig])
        var_ref = float(robust_center_scale(log_var)[0])
        cond_ref = float(robust_center_scale(log_cond)[0])
        for j, i in enumerate(live):
            s = states[i]
            with np.errstate(all="ignore"):
                z = np.max(np.abs(s.means - loc) / scale)
                ev = live_eig[j]
                lo, hi = float(np.log(ev.min())), float(np.log(ev.max()))
            if not np.isfinite(z) or z > location_threshold:
                reasons[i] = (f"a component mean lies {z:.3g} robust scales from the federation's median location "
                              f"(threshold {location_threshold:g})")
            elif hi > var_ref + variance_log_ratio or lo < var_ref - variance_log_ratio:
                reasons[i] = (f"covariance eigenvalues span [{math.exp(lo):.3g}, {math.exp(hi):.3g}], beyond "
                              f"e^±{variance_log_ratio:.3g} of the federation's typical variance {math.exp(var_ref):.3g}")
            elif log_cond[j] > max(cond_ref, 0.0) + condition_log_ratio:
                reasons[i] = (f"condition number {math.exp(min(log_cond[j], 700)):.3g} is beyond "
                              f"e^{condition_log_ratio:.3g} x the federation's median {math.exp(cond_ref):.3g}")
    decisions = [ClientDecision(c, "rejected", r) for c, r in zip(ids, reasons, strict=True) if r is not None]
    kept = tuple(i for i in range(n) if reasons[i] is None)
    return ScreenResult(kept, merge_decisions(ids, decisions))


# ---------------------------------------------------------------------------- DFMR
def component_features(state: MixtureState) -> np.ndarray:
    """``[μ_k, vec(Σ_k^½)]`` per component, ``(K, d + q)``.

    Squared Euclidean distances between these rows are
    ``‖μ_i − μ_j‖² + ‖Σ_i^½ − Σ_j^½‖²_F``, which equals the squared 2-Wasserstein
    distance of the two Gaussians when the covariances commute and bounds it from above
    otherwise. Full/tied covariances give their ``d²`` symmetric square-root entries
    (only the diagonal when ``d > FULL_FEATURE_MAX_D``); diag ones their ``d`` standard
    deviations; spherical ones ``√d·σ``.
    """
    k, d = state.n_components, state.n_features
    cov = np.asarray(state.covariances)
    if state.covariance_type in ("full", "tied") and d <= FULL_FEATURE_MAX_D:
        stack = cov if state.covariance_type == "full" else cov[None]
        val, vec = np.linalg.eigh(stack)
        root = (vec * np.sqrt(np.clip(val, 0.0, None))[:, None, :]) @ np.swapaxes(vec, 1, 2)
        root = np.broadcast_to(root, (k, d, d)).reshape(k, d * d)
    elif state.covariance_type in ("full", "tied"):
        root = np.sqrt(np.clip(_diagonals(state), 0.0, None))
    elif state.covariance_type == "diag":
        root = np.sqrt(cov)
    else:
        root = math.sqrt(d) * np.sqrt(cov)[:, None]
    return np.hstack([np.asarray(state.means), root])


def _sq_dist(a: np.ndarray, a_sq: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between rows (``a_sq``, ``b_sq``: the rows' squared norms)."""
    with np.errstate(all="ignore"):
        out = a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    return np.clip(np.nan_to_num(out, nan=np.inf, posinf=np.inf), 0.0, None)


#: Cost-matrix entries computed per matrix product in :func:`mixture_distances` (32 MiB).
_COST_BLOCK = 1 << 22


def _directed(cost: np.ndarray, weights: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``Σ_i a_i min_{j ∈ B} C_ij`` for every block B of columns (starting at ``starts``)."""
    mins = np.minimum.reduceat(cost, starts, axis=1)
    with np.errstate(all="ignore"):
        out = weights @ mins
    return np.nan_to_num(out, nan=np.inf)


def mixture_distances(
    states: Sequence[MixtureState], reference: Sequence[int] | None = None
) -> np.ndarray:
    """Symmetric relaxed transport divergence between every mixture and every reference mixture.

    ``D(A, B) = ½ [Σ_i a_i min_j c_ij + Σ_j b_j min_i c_ij]`` with ``c_ij`` the squared
    distance of :func:`component_features` (each component travels to its nearest
    component of the other mixture, both ways). It is zero iff the mixtures have the
    same components, needs no optimisation, and is a lower bound of the composite
    transportation distance with the same cost.

    Parameters
    ----------
    states : sequence of MixtureState
    reference : sequence of int, optional
        Positions of the reference mixtures (all by default).

    Returns
    -------
    ndarray of shape (n, n_reference)
    """
    ref = list(range(len(states))) if reference is None else list(reference)
    feats = [component_features(s) for s in states]
    weights = [np.asarray(s.weights) for s in states]
    ref_feats = np.vstack([feats[j] for j in ref])
    sizes = np.array([feats[j].shape[0] for j in ref])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    ref_w = np.concatenate([weights[j] for j in ref])
    owner = np.repeat(np.arange(len(ref)), sizes)
    with np.errstate(all="ignore"):
        ref_sq = (ref_feats**2).sum(axis=1)
    out = np.empty((len(states), len(ref)))
    bounds = np.concatenate([[0], np.cumsum([f.shape[0] for f in feats])])
    all_feats = np.vstack(feats)
    with np.errstate(all="ignore"):
        all_sq = (all_feats**2).sum(axis=1)
    step = max(1, _COST_BLOCK // max(1, ref_feats.shape[0]))
    lo = 0
    while lo < len(states):
        # One matrix product for a block of clients whose components fit in _COST_BLOCK entries.
        hi = lo + 1
        while hi < len(states) and bounds[hi + 1] - bounds[lo] <= step:
            hi += 1
        rows = slice(int(bounds[lo]), int(bounds[hi]))
        block = _sq_dist(all_feats[rows], all_sq[rows], ref_feats, ref_sq)
        for i in range(lo, hi):
            cost = block[bounds[i] - bounds[lo] : bounds[i + 1] - bounds[lo]]  # (K_i, M_ref)
            forward = _directed(cost, weights[i], starts)
            with np.errstate(all="ignore"):
                back = np.bincount(owner, weights=ref_w * cost.min(axis=0), minlength=len(ref))
            out[i] = 0.5 * (forward + np.nan_to_num(back, nan=np.inf))
        lo = hi
    return out


def distance_filter(
    states: Sequence[MixtureState],
    client_ids: Sequence[int] | None = None,
    *,
    z_threshold: float = DEFAULT_DFMR_Z,
    min_ratio: float = DEFAULT_DFMR_MIN_RATIO,
    max_reference: int = DEFAULT_MAX_REFERENCE,
    counts: Sequence[float] | None = None,
) -> ScreenResult:
    """DFMR-style filter: reject mixtures far from their nearest half of the federation.

    After Zhang & Chen's distance-filtered mixture reduction (arXiv 2407.13980): a
    client's score is the mean :func:`mixture_distances` to its nearest ``⌈m/2⌉`` of the
    ``m`` other (reference) clients. An honest majority gives every honest client half
    the federation of plausible neighbours, so honest scores stay comparable even when
    clients are very different (Dirichlet α = 0.1); a corrupted mixture is far from all
    of them. A score is an outlier when its log exceeds the median log score by more than
    ``z_threshold`` robust standard deviations *and* by ``log(min_ratio)``; at most
    ``⌊(n−1)/2⌋`` clients (the highest scores) are rejected. Fewer than 3 clients: all kept.

    Parameters
    ----------
    states : sequence of MixtureState
        Mixtures that passed :func:`check_mixtures` (same covariance type and d).
    client_ids : sequence of int, optional
    z_threshold, min_ratio : float
    max_reference : int
        With more clients, each one is compared with ``max_reference`` reference clients
        spread evenly over the input order (work ``O(n · max_reference)`` mixture pairs).
    counts : sequence of float, optional
        Claimed row counts. A client with fewer rows than the median client fits a coarser,
        noisier model (fewer components, squared estimation error ∝ 1/n), so its score is
        multiplied by ``n_c / median n`` (never raised: a larger claim earns no leniency).

    Returns
    -------
    ScreenResult
        ``scores`` holds each client's score.
    """
    n = len(states)
    ids = client_id_list(n, client_ids)
    if n < MIN_CLIENTS_TO_COMPARE:
        return ScreenResult(tuple(range(n)), merge_decisions(ids), np.zeros(n))
    if n > max_reference:
        reference = sorted({round(float(x)) for x in np.linspace(0, n - 1, max_reference)})
    else:
        reference = list(range(n))
    dist = mixture_distances(states, reference)
    for col, j in enumerate(reference):
        dist[j, col] = np.nan  # a client is not its own neighbour
    scores = np.empty(n)
    for i in range(n):
        row = np.sort(dist[i][~np.isnan(dist[i])])
        h = math.ceil(row.size / 2)
        scores[i] = float(np.mean(row[:h])) if h else 0.0
    if counts is not None:
        n_c = np.asarray(counts, dtype=np.float64)
        if n_c.shape != (n,):
            raise ValueError(f"got {n_c.shape[0] if n_c.ndim else 0} counts for {n} mixtures.")
        median_n = float(np.median(n_c))
        if median_n > 0 and np.all(np.isfinite(n_c)):
            scores = scores * np.minimum(1.0, np.maximum(n_c, 1.0) / median_n)
    with np.errstate(all="ignore"):
        tiny = 1e-12 * float(np.median(scores[np.isfinite(scores)])) if np.isfinite(scores).any() else 0.0
        log_s = np.log(scores + max(tiny, 1e-300))
    center, spread = robust_center_scale(log_s)
    limit = float(center) + max(z_threshold * float(spread), math.log(min_ratio))
    flagged = np.flatnonzero(~(log_s <= limit))
    flagged = flagged[np.argsort(-np.nan_to_num(log_s[flagged], nan=np.inf))][: (n - 1) // 2]
    decisions = [
        ClientDecision(
            ids[i], "rejected",
            f"distance to its nearest half of the federation {scores[i]:.3g} is {math.exp(min(log_s[i] - center, 700)):.3g} "
            f"x the median client's (limit {math.exp(limit - center):.3g} x)",
        )
        for i in flagged
    ]
    kept = tuple(i for i in range(n) if i not in set(flagged.tolist()))
    return ScreenResult(kept, merge_decisions(ids, decisions), scores)


@dataclass(frozen=True)
class ScreenedModels:
    """Local models after plausibility, the distance filter and count caps.

    Attributes
    ----------
    kept : tuple of int
        Positions (input order) of the models to merge.
    counts : ndarray of shape (len(kept),)
        Their counts for the union's weights (the claims themselves when nothing was capped).
    total : float
        Capped total count (size the synthetic set from it, see
        :func:`~fedgmm.federated.robust.bounded_synthetic_size`).
    decisions : tuple of ClientDecision
        One per input model.
    """

    kept: tuple[int, ...]
    counts: np.ndarray
    total: float
    decisions: tuple[ClientDecision, ...]


def screen_local_models(
    states: Sequence[MixtureState],
    counts: Sequence[float],
    client_ids: Sequence[int] | None = None,
    *,
    reg_covar: float = 0.0,
    max_count_ratio: float | None = DEFAULT_MAX_COUNT_RATIO,
    max_client_weight: float | None = DEFAULT_MAX_CLIENT_WEIGHT,
    distance_filtering: bool = True,
    location_threshold: float = DEFAULT_MIXTURE_LOCATION_THRESHOLD,
    variance_log_ratio: float = DEFAULT_VARIANCE_LOG_RATIO,
    condition_log_ratio: float = DEFAULT_CONDITION_LOG_RATIO,
    z_threshold: float = DEFAULT_DFMR_Z,
    min_ratio: float = DEFAULT_DFMR_MIN_RATIO,
    count_noise: float | None = None,
) -> ScreenedModels:
    """FedGenGMM's robust server front: :func:`check_mixtures`, :func:`distance_filter`, :func:`cap_counts`.

    Run it on the decoded uploads before the union; merge ``states[i]`` for ``i`` in
    ``kept`` with ``counts``. When no client is flagged, ``kept`` is every model and
    ``counts`` the claims unchanged, so the union is the plain recipe's exactly.
    ``count_noise`` is the public σ of DP noise on the counts (see :func:`cap_counts`).
    """
    n = len(states)
    if len(counts) != n:
        raise ValueError(f"got {len(counts)} counts for {n} local models.")
    ids = client_id_list(n, client_ids)
    plaus = check_mixtures(
        states, ids, reg_covar=reg_covar, location_threshold=location_threshold,
        variance_log_ratio=variance_log_ratio, condition_log_ratio=condition_log_ratio,
    )
    kept = list(plaus.kept)
    groups: list[Sequence[ClientDecision]] = [plaus.decisions]
    if distance_filtering and kept:
        dfmr = distance_filter([states[i] for i in kept], [ids[i] for i in kept], z_threshold=z_threshold,
                               min_ratio=min_ratio, counts=[counts[i] for i in kept])
        kept = [kept[j] for j in dfmr.kept]
        groups.append(dfmr.decisions)
    if not kept:
        return ScreenedModels((), np.zeros(0), 0.0, merge_decisions(ids, *groups))
    caps = cap_counts([counts[i] for i in kept], [ids[i] for i in kept],
                      max_ratio=max_count_ratio, max_client_weight=max_client_weight, count_noise=count_noise)
    groups.append(caps.decisions)
    return ScreenedModels(tuple(kept), caps.counts, caps.total, merge_decisions(ids, *groups))

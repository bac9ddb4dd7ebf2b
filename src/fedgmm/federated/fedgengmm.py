"""FedGenGMM (one-shot): clients upload local GMMs once; the server fits the global GMM on samples of their union."""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from fedgmm.exceptions import DegenerateCovarianceError
from fedgmm.federated.client import FIT_LOCAL, local_fit_config
from fedgmm.federated.local import LocalFitSettings
from fedgmm.federated.messages import LocalModelReply, decode_local_model, encode_request
from fedgmm.federated.private import upload_count_noise
from fedgmm.federated.reduce import reduce_mixture
from fedgmm.federated.robust import (
    DEFAULT_MAX_COUNT_RATIO,
    ClientDecision,
    RobustSettings,
    SyntheticSize,
    bounded_synthetic_size,
    cap_counts,
    screen_local_models,
)
from fedgmm.federated.screening import global_step_error, no_survivors, record_decisions
from fedgmm.federated.transport import (
    ClientRecord,
    CommunicationLog,
    Transport,
    require_clients,
    triage_replies,
)
from fedgmm.federated.union import deregularized_factors, init_from_union, union_mixture
from fedgmm.gaussian_mixture import GaussianMixture
from fedgmm.mixture import MixtureState, sample_gaussians
from fedgmm.types import CovarianceType

#: Default synthetic-set size, as a multiple of the clients' total sample count Σ n_c.
DEFAULT_SYNTHETIC_FACTOR = 5.0
#: The synthetic set never has fewer rows than this many per global component and dimension.
MIN_SYNTHETIC_PER_PARAMETER_ROW = 10
#: The server's chosen start runs on until its mean log-likelihood changes by less than this...
DEFAULT_SERVER_TOL = 1e-5
#: ...for at most this many more EM iterations (issue 9, ``scripts/server_tol_probe.py``).
DEFAULT_SERVER_MAX_ITER = 500


@dataclass(frozen=True)
class GlobalFitSettings:
    """How the server fits the global GMM on the synthetic set.

    Attributes
    ----------
    n_components : int or (int, int)
        Fixed K, or a ``(min, max)`` range chosen by BIC on the synthetic set.
    covariance_type : {"full", "tied", "diag", "spherical"}
    synthetic_size : float or int
        A float is a multiple of ``Σ n_c``; an int is a row count.
    reg_covar, max_iter, tol, n_init
        As in :class:`fedgmm.GaussianMixture`: every start runs to ``tol``.
    server_tol, server_max_iter
        The best start then runs on from where it stopped until its mean log-likelihood
        changes by less than ``server_tol``, for at most ``server_max_iter`` more
        iterations (``server_max_iter = 0``: not at all). One start run on costs little;
        all starts to the tight tolerance cost 2–4× the fit for the same gain (issue 9).
        Not for ``aggregation="reduce"``.
    init_params : {"union", "kmeans", "k-means++", "random", "random_from_data"}
        How the global EM starts: ``"union"`` (default) from the clients' components
        merged by weighted k-means++; otherwise scikit-learn's methods on the synthetic set.
    aggregation : {"sample", "reduce"}
        ``"sample"``: EM on samples of the union (the paper); ``"reduce"``: the union
        reduced to K from its parameters (:func:`~fedgmm.federated.reduce.reduce_mixture`,
        ``n_init`` starts, no synthetic set; a fixed K only).
    """

    n_components: int | tuple[int, int] = 10
    covariance_type: CovarianceType = "full"
    synthetic_size: float | int = DEFAULT_SYNTHETIC_FACTOR
    reg_covar: float = 1e-6
    max_iter: int = 100
    tol: float = 1e-3
    n_init: int = 1
    init_params: str = "union"
    aggregation: str = "sample"
    server_tol: float = DEFAULT_SERVER_TOL
    server_max_iter: int = DEFAULT_SERVER_MAX_ITER

    def component_range(self) -> list[int]:
        """The candidate K values."""
        if isinstance(self.n_components, tuple):
            lo, hi = self.n_components
            if not 1 <= lo <= hi:
                raise ValueError(f"n_components range needs 1 <= min <= max, got {self.n_components}.")
            return list(range(lo, hi + 1))
        if self.n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {self.n_components}.")
        return [int(self.n_components)]


def synthetic_rows(
    settings: GlobalFitSettings, total_samples: float, n_features: int, robust: RobustSettings | None = None,
    *, noisy_total: bool = False,
) -> SyntheticSize:
    """Rows of the synthetic set for clients holding ``total_samples`` rows in all, and why if adjusted.

    Never more than the absolute ceilings of ``robust`` (default
    :class:`~fedgmm.federated.robust.RobustSettings`), whatever the clients claim; see
    :func:`~fedgmm.federated.robust.bounded_synthetic_size`. The set needs at least
    ``K · MIN_SYNTHETIC_PER_PARAMETER_ROW`` rows for the largest K asked for. With
    ``noisy_total`` (a DP run: the total is a sum of noisy counts, which honest noise can
    floor at one row per client) a multiple of the total below that is raised to it, and
    ``reason`` says so; otherwise it is the user's setting that is too small, and an error.

    Raises
    ------
    ValueError
        If the set is too small for the largest K and ``noisy_total`` is False (or the
        absolute ceilings, not the total, make it too small).
    """
    size = settings.synthetic_size
    if isinstance(size, bool) or not isinstance(size, int | float | np.integer | np.floating) or size <= 0:
        raise ValueError(f"synthetic_size must be a positive float (multiple of Σ n_c) or int (rows), got {size!r}.")
    robust = robust or RobustSettings()
    k_max = max(settings.component_range())
    bounded = bounded_synthetic_size(
        size, float(total_samples), n_features=n_features, n_components=k_max,
        max_rows=robust.max_synthetic_rows, max_elements=robust.max_synthetic_elements,
    )
    needed = k_max * MIN_SYNTHETIC_PER_PARAMETER_ROW
    if bounded.rows >= needed:
        return bounded
    from_total = isinstance(size, float | np.floating) and not bounded.reason
    if noisy_total and from_total:
        return SyntheticSize(needed, bounded.requested, (
            f"synthetic set raised to {needed} rows (n_components={k_max} needs {MIN_SYNTHETIC_PER_PARAMETER_ROW} per "
            f"component): synthetic_size={size!r} x the clients' DP noisy total of {total_samples:.6g} rows gives "
            f"{bounded.rows}"
        ))
    raise ValueError(
        f"n_components={k_max} needs a synthetic set of at least {needed} rows, but synthetic_size="
        f"{size!r} gives {bounded.rows} (clients hold {total_samples} rows). Raise synthetic_size or "
        "decrease n_components."
    )


def synthetic_count(
    settings: GlobalFitSettings, total_samples: float, n_features: int, robust: RobustSettings | None = None,
    *, noisy_total: bool = False,
) -> int:
    """:attr:`SyntheticSize.rows` of :func:`synthetic_rows` (same arguments, same errors)."""
    return synthetic_rows(settings, total_samples, n_features, robust, noisy_total=noisy_total).rows


def fit_global_model(
    union: MixtureState,
    total_samples: float,
    settings: GlobalFitSettings,
    rng: np.random.Generator,
    *,
    local_reg_covar: float | np.ndarray = 0.0,
    robust: RobustSettings | None = None,
    noisy_total: bool = False,
) -> tuple[GaussianMixture, int, dict[int, float]]:
    """FedGenGMM's server step: sample ``S ~ U`` and fit the global GMM on it.

    Parameters
    ----------
    union : MixtureState
        The size-weighted union of the local models.
    total_samples : float
        ``Σ n_c`` after the count caps (sets the synthetic size when it is a multiple).
    settings : GlobalFitSettings
    rng : numpy.random.Generator
        Draws the synthetic set, then seeds the global fit.
    local_reg_covar : float or ndarray of shape (union.n_components,)
        The ``reg_covar`` the clients' fits added (one value, or one per union component);
        it is taken off the union's covariances before sampling (see
        :func:`~fedgmm.federated.union.deregularized_factors`), so the global fit
        regularises once, as a centralized fit does.
    robust : RobustSettings, optional
        Its ``max_synthetic_rows`` / ``max_synthetic_elements`` bound the synthetic set.
    noisy_total : bool
        ``total_samples`` is a sum of DP noisy counts: a synthetic set too small for K is
        raised to the minimum instead of refused (:func:`synthetic_rows`).

    Returns
    -------
    (GaussianMixture, int, dict)
        The global model, the synthetic-set size (0 with ``aggregation="reduce"``), and the
        BIC per candidate K (empty for a fixed K).
    """
    if settings.aggregation == "reduce":
        return _reduce_union(union, settings, rng, local_reg_covar), 0, {}
    count = synthetic_count(settings, total_samples, union.n_features, robust, noisy_total=noisy_total)
    synthetic, _ = sample_gaussians(
        union.weights, union.means, deregularized_factors(union, local_reg_covar), count, rng
    )
    fit_seed = int(rng.integers(0, 2**31 - 1))
    bic: dict[int, float] = {}
    best: GaussianMixture | None = None
    best_bic = np.inf
    ks = settings.component_range()
    for k in ks:
        model = _fit_on_synthetic(synthetic, union, k, settings, fit_seed)
        if len(ks) > 1:
            bic[k] = model.bic(synthetic)
            if bic[k] < best_bic:
                best, best_bic = model, bic[k]
        else:
            best = model
    assert best is not None
    return best, count, bic


def client_regs(models: list[LocalModelReply], local: LocalFitSettings) -> np.ndarray:
    """The ``reg_covar`` each union component's client reported (else the one asked for), shape ``(Σ K_c,)``."""
    return np.concatenate([
        np.full(m.state.n_components, local.reg_covar if m.reg_covar is None else m.reg_covar)
        for m in models if m.state is not None
    ])  # fmt: skip


def _reduce_union(
    union: MixtureState, settings: GlobalFitSettings, rng: np.random.Generator, local_reg_covar: float | np.ndarray
) -> GaussianMixture:
    """``aggregation="reduce"``: the union reduced to K by the MM algorithm, no synthetic set."""
    ks = settings.component_range()
    if len(ks) != 1:
        raise ValueError("aggregation='reduce' needs a fixed n_components (choosing K by BIC needs samples).")
    result = reduce_mixture(
        union, ks[0], covariance_type=settings.covariance_type, method="mm", n_init=settings.n_init,
        max_iter=settings.max_iter, reg_covar=settings.reg_covar, local_reg_covar=local_reg_covar,
        seed=int(rng.integers(0, 2**31 - 1)),
    )
    return GaussianMixture.from_state(
        result.state, reg_covar=settings.reg_covar, max_iter=settings.max_iter, tol=settings.tol
    )


def _fit_on_synthetic(
    synthetic: np.ndarray, union: MixtureState, k: int, settings: GlobalFitSettings, seed: int
) -> GaussianMixture:
    """EM on the synthetic set, the best of ``n_init`` starts.

    With ``init_params="union"`` each start is :func:`~fedgmm.federated.union.init_from_union`
    (weighted k-means++ over the union's components, moment-matched): it begins EM at the
    structure the clients found instead of at k-means partitions of the samples, which
    avoids the poor local optima k-means gives when components overlap, and costs nothing
    per sample.
    """
    rng = np.random.default_rng(seed)
    best: GaussianMixture | None = None
    for _ in range(settings.n_init if settings.init_params == "union" else 1):
        kwargs: dict[str, object] = {}
        if settings.init_params == "union":
            start = init_from_union(union, k, settings.covariance_type, rng, reg_covar=settings.reg_covar)
            kwargs = {"weights_init": start.weights, "means_init": start.means, "precisions_init": start.precisions}
        model = GaussianMixture(
            k,
            covariance_type=settings.covariance_type,
            reg_covar=settings.reg_covar,
            max_iter=settings.max_iter,
            tol=settings.tol,
            n_init=1 if settings.init_params == "union" else settings.n_init,
            init_params="kmeans" if settings.init_params == "union" else settings.init_params,
            random_state=int(rng.integers(0, 2**31 - 1)),
            **kwargs,  # type: ignore[arg-type]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            try:
                model.fit(synthetic)
            except DegenerateCovarianceError as exc:
                raise DegenerateCovarianceError(f"global fit with K={k} on the synthetic set failed: {exc}") from exc
        if best is None or model.lower_bound_ > best.lower_bound_:
            best = model
    assert best is not None
    return _run_on(best, synthetic, settings)


def _run_on(model: GaussianMixture, synthetic: np.ndarray, settings: GlobalFitSettings) -> GaussianMixture:
    """The chosen start continued by EM to ``settings.server_tol`` (itself when that asks for nothing more)."""
    if settings.server_max_iter < 1 or settings.server_tol >= settings.tol:
        return model
    refined = GaussianMixture(
        model.n_components,
        covariance_type=settings.covariance_type,
        reg_covar=settings.reg_covar,
        max_iter=settings.server_max_iter,
        tol=settings.server_tol,
        weights_init=model.weights_,
        means_init=model.means_,
        precisions_init=model.precisions_,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            refined.fit(synthetic)
        except DegenerateCovarianceError:
            return model  # the converged start stands; running on only collapsed a component
    return refined if refined.lower_bound_ >= model.lower_bound_ else model


@dataclass
class FedGenGMMResult:
    """Outcome of a FedGenGMM run.

    Attributes
    ----------
    global_model : GaussianMixture
    union : MixtureState
        The size-weighted union ``U`` of the kept local models.
    local_models : dict of int to (MixtureState, int)
        Kept local models and their ``n_c``, by client id.
    records : dict of str to ClientRecord
        What happened to every client.
    communication : CommunicationLog
    synthetic_size : int
    bic : dict of int to float
        BIC of each candidate global K (empty for a fixed K).
    server_seconds : float
        Wall time of the server step (union, sampling, global fit).
    """

    global_model: GaussianMixture
    union: MixtureState
    local_models: dict[int, tuple[MixtureState, int]]
    records: dict[str, ClientRecord]
    communication: CommunicationLog
    synthetic_size: int
    bic: dict[int, float] = field(default_factory=dict)
    server_seconds: float = 0.0
    #: ``(epsilon, delta)`` each kept client's DP local fit spent, by client id (empty: not private).
    privacy_spent: dict[int, tuple[float, float]] = field(default_factory=dict)
    #: Why the synthetic set's size is not what ``synthetic_size`` asked for (empty: it is).
    synthetic_note: str = ""


def server_rng(seed: int) -> np.random.Generator:
    """The server's Generator for a run seed (independent of every client's)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E5]))


def collect_local_models(
    transport: Transport,
    local: LocalFitSettings,
    seed: int,
    *,
    min_clients: int = 1,
    n_features: int | None = None,
    transform: dict[str, np.ndarray] | None = None,
    transform_id: str = "",
    what: str = "FedGenGMM upload",
    extra_settings: Mapping[str, Any] | None = None,
) -> tuple[list[LocalModelReply], dict[str, ClientRecord]]:
    """One upload round: every client fits its local GMM and sends it (``what`` names the round in errors).

    ``extra_settings`` are added to the request's fields (a private federated EM run's budget).

    Replies are decoded and checked; failures, self-exclusions and rejected payloads are
    recorded. When ``n_features`` is not given, the dimension most clients report wins
    (ties: the lowest client id's) and the others are rejected.

    Returns
    -------
    (list of LocalModelReply, dict of str to ClientRecord)
        The usable models in client-id order, and a record for every client.

    Raises
    ------
    FederationError
        Fewer than ``min_clients`` usable models.
    """
    settings = {**local_fit_config(local, seed), **(extra_settings or {})}
    if transform_id:
        settings["transform-id"] = transform_id
    request = encode_request(FIT_LOCAL, settings, transform)
    replies = transport.exchange(FIT_LOCAL, request)
    records: dict[str, ClientRecord] = {}
    usable = [
        (reply.source, model)
        for reply, model in triage_replies(
            replies,
            lambda c: decode_local_model(c, covariance_type=local.covariance_type, n_features=n_features),
            records,
        )
    ]
    if n_features is None and usable:
        dims = Counter(m.state.n_features for _, m in usable if m.state is not None)
        top = max(dims.values())
        winner = min(
            (m.client_id, m.state.n_features) for _, m in usable if m.state is not None and dims[m.state.n_features] == top
        )[1]
        kept = []
        for source, model in usable:
            assert model.state is not None
            if model.state.n_features != winner:
                records[source] = ClientRecord(
                    source, model.client_id, "rejected",
                    f"local model has {model.state.n_features} features, most clients have {winner}.",
                )
            else:
                kept.append((source, model))
        usable = kept
    seen: set[int] = set()
    result = []
    for source, model in sorted(usable, key=lambda sm: sm[1].client_id):
        assert model.state is not None
        if model.client_id in seen:
            records[source] = ClientRecord(source, model.client_id, "rejected", "duplicate client id.")
            continue
        seen.add(model.client_id)
        records[source] = ClientRecord(
            source, model.client_id, "ok", model.reason, model.n_samples, model.state.n_components
        )
        result.append(model)
    require_clients(len(result), min_clients, what, records)
    return result, records


@dataclass(frozen=True)
class ScreenedUploads:
    """The local models to merge after the robust screen.

    Attributes
    ----------
    models : list of LocalModelReply
        Kept models, in client-id order.
    counts : ndarray of shape (len(models),)
        Their weights in the union (the claims when nothing was capped).
    total : float
        The capped total count that sizes the synthetic set.
    flagged : list of ClientDecision
        Every decision that rejected, capped or down-weighted a client.
    """

    models: list[LocalModelReply]
    counts: np.ndarray
    total: float
    flagged: list[ClientDecision]


def screen_uploads(
    models: list[LocalModelReply],
    records: dict[str, ClientRecord],
    robust: RobustSettings,
    *,
    reg_covar: float,
    what: str = "FedGenGMM upload",
    count_noise: float | None = None,
) -> ScreenedUploads:
    """Screen decoded uploads before their union (:func:`~fedgmm.federated.robust.screen_local_models`).

    Rejections and caps are written into ``records`` with their reasons. With
    ``robust.enabled`` False the models are merged as sent (the paper's recipe), but the
    total that sizes the server's work is still taken from counts capped at
    ``max_count_ratio ×`` the others' median: no claim sizes server memory.

    ``count_noise`` is the σ of the DP noise on each honest count — the server's own
    (:func:`~fedgmm.federated.private.upload_count_noise`), None for exact counts: the
    count cap then never binds below the others' median plus a few σ
    (:func:`~fedgmm.federated.robust.cap_counts`), so noise that floors some honest counts
    at 1 cannot make an honest client's count look like an outlier.

    Raises
    ------
    FederationError
        The screen kept no model (the message lists every decision).
    """
    states = [m.state for m in models if m.state is not None]
    claims = [float(m.n_samples) for m in models]
    ids = [m.client_id for m in models]
    if not robust.enabled:
        ratio = DEFAULT_MAX_COUNT_RATIO if robust.max_count_ratio is None else robust.max_count_ratio
        sizing = cap_counts(
            claims, ids, max_ratio=ratio, max_client_weight=None, count_noise=count_noise
        ).total if claims else 0.0
        return ScreenedUploads(list(models), np.asarray([m.n_samples for m in models]), float(sizing), [])
    screened = screen_local_models(
        states, claims, ids, reg_covar=reg_covar, max_count_ratio=robust.max_count_ratio,
        max_client_weight=robust.max_client_weight, distance_filtering=robust.distance_filter,
        count_noise=count_noise,
    )
    flagged = record_decisions(records, screened.decisions)
    if not screened.kept:
        raise no_survivors(what, screened.decisions)
    kept = [models[i] for i in screened.kept]
    counts = screened.counts
    if not flagged:  # nothing capped: the claims as ints, exactly the plain union's weights
        counts = np.asarray([m.n_samples for m in kept])
    return ScreenedUploads(kept, counts, float(screened.total), flagged)


def run_fedgengmm(
    transport: Transport,
    local: LocalFitSettings,
    global_settings: GlobalFitSettings,
    seed: int,
    *,
    min_clients: int = 1,
    n_features: int | None = None,
    transform: dict[str, np.ndarray] | None = None,
    transform_id: str = "",
    robust: RobustSettings | None = None,
) -> FedGenGMMResult:
    """Run FedGenGMM over ``transport``: one upload round, then the server step.

    Parameters
    ----------
    transport : Transport
    local : LocalFitSettings
        How clients fit their local models (K fixed or by BIC, per client).
    global_settings : GlobalFitSettings
    seed : int
        Run seed: clients derive theirs from it and their id; the server's Generator
        draws the synthetic set and seeds the global fit.
    min_clients : int
        Fewest usable local models to go on with.
    n_features : int, optional
        Expected dimension (else the majority's).
    transform, transform_id
        Federated preprocessing to apply on the clients (see :mod:`fedgmm.federated.client`).
    robust : RobustSettings, optional
        How uploads are screened before the union (default: defended; see
        :func:`screen_uploads`).

    Raises
    ------
    FederationError
        Too few usable uploads, none surviving the screen, or a failed union / global fit
        (the message names the clients merged, the most atypical first).
    """
    robust = robust or RobustSettings()
    models, records = collect_local_models(
        transport, local, seed, min_clients=min_clients, n_features=n_features,
        transform=transform, transform_id=transform_id,
    )
    start = time.perf_counter()
    private = local.epsilon is not None  # the counts are DP noisy counts
    screened = screen_uploads(models, records, robust, reg_covar=local.reg_covar, count_noise=upload_count_noise(local))
    models = screened.models
    states = [m.state for m in models if m.state is not None]
    note = ""
    if global_settings.aggregation == "sample":  # a config error stays a ValueError
        note = synthetic_rows(global_settings, screened.total, states[0].n_features, robust, noisy_total=private).reason
    try:
        union = union_mixture(states, screened.counts.tolist())
        global_model, size, bic = fit_global_model(
            union, screened.total, global_settings, server_rng(seed), local_reg_covar=client_regs(models, local),
            robust=robust, noisy_total=private,
        )
    except (DegenerateCovarianceError, ValueError, FloatingPointError) as exc:
        raise global_step_error(
            "FedGenGMM server step (union, synthetic set, global fit)", exc, states,
            [m.client_id for m in models], [float(c) for c in screened.counts], screened.flagged,
        ) from exc
    return FedGenGMMResult(
        global_model=global_model,
        union=union,
        local_models={m.client_id: (m.state, m.n_samples) for m in models if m.state is not None},
        records=records,
        communication=transport.communication,
        synthetic_size=size,
        bic=bic,
        server_seconds=time.perf_counter() - start,
        privacy_spent={m.client_id: m.privacy for m in models if m.privacy is not None},
        synthetic_note=note,
    )

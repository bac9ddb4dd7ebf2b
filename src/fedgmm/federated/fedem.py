"""Federated EM: broadcast the mixture, sum the clients' E-step statistics, run the M-step; repeat."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

from fedgmm.em.mstep import m_step
from fedgmm.em.stats import SufficientStatistics
from fedgmm.exceptions import DegenerateCovarianceError, FederationError
from fedgmm.federated.client import EM_STATISTICS
from fedgmm.federated.fedgengmm import (
    FedGenGMMResult,
    collect_local_models,
    screen_uploads,
    server_rng,
)
from fedgmm.federated.local import LocalFitSettings
from fedgmm.federated.messages import decode_statistics, encode_request, state_arrays
from fedgmm.federated.private import INIT_LOCAL_COMPONENTS, upload_count_noise
from fedgmm.federated.private_rounds import (
    RESIDUAL_RATIO,
    RoundPlan,
    combine_noisy_statistics,
    decode_noisy_statistics,
    drop_weak_components,
    noisy_m_step,
    round_config,
    round_plan,
    row_bound,
    whiten_state,
)
from fedgmm.federated.robust import ClientDecision, RobustSettings, combine_statistics
from fedgmm.federated.screening import (
    describe_decisions,
    global_step_error,
    no_survivors,
    record_decisions,
)
from fedgmm.federated.transport import (
    ClientRecord,
    CommunicationLog,
    Transport,
    require_clients,
    triage_replies,
)
from fedgmm.federated.union import init_from_union, union_mixture
from fedgmm.mixture import MixtureState
from fedgmm.privacy.dpem import weak_threshold
from fedgmm.types import CovarianceType


@dataclass(frozen=True)
class RoundRecord:
    """One federated EM round.

    Attributes
    ----------
    round : int
        1-based EM round.
    log_likelihood : float
        Federated mean log-likelihood per sample of the model broadcast this round.
    n_clients : int
        Clients whose statistics were merged.
    bytes_up, bytes_down : int
        Cumulative bytes of the whole run so far (initialisation included).
    flagged : tuple of ClientDecision
        Clients the robust sum rejected, capped or down-weighted this round, and why.
    """

    round: int
    log_likelihood: float
    n_clients: int
    bytes_up: int
    bytes_down: int
    flagged: tuple[ClientDecision, ...] = ()


@dataclass
class FederatedEMResult:
    """Outcome of federated EM.

    Attributes
    ----------
    state : MixtureState
        Parameters after the last M-step.
    init_state : MixtureState
    n_rounds : int
        EM rounds run (initialisation rounds not included; see ``communication.rounds``).
    converged : bool
    history : list of RoundRecord
    records : dict of str to ClientRecord
        Last known status of every client (a client lost in a round stays recorded).
    communication : CommunicationLog
    init_result : FedGenGMMResult or None
        The FedGenGMM run of the hybrid initialisation.
    server_seconds : float
    lower_bound : float
        Federated mean log-likelihood of the last round's broadcast (NaN in a private run:
        private replies carry no log-likelihood).
    privacy_spent : dict of int to (float, float)
        Private runs: the ``(epsilon, delta)`` each client last reported spent (its
        ledger's accountant value), by client id; empty otherwise.
    """

    state: MixtureState
    init_state: MixtureState
    n_rounds: int
    converged: bool
    history: list[RoundRecord]
    records: dict[str, ClientRecord]
    communication: CommunicationLog
    init_result: FedGenGMMResult | None = None
    server_seconds: float = 0.0
    lower_bound: float = field(default=-np.inf)
    privacy_spent: dict[int, tuple[float, float]] = field(default_factory=dict)


def reference_point(state: MixtureState) -> np.ndarray:
    """The statistics' reference point for a round: the broadcast mixture's mean ``Σ π_k μ_k``."""
    return np.asarray(state.weights @ state.means)


def run_federated_em(
    transport: Transport,
    *,
    n_components: int,
    covariance_type: CovarianceType = "full",
    max_rounds: int = 40,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    init: str | MixtureState = "kmeans++",
    local: LocalFitSettings | None = None,
    seed: int = 0,
    min_clients: int = 1,
    transform: dict[str, np.ndarray] | None = None,
    transform_id: str = "",
    on_round: Callable[[RoundRecord, MixtureState], None] | None = None,
    records: dict[str, ClientRecord] | None = None,
    robust: RobustSettings | None = None,
    dp_noise: str = "local",
) -> FederatedEMResult:
    """Federated EM over ``transport``, from a given mixture or an initialisation round.

    Each round broadcasts the mixture and a reference point, sums the clients'
    :class:`~fedgmm.em.stats.SufficientStatistics` and runs the M-step; it stops when the
    federated mean log-likelihood changes by less than ``tol`` or after ``max_rounds``.
    From the same initial mixture and with every client answering, this is exactly
    centralized EM on the pooled data.

    Parameters
    ----------
    init : "kmeans++" or MixtureState
        ``"kmeans++"``: one upload round of local models, then
        :func:`~fedgmm.federated.union.init_from_union`; a MixtureState: start from it, no
        extra round (the hybrid passes FedGenGMM's global model, see
        :mod:`fedgmm.federated.dispatch`).
    local : LocalFitSettings, optional
        Clients' local fits for the initialisation round.
    transform, transform_id
        Federated preprocessing: the arrays ship with the first request to the clients
        (pass ``transform=None`` with the id when the clients already hold it).
    min_clients : int
        Fewest clients whose statistics must arrive each round.
    on_round : callable, optional
        ``on_round(record, state)`` after every M-step (e.g. to score each round's model).
    records : dict of str to ClientRecord, optional
        Records of earlier phases of the run (updated in place by later rounds).
    robust : RobustSettings, optional
        Default (defended): the initialisation round's uploads are screened as
        FedGenGMM's, and each round's statistics are checked and summed with bounded
        influence (:func:`~fedgmm.federated.robust.combine_statistics`; exactly the plain
        sum when no client is flagged). ``RobustSettings(enabled=False)``: the plain sum.

    Local differential privacy is on when ``local.epsilon`` is set
    (:mod:`fedgmm.federated.private_rounds`): the budget ``(local.epsilon, local.delta)``
    per client covers the ``"kmeans++"`` initialisation upload (a DP-EM local fit; none
    when starting from a given mixture) and ``max_rounds`` rounds of noisy statistics, all
    of which run (there is no private log-likelihood to stop on); rows are whitened by
    ``local.feature_scale`` or clipped to ``local.clip_bound``; each M-step is the
    noise-aware one, and the robust checks are the noise-aware bounds. ``dp_noise``:
    ``"local"`` (each reply carries the calibrated noise) or ``"distributed"`` (each of the
    C clients of the previous exchange adds ``1/sqrt(C)`` of it: the guarantee then holds
    for the sum only, under secure aggregation; it needs the ``"kmeans++"`` initialisation
    to know C).

    Raises
    ------
    FederationError
        Too few usable clients in a round, none surviving the robust checks, or a failed
        initialisation / M-step (the message names the clients merged).
    """
    robust = robust or RobustSettings()
    start = time.perf_counter()
    server_before = transport_seconds(transport)
    records = {} if records is None else records
    local = local or LocalFitSettings(covariance_type=covariance_type)
    privacy_spent: dict[int, tuple[float, float]] = {}
    if isinstance(init, MixtureState):
        state = init
        if state.n_components != n_components or state.covariance_type != covariance_type:
            raise ValueError(
                f"init has K={state.n_components} ({state.covariance_type}); expected K={n_components} ({covariance_type})."
            )
    elif init == "kmeans++":
        upload, extra = local, None
        if local.epsilon is not None:
            plan = _plan(local, max_rounds, covariance_type, private_init=True, noise=dp_noise)
            upload = replace(local, epsilon=plan.init_epsilon)
            extra = _dp_config(plan, local, seed)
        models, recs = collect_local_models(
            transport, upload, seed, min_clients=min_clients, transform=transform, transform_id=transform_id,
            what="federated EM initialisation upload", extra_settings=extra,
        )
        records.update(recs)
        privacy_spent.update({m.client_id: m.privacy for m in models if m.privacy is not None})
        noise = None if local.epsilon is None else upload_count_noise(upload, local_components=INIT_LOCAL_COMPONENTS)
        screened = screen_uploads(models, records, robust, reg_covar=local.reg_covar, what="federated EM initialisation",
                                  count_noise=noise)  # fmt: skip
        weak = None if local.epsilon is None else weak_threshold(plan.init_count_noise())
        states = [m.state if weak is None else drop_weak_components(m.state, m.n_samples, weak)
                  for m in screened.models if m.state is not None]  # fmt: skip
        try:
            union = union_mixture(states, screened.counts.tolist())
            state = init_from_union(union, n_components, covariance_type, server_rng(seed), reg_covar=reg_covar)
        except (DegenerateCovarianceError, ValueError, FloatingPointError) as exc:
            raise global_step_error(
                "federated EM initialisation (union, k-means++)", exc, states, [m.client_id for m in screened.models],
                [float(c) for c in screened.counts], screened.flagged,
            ) from exc
    else:
        raise ValueError(f"init must be 'kmeans++' or a MixtureState, got {init!r}.")
    init_state = state
    private = None
    n_share = len(privacy_spent)  # the distributed noise's share: clients of the previous exchange
    if local.epsilon is not None:
        if dp_noise == "distributed" and isinstance(init, MixtureState):
            raise ValueError(
                "dp_noise='distributed' needs the 'kmeans++' initialisation (its upload tells the server how many "
                "clients share the noise); start from a given mixture with dp_noise='local'."
            )
        private = _plan(local, max_rounds, covariance_type, private_init=not isinstance(init, MixtureState),
                        noise=dp_noise)  # fmt: skip
    history: list[RoundRecord] = []
    converged = False
    lower_bound = -np.inf
    n_round = 0
    callback_seconds = 0.0
    for n_round in range(1, max_rounds + 1):
        shift = reference_point(state)
        settings: dict[str, Any] = {"covariance-type": covariance_type}
        if transform_id:
            settings["transform-id"] = transform_id
        if private is not None:
            settings.update(_dp_config(private, local, seed, n_share))
        arrays = {**state_arrays(state), "shift": shift}
        if transform is not None and n_round == 1 and isinstance(init, MixtureState):
            arrays.update(transform)  # first contact with the clients: ship the transform once
        request = encode_request(EM_STATISTICS, settings, arrays)
        replies = transport.exchange(EM_STATISTICS, request)
        if private is not None:
            state, record = _private_round(
                replies, state, private, local, n_round, reg_covar, robust, records, privacy_spent, min_clients,
                transport.communication, n_share,
            )
            n_share = record.n_clients
            history.append(record)
            lower_bound = np.nan
            if on_round is not None:
                cb_start = time.perf_counter()
                on_round(record, state)
                callback_seconds += time.perf_counter() - cb_start
            continue
        usable = triage_replies(replies, partial(
            decode_statistics, covariance_type=covariance_type, n_components=n_components,
            n_features=state.n_features, shift=shift,
        ), records)
        merged: list[SufficientStatistics] = []
        ids: list[int] = []
        weights: list[int] = []  # clients per reply: a secure aggregate stands for all its contributors
        for reply, stat in usable:
            assert stat.stats is not None
            merged.append(stat.stats)
            ids.append(stat.client_id)
            weights.append(reply.n_clients)
            records[reply.source] = ClientRecord(
                reply.source, stat.client_id, "ok", "", stat.stats.n_samples, n_components
            )
        require_clients(sum(weights), min_clients, f"federated EM round {n_round}", records)
        total, flagged = _combine(merged, ids, state, shift, robust, records, n_round)
        rejected = {d.client_id for d in flagged if d.action == "rejected"}
        n_kept = sum(w for w, i in zip(weights, ids, strict=True) if i not in rejected)
        require_clients(n_kept, min_clients, f"federated EM round {n_round}", records)
        prev = lower_bound
        lower_bound = total.log_likelihood / total.n_samples
        try:
            state = m_step(total, reg_covar)
        except DegenerateCovarianceError as exc:
            raise FederationError(
                f"federated EM round {n_round}: the M-step failed: {exc}. Clients merged: "
                f"{sorted(set(ids) - {d.client_id for d in flagged if d.action == 'rejected'})}. "
                f"Robust decisions: {describe_decisions(flagged)}."
            ) from exc
        comm = transport.communication
        history.append(RoundRecord(n_round, lower_bound, n_kept, comm.bytes_up, comm.bytes_down, tuple(flagged)))
        if on_round is not None:
            cb_start = time.perf_counter()
            on_round(history[-1], state)
            callback_seconds += time.perf_counter() - cb_start
        if abs(lower_bound - prev) < tol:
            converged = True
            break
    elapsed = time.perf_counter() - start - (transport_seconds(transport) - server_before) - callback_seconds
    return FederatedEMResult(
        state=state,
        init_state=init_state,
        n_rounds=n_round,
        converged=converged,
        history=history,
        records=records,
        communication=transport.communication,
        server_seconds=elapsed,
        lower_bound=lower_bound,
        privacy_spent=privacy_spent,
    )


def _plan(local: LocalFitSettings, max_rounds: int, covariance_type: str, *, private_init: bool, noise: str) -> RoundPlan:
    assert local.epsilon is not None
    return round_plan(local.epsilon, local.delta, max_rounds, covariance_type, private_init, noise)


def _dp_config(plan: RoundPlan, local: LocalFitSettings, seed: int, n_clients: int = 1) -> dict[str, Any]:
    return round_config(plan, seed=seed, clip_bound=local.clip_bound, feature_scale=local.feature_scale,
                        n_clients=max(1, n_clients), dp_noise_seed=local.dp_noise_seed)  # fmt: skip


def _private_round(
    replies: list[Any],
    state: MixtureState,
    plan: RoundPlan,
    local: LocalFitSettings,
    n_round: int,
    reg_covar: float,
    robust: RobustSettings,
    records: dict[str, ClientRecord],
    privacy_spent: dict[int, tuple[float, float]],
    min_clients: int,
    comm: CommunicationLog,
    n_share: int,
) -> tuple[MixtureState, RoundRecord]:
    """One private round on the server: decode, noise-aware checks and sum, noise-aware M-step."""
    d = state.n_features
    usable = triage_replies(replies, partial(
        decode_noisy_statistics, covariance_type=state.covariance_type, n_components=state.n_components, n_features=d,
    ), records)
    merged: list[SufficientStatistics] = []
    ids: list[int] = []
    for reply, stat in usable:
        assert stat.stats is not None and stat.privacy is not None
        merged.append(stat.stats)
        ids.append(stat.client_id)
        privacy_spent[stat.client_id] = stat.privacy
        records[reply.source] = ClientRecord(reply.source, stat.client_id, "ok", "", stat.stats.n_samples, state.n_components)
    what = f"federated EM round {n_round} (private)"
    require_clients(len(merged), min_clients, what, records)
    scale = np.asarray(local.feature_scale) if local.feature_scale else np.ones(d)
    bound = row_bound(d, local.clip_bound, local.feature_scale)
    residual = RESIDUAL_RATIO * bound
    combined = combine_noisy_statistics(
        merged, ids, noise=plan.noise(residual, max(1, n_share)), bound=residual, robust=robust.enabled,
        max_client_weight=robust.max_client_weight, max_count_ratio=robust.max_count_ratio,
    )
    flagged = record_decisions(records, combined.decisions, prefix=f"round {n_round}: ")
    if combined.total is None:
        raise no_survivors(what, combined.decisions)
    n_kept = len(merged) - sum(dec.action == "rejected" for dec in flagged)
    require_clients(n_kept, min_clients, what, records)
    # σ of the summed second moments: the kept replies' independent noises add up.
    per_client = plan.noise(residual, max(1, n_share))
    spread = float(np.sqrt(max(1, n_kept)))
    new = noisy_m_step(combined.total, whiten_state(state, scale), scale, bound, reg_covar,
                       second_noise=per_client.second * spread, count_noise=per_client.count * spread,
                       reseed=n_round < plan.max_rounds)  # fmt: skip
    return new, RoundRecord(n_round, float("nan"), n_kept, comm.bytes_up, comm.bytes_down, tuple(flagged))


def _combine(
    merged: list[SufficientStatistics],
    ids: list[int],
    state: MixtureState,
    shift: np.ndarray,
    robust: RobustSettings,
    records: dict[str, ClientRecord],
    n_round: int,
) -> tuple[SufficientStatistics, list[ClientDecision]]:
    """The round's summed statistics (robust or plain) and the clients flagged, recorded in ``records``."""
    if not robust.enabled:
        zero = SufficientStatistics.zeros(state.n_components, state.n_features, state.covariance_type, shift)
        return sum(merged, zero), []
    combined = combine_statistics(
        merged, ids, state=state, max_count_ratio=robust.max_count_ratio,
        max_client_weight=robust.max_client_weight, max_component_share=robust.max_component_share,
    )
    flagged = record_decisions(records, combined.decisions, prefix=f"round {n_round}: ")
    if combined.total is None:
        raise no_survivors(f"federated EM round {n_round}", combined.decisions)
    return combined.total, flagged


def transport_seconds(transport: Transport) -> float:
    """Seconds a transport has spent in exchanges so far (0 if it does not say)."""
    return float(getattr(transport, "exchange_seconds", 0.0))

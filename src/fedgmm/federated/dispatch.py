"""The one dispatch: which algorithm a :class:`~fedgmm.federated.spec.MethodSpec` runs over a transport."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sklearn.exceptions import ConvergenceWarning

from fedgmm.federated.fedem import FederatedEMResult, RoundRecord, run_federated_em
from fedgmm.federated.fedgengmm import (
    FedGenGMMResult,
    collect_local_models,
    run_fedgengmm,
    screen_uploads,
)
from fedgmm.federated.local import LocalFitSettings
from fedgmm.federated.messages import LocalModelReply
from fedgmm.federated.preprocessing import Transform
from fedgmm.federated.private import dp_local_settings
from fedgmm.federated.spec import FEDERATED_METHODS, MethodSpec
from fedgmm.federated.transport import ClientRecord, CommunicationLog, Transport
from fedgmm.federated.union import union_mixture
from fedgmm.mixture import MixtureState

#: ``on_round(record, state)`` after every federated EM M-step.
RoundCallback = Callable[[RoundRecord, MixtureState], None]


@dataclass
class FederatedRun:
    """What a federated method produced over a transport.

    Attributes
    ----------
    spec : MethodSpec
    state : MixtureState
        The global model (for ``union``: the union itself).
    records : dict of str to ClientRecord
        What happened to every client, over every phase of the run.
    communication : CommunicationLog
        The transport's log (cumulative over the run).
    server_seconds : float
        Server computation (union, sampling, global fit, M-steps).
    local_models : dict of int to (MixtureState, int)
        Clients' uploaded models and ``n_c`` by client id (union, FedGenGMM, the hybrid).
    fedgengmm : FedGenGMMResult or None
        The FedGenGMM phase (``fedgengmm``, and the hybrid's start).
    fedem : FederatedEMResult or None
        The federated EM phase (``fedem``, ``hybrid``).
    """

    spec: MethodSpec
    state: MixtureState
    records: dict[str, ClientRecord]
    communication: CommunicationLog
    server_seconds: float = 0.0
    local_models: dict[int, tuple[MixtureState, int]] = field(default_factory=dict)
    fedgengmm: FedGenGMMResult | None = None
    fedem: FederatedEMResult | None = None

    def details(self) -> dict[str, Any]:
        """Method facts for summaries (chosen K, synthetic size, rounds, convergence, …)."""
        out: dict[str, Any] = {}
        if self.spec.method == "union":
            out["local_components"] = [s.n_components for s, _ in self.local_models.values()]
        if self.fedgengmm is not None and self.fedem is None:
            res = self.fedgengmm
            out.update({
                "synthetic_size": res.synthetic_size,
                "n_components": res.global_model.n_components,
                "local_components": [res.local_models[c][0].n_components for c in sorted(res.local_models)],
                "bic": res.bic,
            })  # fmt: skip
            if res.synthetic_note:
                out["synthetic_note"] = res.synthetic_note
        if self.fedem is not None:
            out.update({"n_rounds": self.fedem.n_rounds, "converged": self.fedem.converged,
                        "init_state": self.fedem.init_state})  # fmt: skip
            if self.spec.epsilon is not None:
                out["privacy_spent"] = dict(self.fedem.privacy_spent)
        return out


def run_method(
    transport: Transport,
    spec: MethodSpec,
    seed: int,
    *,
    transform: Transform | None = None,
    n_features: int | None = None,
    init_state: MixtureState | None = None,
    on_round: RoundCallback | None = None,
) -> FederatedRun:
    """Run ``spec``'s federated method over ``transport``: the only place that picks an algorithm.

    Parameters
    ----------
    transport : Transport
        In-process (:mod:`fedgmm.inprocess`) or Flower (:mod:`fedgmm.flower`).
    spec : MethodSpec
        ``spec.method`` is one of ``union``, ``fedgengmm``, ``fedem``, ``hybrid``.
    seed : int
        Run seed: clients derive theirs from it and their id, the server its Generator.
    transform : Transform, optional
        Federated preprocessing, shipped to the clients with the first request.
    n_features : int, optional
        Expected dimension of the local models (else the majority's).
    init_state : MixtureState, optional
        Federated EM starts from this mixture (no initialisation round).
    on_round : callable, optional
        ``on_round(record, state)`` after every federated EM round.

    Raises
    ------
    ValueError
        For a method that does not run over a transport (``centralized``, ``local``).
    FederationError
        Too few usable clients in a round.
    """
    if spec.method not in FEDERATED_METHODS:
        raise ValueError(
            f"method {spec.method!r} does not run over a transport; expected one of {list(FEDERATED_METHODS)}."
        )
    tf: dict[str, Any] = {"transform": transform.arrays(), "transform_id": transform.transform_id} if transform else {}
    check_private_method(spec, init_state)
    local = dp_local_settings(spec.local_settings(), None if transform is None else transform.variances)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if spec.method == "union":
            return _union(transport, spec, seed, n_features, tf)
        if spec.method == "fedgengmm":
            res = run_fedgengmm(
                transport, local, spec.global_settings(), seed, min_clients=spec.min_clients,
                n_features=n_features, robust=spec.robust_settings(), **tf,
            )
            return FederatedRun(spec, res.global_model.state_, res.records, res.communication, res.server_seconds,
                                res.local_models, fedgengmm=res)  # fmt: skip
        return _federated_em(transport, spec, local, seed, tf, n_features, init_state, on_round)


def check_private_method(spec: MethodSpec, init_state: MixtureState | None = None) -> None:
    """Refuse ``epsilon`` where no private version exists (the union; a FedGenGMM-started federated EM).

    Raises
    ------
    ValueError
        Naming what is supported.
    """
    if spec.epsilon is None or spec.method == "fedgengmm":
        return
    if spec.method == "union":
        raise ValueError(
            "epsilon (differential privacy) is not supported for method 'union': use 'fedgengmm' or 'fedem', "
            "or leave epsilon=None."
        )
    if spec.method == "hybrid" or (init_state is None and spec.init == "fedgengmm"):
        raise ValueError(
            "epsilon with the hybrid (federated EM started from FedGenGMM, init='fedgengmm') is not supported: "
            "its FedGenGMM upload and the EM rounds would have to share one budget per client. Use "
            "FederatedEM(init='kmeans++', epsilon=...), whose private initialisation upload is charged to the "
            "same budget as its rounds, or FedGenGMM(epsilon=...)."
        )


def _union(transport: Transport, spec: MethodSpec, seed: int, n_features: int | None, tf: dict[str, Any]) -> FederatedRun:
    models, records = collect_local_models(
        transport, spec.local_settings(), seed, min_clients=spec.min_clients, n_features=n_features, **tf
    )
    start = time.perf_counter()
    screened = screen_uploads(models, records, spec.robust_settings(), reg_covar=spec.client_reg_covar, what="union upload")
    models = screened.models
    state = union_mixture([m.state for m in models if m.state is not None], screened.counts.tolist())
    return FederatedRun(
        spec, state, records, transport.communication, time.perf_counter() - start, _by_client(models),
    )


def _by_client(models: list[LocalModelReply]) -> dict[int, tuple[MixtureState, int]]:
    return {m.client_id: (m.state, m.n_samples) for m in models if m.state is not None}


def _federated_em(
    transport: Transport,
    spec: MethodSpec,
    local: LocalFitSettings,
    seed: int,
    tf: dict[str, Any],
    n_features: int | None,
    init_state: MixtureState | None,
    on_round: RoundCallback | None,
) -> FederatedRun:
    k = spec.fixed_k()
    start: str | MixtureState = spec.init if init_state is None else init_state
    one_shot: FedGenGMMResult | None = None
    records: dict[str, ClientRecord] = {}
    if spec.method == "hybrid" or (spec.method == "fedem" and init_state is None and spec.init == "fedgengmm"):
        # The hybrid: FedGenGMM's global model (of the EM's K) starts federated EM; the
        # clients already hold the transform, so EM requests carry only its id.
        one_shot = run_fedgengmm(
            transport, spec.local_settings(), spec.global_settings(n_components=k), seed,
            min_clients=spec.min_clients, n_features=n_features, robust=spec.robust_settings(), **tf,
        )
        records.update(one_shot.records)
        start = one_shot.global_model.state_
        tf = {"transform_id": tf["transform_id"]} if tf else {}
    fem = run_federated_em(
        transport, n_components=k, covariance_type=spec.covariance_type, max_rounds=spec.max_rounds,
        tol=spec.round_tol, reg_covar=spec.reg_covar, init=start, local=local, seed=seed,
        min_clients=spec.min_clients, on_round=on_round, records=records, robust=spec.robust_settings(),
        dp_noise=spec.dp_noise, **tf,
    )
    if one_shot is not None:
        fem.init_result = one_shot
    server = fem.server_seconds + (one_shot.server_seconds if one_shot is not None else 0.0)
    return FederatedRun(
        spec, fem.state, fem.records, fem.communication, server,
        one_shot.local_models if one_shot is not None else {}, fedgengmm=one_shot, fedem=fem,
    )


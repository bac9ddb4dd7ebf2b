"""The in-process runner: any method over a list of client arrays, with progress and phase timings."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from fedgmm.federated.baselines import centralized_model, local_only_models, union_model
from fedgmm.federated.fedem import RoundRecord, run_federated_em
from fedgmm.federated.fedgengmm import (
    DEFAULT_SYNTHETIC_FACTOR,
    GlobalFitSettings,
    collect_local_models,
    run_fedgengmm,
)
from fedgmm.federated.inprocess import InProcessTransport, ProgressCallback
from fedgmm.federated.local import (
    DEFAULT_MIN_SAMPLES_PER_COMPONENT,
    LocalFitSettings,
    resolve_local_components,
)
from fedgmm.federated.messages import STATUS_OK
from fedgmm.federated.preprocessing import Transform
from fedgmm.federated.transport import ClientRecord, CommunicationLog
from fedgmm.gaussian_mixture import GaussianMixture
from fedgmm.mixture import MixtureState
from fedgmm.types import CovarianceType

METHODS = ("centralized", "local", "union", "fedgengmm", "fedem", "hybrid")


@dataclass(frozen=True)
class MethodSpec:
    """One method and its settings, as a study cell names it.

    Attributes
    ----------
    method : {"centralized", "local", "union", "fedgengmm", "fedem", "hybrid"}
        ``"hybrid"`` is FedGenGMM followed by ``max_rounds`` federated EM rounds.
    n_components : int or (int, int)
        Global K (a range is chosen by BIC; FedGenGMM only).
    local_components : int, (int, int) or None
        Clients' K (fixed, BIC range, or None for ``2 × n_components``).
    synthetic_size : float or int
    max_rounds, em_tol : federated EM's round limit and tolerance.
    init : {"kmeans++", "fedgengmm"}
        Federated EM's initialisation.
    n_init : int
        EM restarts of the fits that run in one place — the centralized model and
        FedGenGMM's global fit on the server (local fits and federated EM run once).
    """

    method: str
    n_components: int | tuple[int, int] = 10
    covariance_type: CovarianceType = "full"
    local_components: int | tuple[int, int] | None = None
    synthetic_size: float | int = DEFAULT_SYNTHETIC_FACTOR
    reg_covar: float = 1e-6
    max_iter: int = 100
    tol: float = 1e-3
    max_rounds: int = 40
    em_tol: float = 1e-3
    init: str = "kmeans++"
    min_samples_per_component: int = DEFAULT_MIN_SAMPLES_PER_COMPONENT
    min_clients: int = 1
    n_init: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {list(METHODS)}.")

    def local_settings(self) -> LocalFitSettings:
        k_min, k_max = resolve_local_components(self.local_components, self.n_components)
        return LocalFitSettings(
            covariance_type=self.covariance_type, k_min=int(k_min), k_max=int(k_max), reg_covar=self.reg_covar,
            max_iter=self.max_iter, tol=self.tol, min_samples_per_component=self.min_samples_per_component,
        )

    def global_settings(self) -> GlobalFitSettings:
        return GlobalFitSettings(
            n_components=self.n_components, covariance_type=self.covariance_type,
            synthetic_size=self.synthetic_size, reg_covar=self.reg_covar, max_iter=self.max_iter, tol=self.tol,
            n_init=self.n_init,
        )

    def fixed_k(self) -> int:
        if isinstance(self.n_components, int):
            return self.n_components
        raise ValueError(f"{self.method} needs a fixed n_components, got the range {self.n_components}.")


@dataclass
class MethodRun:
    """What a method produced, how much it communicated, and where the time went.

    Attributes
    ----------
    model : GaussianMixture or None
        The global model (None for ``local``: there each client keeps its own).
    local_models : list of GaussianMixture
        Clients' own models where the method has them (local, union, FedGenGMM).
    communication : CommunicationLog
        Empty for the baselines that communicate nothing (centralized moves raw data,
        which is not counted).
    history : list of RoundRecord
        Federated EM rounds; ``round_states`` holds each round's model when asked for.
    client_seconds : float
        Summed compute time of all clients (their wall time if run in parallel is lower).
    server_seconds : float
        Server computation (union, sampling, global fit, M-steps).
    wall_seconds : float
    extra : dict
        Method-specific facts (synthetic size, chosen K, …).
    """

    spec: MethodSpec
    model: GaussianMixture | None
    local_models: list[GaussianMixture] = field(default_factory=list)
    communication: CommunicationLog = field(default_factory=CommunicationLog)
    records: list[ClientRecord] = field(default_factory=list)
    history: list[RoundRecord] = field(default_factory=list)
    round_states: list[MixtureState] = field(default_factory=list)
    client_seconds: float = 0.0
    server_seconds: float = 0.0
    wall_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def run_method(
    spec: MethodSpec,
    clients: Sequence[np.ndarray],
    *,
    seed: int,
    n_jobs: int = 1,
    progress: ProgressCallback | None = None,
    keep_round_states: bool = False,
    transform: Transform | None = None,
) -> MethodRun:
    """Run one method over in-process clients.

    Parameters
    ----------
    spec : MethodSpec
    clients : sequence of ndarray of shape (n_c, d)
    seed : int
        The run seed (the same seed gives the same model, here and in the Flower app).
    n_jobs : int
        Worker processes for the clients.
    progress : callable, optional
        ``progress(kind, n_done, n_total)`` after each client answers.
    keep_round_states : bool
        Keep every federated EM round's model (to score it per round).
    transform : Transform, optional
        Federated preprocessing: federated methods ship it to the clients with their first
        request (its bytes are counted); the baselines apply it directly.

    Returns
    -------
    MethodRun
    """
    start = time.perf_counter()
    run: MethodRun
    if transform is not None and spec.method in ("centralized", "local"):
        clients = [transform.apply(X) if np.asarray(X).shape[0] else np.empty((0, transform.n_features_out)) for X in clients]
    if spec.method == "centralized":
        t = time.perf_counter()
        model = centralized_model(
            clients, n_components=spec.fixed_k(), covariance_type=spec.covariance_type, reg_covar=spec.reg_covar,
            max_iter=spec.max_iter, tol=spec.tol, n_init=spec.n_init, seed=seed,
        )
        run = MethodRun(spec, model, server_seconds=time.perf_counter() - t, extra={"n_iter": model.n_iter_})
    elif spec.method == "local":
        t = time.perf_counter()
        replies = local_only_models(clients, spec.local_settings(), seed)
        client_seconds = time.perf_counter() - t
        ok = [r for r in replies if r.status == STATUS_OK and r.state is not None]
        locals_ = [GaussianMixture.from_state(r.state) for r in ok if r.state is not None]
        records = [
            ClientRecord(f"client {r.client_id}", r.client_id, r.status, r.reason, r.n_samples,
                         r.state.n_components if r.state is not None else 0)
            for r in replies
        ]
        run = MethodRun(
            spec, None, locals_, records=records, client_seconds=client_seconds,
            extra={"local_client_ids": [r.client_id for r in ok], "local_n_samples": [r.n_samples for r in ok]},
        )
    else:  # union, fedgengmm, fedem, hybrid: through the transport, so their bytes are counted
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            run = _run_federated(spec, clients, seed, n_jobs, progress, keep_round_states, transform)
    run.wall_seconds = time.perf_counter() - start
    return run


def _run_federated(
    spec: MethodSpec,
    clients: Sequence[np.ndarray],
    seed: int,
    n_jobs: int,
    progress: ProgressCallback | None,
    keep_round_states: bool,
    transform: Transform | None,
) -> MethodRun:
    data = [np.asarray(X, dtype=np.float64) for X in clients]
    tf = {"transform": transform.arrays(), "transform_id": transform.transform_id} if transform is not None else {}
    with InProcessTransport(data, n_jobs=n_jobs, progress=progress) as transport:
        if spec.method == "union":
            models, recs = collect_local_models(
                transport, spec.local_settings(), seed, min_clients=spec.min_clients,
                **tf,  # type: ignore[arg-type]
            )
            t = time.perf_counter()
            union = union_model(models)
            return MethodRun(
                spec, union, [GaussianMixture.from_state(m.state) for m in models if m.state is not None],
                transport.communication, list(recs.values()), client_seconds=transport.client_seconds,
                server_seconds=time.perf_counter() - t,
                extra={"local_components": [m.state.n_components for m in models if m.state is not None]},
            )
        if spec.method == "fedgengmm":
            res = run_fedgengmm(
                transport, spec.local_settings(), spec.global_settings(), seed, min_clients=spec.min_clients,
                **tf,  # type: ignore[arg-type]
            )
            return MethodRun(
                spec, res.global_model,
                [GaussianMixture.from_state(res.local_models[c][0]) for c in sorted(res.local_models)],
                res.communication, list(res.records.values()),
                client_seconds=transport.client_seconds, server_seconds=res.server_seconds,
                extra={"synthetic_size": res.synthetic_size, "n_components": res.global_model.n_components,
                       "local_components": [res.local_models[c][0].n_components for c in sorted(res.local_models)],
                       "bic": res.bic},
            )
        states: list[MixtureState] = []
        record: Callable[[RoundRecord, MixtureState], None] | None = (
            (lambda _r, s: states.append(s)) if keep_round_states else None
        )
        fem = run_federated_em(
            transport, n_components=spec.fixed_k(), covariance_type=spec.covariance_type,
            max_rounds=spec.max_rounds, tol=spec.em_tol, reg_covar=spec.reg_covar,
            init="fedgengmm" if spec.method == "hybrid" else spec.init,
            local=spec.local_settings(), global_settings=spec.global_settings(), seed=seed,
            min_clients=spec.min_clients, on_round=record,
            **tf,  # type: ignore[arg-type]
        )
        model = GaussianMixture.from_state(fem.state)
        model.converged_, model.n_iter_, model.lower_bound_ = fem.converged, fem.n_rounds, fem.lower_bound
        init_seconds = fem.init_result.server_seconds if fem.init_result is not None else 0.0
        return MethodRun(
            spec, model, [], fem.communication, list(fem.records.values()), fem.history, states,
            client_seconds=transport.client_seconds, server_seconds=fem.server_seconds + init_seconds,
            extra={"n_rounds": fem.n_rounds, "converged": fem.converged,
                   "init_state": fem.init_state},
        )

"""The in-process runner: any method (baselines included) over a list of client arrays, with phase timings."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from fedgmm.federated.baselines import centralized_model, local_only_models
from fedgmm.federated.dispatch import run_method
from fedgmm.federated.fedem import RoundRecord
from fedgmm.federated.messages import STATUS_OK
from fedgmm.federated.preprocessing import Transform
from fedgmm.federated.spec import MethodSpec
from fedgmm.federated.transport import ClientRecord, CommunicationLog, is_behaviour
from fedgmm.gaussian_mixture import GaussianMixture
from fedgmm.inprocess.transport import InProcessTransport, ProgressCallback
from fedgmm.mixture import MixtureState


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


def run_inprocess(
    spec: MethodSpec,
    clients: Sequence[np.ndarray],
    *,
    seed: int,
    n_jobs: int = 1,
    progress: ProgressCallback | None = None,
    keep_round_states: bool = False,
    transform: Transform | None = None,
) -> MethodRun:
    """Run one method over in-process clients: the baselines here, the federated methods by
    :func:`fedgmm.federated.dispatch.run_method` over an :class:`InProcessTransport`.

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
        tol, max_iter = spec.centralized_fit()
        model = centralized_model(
            clients, n_components=spec.fixed_k(), covariance_type=spec.covariance_type, reg_covar=spec.reg_covar,
            max_iter=max_iter, tol=tol, n_init=spec.n_init, seed=seed,
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
    data = [X if is_behaviour(X) else np.asarray(X, dtype=np.float64) for X in clients]  # attacks pass as they are
    states: list[MixtureState] = []
    record: Callable[[RoundRecord, MixtureState], None] | None = (
        (lambda _r, s: states.append(s)) if keep_round_states else None
    )
    with InProcessTransport(data, n_jobs=n_jobs, progress=progress) as transport:
        res = run_method(transport, spec, seed, transform=transform, on_round=record)
    model = GaussianMixture.from_state(res.state)
    locals_ = [GaussianMixture.from_state(res.local_models[c][0]) for c in sorted(res.local_models)]
    if res.fedem is not None:
        model.converged_, model.n_iter_, model.lower_bound_ = res.fedem.converged, res.fedem.n_rounds, res.fedem.lower_bound
        locals_ = []
    return MethodRun(
        spec, model, locals_, res.communication, list(res.records.values()),
        res.fedem.history if res.fedem is not None else [], states,
        client_seconds=transport.client_seconds, server_seconds=res.server_seconds,
        extra={**res.details(), "local_client_ids": sorted(res.local_models) if locals_ else []},
    )

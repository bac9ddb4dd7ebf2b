"""``FedGenGMM`` and ``FederatedEM``: scikit-learn-style facades over the federated algorithms."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import check_is_fitted

from fedgmm._random import SeedLike, as_seed
from fedgmm.em.fit import warn_empty_components
from fedgmm.exceptions import ClientExclusionWarning
from fedgmm.federated.dispatch import FederatedRun, run_method
from fedgmm.federated.fedem import RoundRecord
from fedgmm.federated.fedgengmm import (
    DEFAULT_SERVER_MAX_ITER,
    DEFAULT_SERVER_TOL,
    DEFAULT_SYNTHETIC_FACTOR,
)
from fedgmm.federated.local import DEFAULT_MIN_SAMPLES_PER_COMPONENT
from fedgmm.federated.private import guarantee
from fedgmm.federated.private_rounds import fedem_guarantee
from fedgmm.federated.robust import DEFAULT_MAX_CLIENT_WEIGHT
from fedgmm.federated.spec import INITS, MethodSpec, default_max_rounds, parse_local_components
from fedgmm.federated.transport import ClientRecord, CommunicationLog, client_rows, is_behaviour
from fedgmm.gaussian_mixture import GaussianMixture
from fedgmm.inprocess.transport import InProcessTransport
from fedgmm.mixture import MixtureState


def check_clients(clients: Any) -> list[Any]:
    """Validate a list of client arrays: 2-D, numeric, one shared feature count.

    Empty, tiny or non-finite clients pass here: the federation excludes them and records
    why. Clients with different feature counts cannot form one federation and raise. A
    :class:`~fedgmm.federated.transport.ClientBehaviour` (an object with ``.data`` and
    ``.tamper``) is checked on its ``.data`` and returned as is, its rows as float64.

    Returns
    -------
    list of ndarray of shape (n_c, d) or ClientBehaviour
    """
    if isinstance(clients, np.ndarray) or not isinstance(clients, Sequence) or len(clients) == 0:
        raise ValueError("clients must be a non-empty list of 2-D arrays, one (n_c, d) array per client.")
    client_feature_names(clients)
    out = []
    for i, X in enumerate(clients):
        arr = np.asarray(client_rows(X))
        if arr.ndim != 2:
            raise ValueError(f"client {i} must be a 2-D array (n_samples, n_features), got shape {arr.shape}.")
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"client {i} has non-numeric data (dtype {arr.dtype}).")
        out.append(arr.astype(np.float64, copy=False))
    dims = {X.shape[1] for X in out}
    if len(dims) > 1:
        first = out[0].shape[1]
        odd = [i for i, X in enumerate(out) if X.shape[1] != first]
        raise ValueError(
            f"clients have different feature counts: client 0 has {first}, clients {odd} have "
            f"{[out[i].shape[1] for i in odd]}. Every client must hold the same features in the same order."
        )
    return [_Behaving(X, c) if is_behaviour(c) else X for X, c in zip(out, clients, strict=True)]


def client_feature_names(clients: Sequence[Any]) -> list[str] | None:
    """The clients' shared column names (DataFrames), or None when no client names its columns.

    Raises
    ------
    ValueError
        If two clients name their columns differently (names or order), naming the columns.
    """
    named = []
    for i, X in enumerate(clients):
        columns = getattr(getattr(X, "data", X), "columns", None)
        if columns is not None:
            named.append((i, [str(c) for c in columns]))
    if not named:
        return None
    first_id, first = named[0]
    for i, names in named[1:]:
        if names != first:
            missing = [c for c in first if c not in names]
            extra = [c for c in names if c not in first]
            what = (f"missing {missing}, unexpected {extra}" if missing or extra
                    else f"the same columns in another order {names}")  # fmt: skip
            raise ValueError(
                f"client {i}'s columns differ from client {first_id}'s {first}: {what}. Every client must hold "
                "the same features in the same order."
            )
    return first if len(named) == len(clients) else None


def _set_feature_names(estimator: Any, clients: Sequence[Any]) -> None:
    names = client_feature_names(clients)
    if names is not None:
        estimator.feature_names_in_ = np.asarray(names, dtype=object)
        estimator.global_model_.feature_names_in_ = estimator.feature_names_in_


class _Behaving:
    """A :class:`ClientBehaviour` with its rows validated (``data`` as float64)."""

    def __init__(self, data: np.ndarray, behaviour: Any) -> None:
        self.data, self.behaviour = data, behaviour

    def tamper(self, kind: str, reply: Any) -> Any:
        return self.behaviour.tamper(kind, reply)


def _fit_tolerances(tol: float | None, fit_tol: float, round_tol: float, owner: str) -> tuple[float, float]:
    """``(fit_tol, round_tol)`` with the deprecated ``tol`` mapped onto the names it stood for."""
    if tol is None:
        return fit_tol, round_tol
    if owner == "FederatedEM":
        warnings.warn(
            "FederatedEM(tol=...) is deprecated and will be removed in the next release: it set both "
            "tolerances; use round_tol= (federated EM rounds) and fit_tol= (each local/global EM fit).",
            FutureWarning, stacklevel=3,
        )
        return tol, tol
    warnings.warn(
        f"{owner}(tol=...) is deprecated and will be removed in the next release; use fit_tol= (each EM fit).",
        FutureWarning, stacklevel=3,
    )
    return tol, round_tol


def _run(data: list[Any], spec: MethodSpec, seed: int, n_jobs: int, **kwargs: Any) -> tuple[FederatedRun, float]:
    """Run ``spec`` over an in-process transport of checked clients; (run, client seconds)."""
    with InProcessTransport(data, n_jobs=n_jobs) as transport:
        result = run_method(transport, spec, seed, **kwargs)
    return result, transport.client_seconds


def _warn_exclusions(records: dict[str, ClientRecord]) -> None:
    for rec in records.values():
        if rec.status != "ok":
            warnings.warn(f"{rec.source} {rec.status}: {rec.reason}", ClientExclusionWarning, stacklevel=3)


class _FederatedDensity(DensityMixin, BaseEstimator):  # type: ignore[misc]
    """Prediction methods shared by the facades: all delegate to ``global_model_``."""

    global_model_: GaussianMixture

    def score_samples(self, X: Any) -> np.ndarray:
        """Log-density of each row under the global model, ``(n,)``."""
        check_is_fitted(self, "global_model_")
        return self.global_model_.score_samples(X)

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood per row under the global model (nats)."""
        check_is_fitted(self, "global_model_")
        return self.global_model_.score(X)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable global component of each row, ``(n,)``."""
        check_is_fitted(self, "global_model_")
        return self.global_model_.predict(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Posterior of each global component, ``(n, K)``."""
        check_is_fitted(self, "global_model_")
        return self.global_model_.predict_proba(X)

    def sample(self, n_samples: int = 1, *, rng: SeedLike = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw rows from the global model (see :meth:`GaussianMixture.sample`)."""
        check_is_fitted(self, "global_model_")
        return self.global_model_.sample(n_samples, rng=rng)

    def bic(self, X: Any) -> float:
        """BIC of the global model on ``X``."""
        check_is_fitted(self, "global_model_")
        return self.global_model_.bic(X)

    def save(self, path: Any, *, extra: dict[str, Any] | None = None) -> Any:
        """Write the global model file; a DP run's metadata records its guarantee under ``"privacy"``."""
        check_is_fitted(self, "global_model_")
        meta = dict(extra or {})
        if getattr(self, "privacy_", None) is not None:
            meta["privacy"] = {**self.privacy_, "spent": [list(p) for p in self.privacy_spent_]}
        return self.global_model_.save(path, extra=meta or None)


class FedGenGMM(_FederatedDensity):
    """One-shot federated GMM: local GMMs up once, global GMM fitted on samples of their union.

    Parameters
    ----------
    n_components : int or (int, int), default=10
        Global K, or a ``(min, max)`` range chosen by BIC on the synthetic set.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Of the local and the global models.
    local_components : int, (int, int), list or None, default=None
        Each client's K: fixed, or the BIC-best in a ``(min, max)`` range (each client
        chooses its own), or a list with one int or range per client (the ``i``-th for
        ``clients[i]``). None: a fixed ``4 × n_components`` — detailed, regularised local
        models keep the union faithful, where BIC on small clients blurs it (see
        :func:`~fedgmm.federated.spec.resolve_local_components`). Capped per client at
        ``n_c // min_samples_per_component``.
    synthetic_size : float or int, default=5.0
        Synthetic-set size: a float is a multiple of ``Σ n_c``, an int a row count.
    reg_covar : float, default=1e-6
        Added to the covariance diagonals of the global fit (and of the local fits when
        ``local_reg_covar`` is None).
    local_reg_covar : float, "auto", "heldout" or None, default="auto"
        ``reg_covar`` of the clients' local fits. ``"auto"``: ``0.05 ×`` each client's mean
        per-feature variance (0.05 on standardised data, the measured best); a float:
        that value; None: ``reg_covar``; ``"heldout"``: each client picks its K and
        reg_covar on a held-out quarter of its rows (recorded in ``client_records_``).
        The union is de-regularised by what each client used before sampling, so the
        global fit regularises once.
    max_iter, fit_tol
        EM settings of the local fits and of each start of the global fit (``fit_tol``:
        convergence tolerance of each fit).
    n_init : int, default=10
        Starts of the server's global fit (or reduction).
    server_tol : float, default=1e-5
    server_max_iter : int, default=500
        The best start of the global fit then runs on until its mean log-likelihood
        changes by less than ``server_tol``, for at most ``server_max_iter`` more
        iterations (0: not at all; not for ``aggregation="reduce"``). Measured on issue 9's
        first regime: 0.01–0.03 nats/sample for ~10 % more server time.
    local_n_init : int, default=1
        Starts of each client's local fit.
    aggregation : {"sample", "reduce"}, default="sample"
        The server step: EM on samples of the union (the paper), or the sample-free
        reduction of the union to K (deterministic, cost independent of Σ n_c; lost
        0.3–0.8 nats/sample against sampling when measured; fixed K only).
    tol : float, optional
        Deprecated alias of ``fit_tol`` (FutureWarning).
    min_samples_per_component : int, default=5
    min_clients : int, default=1
        Fewest usable local models to go on with.
    robust : bool, default=True
        Robust aggregation: every client's contribution is checked against the others'
        before merging (implausible ones rejected, counts capped, a distance filter over
        the uploaded mixtures), each decision in ``client_records_``. False is the
        paper's plain recipe (the server's synthetic set stays bounded either way).
    max_client_weight : float or None, default=0.5
        Largest share of the federation's weight one client gets (robust runs; None: no cap).
    random_state : int, Generator or None
        Run seed (clients derive theirs from it and their index).
    epsilon : float or None, default=None
        Record-level (ε, δ)-DP per client (add/remove one row; accountant: ``dp-accounting``
        PLD), None off. Needs ``clip_bound`` (these facades run no preprocessing).
    delta : float, default=1e-5
    clip_bound : float or None, default=None
        A public bound on the rows' Euclidean norm; rows are clipped to it (DP runs).
    dp_noise_seed : int or None, default=None
        None: each client seeds its DP noise with 128 secret bits of its own (from the
        OS), so no one else — the server included — can regenerate and subtract it; two
        fits then differ. An int replaces the secret: same seed, same model, **but the
        noise is then known to whoever knows this seed, the server included** — for tests
        and reproducible measurements, not a guarantee against the server (``privacy_``
        records ``"noise_source"``).
    n_jobs : int, default=1
        Processes fitting the clients in parallel.

    Attributes
    ----------
    global_model_ : GaussianMixture
    local_models_ : list of GaussianMixture
        One per client kept, in client order.
    local_client_ids_ : list of int
        The client index of each local model.
    union_model_ : GaussianMixture
        The size-weighted union of the local models (``Σ K_c`` components).
    client_records_ : list of ClientRecord
        Status of every client (``ok``, ``excluded``, ``rejected``, ``failed``) and why.
    communication_ : CommunicationLog
        ``.rounds``, ``.bytes_up``, ``.bytes_down`` and per-client detail, measured on the
        serialised messages.
    synthetic_size_ : int
    n_components_ : int
        The global K used (chosen by BIC when a range was given).
    seed_ : int
    privacy_spent_ : list of (float, float)
        DP runs: the ``(epsilon, delta)`` each kept client's release spent, in
        ``local_client_ids_`` order (never above the target); empty otherwise.
    privacy_ : dict or None
        The guarantee (target epsilon, delta, accountant, mechanism, neighbours, scope,
        noise_source).
    """

    def __init__(
        self,
        n_components: int | tuple[int, int] = 10,
        *,
        covariance_type: str = "full",
        local_components: int | tuple[int, int] | Sequence[Any] | None = None,
        synthetic_size: float | int = DEFAULT_SYNTHETIC_FACTOR,
        reg_covar: float = 1e-6,
        local_reg_covar: float | str | None = "auto",
        max_iter: int = 100,
        fit_tol: float = 1e-3,
        n_init: int = 10,
        local_n_init: int = 1,
        server_tol: float = DEFAULT_SERVER_TOL,
        server_max_iter: int = DEFAULT_SERVER_MAX_ITER,
        aggregation: str = "sample",
        min_samples_per_component: int = DEFAULT_MIN_SAMPLES_PER_COMPONENT,
        min_clients: int = 1,
        robust: bool = True,
        max_client_weight: float | None = DEFAULT_MAX_CLIENT_WEIGHT,
        random_state: SeedLike = None,
        n_jobs: int = 1,
        tol: float | None = None,
        epsilon: float | None = None,
        delta: float = 1e-5,
        clip_bound: float | None = None,
        dp_noise_seed: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.local_components = local_components
        self.synthetic_size = synthetic_size
        self.reg_covar = reg_covar
        self.local_reg_covar = local_reg_covar
        self.max_iter = max_iter
        self.fit_tol = fit_tol
        self.n_init = n_init
        self.local_n_init = local_n_init
        self.server_tol = server_tol
        self.server_max_iter = server_max_iter
        self.aggregation = aggregation
        self.min_samples_per_component = min_samples_per_component
        self.min_clients = min_clients
        self.robust = robust
        self.max_client_weight = max_client_weight
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.tol = tol
        self.epsilon = epsilon
        self.delta = delta
        self.clip_bound = clip_bound
        self.dp_noise_seed = dp_noise_seed

    def _spec(self) -> MethodSpec:
        fit_tol, _ = _fit_tolerances(self.tol, self.fit_tol, 1e-3, "FedGenGMM")
        n_comp = self.n_components
        return MethodSpec(
            "fedgengmm", n_components=tuple(n_comp) if isinstance(n_comp, Sequence) else n_comp,  # type: ignore[arg-type]
            covariance_type=self.covariance_type,  # type: ignore[arg-type]
            local_components=parse_local_components(self.local_components), synthetic_size=self.synthetic_size,
            reg_covar=self.reg_covar,
            local_reg_covar=self.local_reg_covar, max_iter=self.max_iter, fit_tol=fit_tol, n_init=self.n_init,
            local_n_init=self.local_n_init, server_tol=self.server_tol, server_max_iter=self.server_max_iter,
            aggregation=self.aggregation, min_samples_per_component=self.min_samples_per_component,
            min_clients=self.min_clients, robust=self.robust, max_client_weight=self.max_client_weight,
            epsilon=self.epsilon, delta=self.delta, clip_bound=self.clip_bound, dp_noise_seed=self.dp_noise_seed,
        )

    def fit(self, clients: Sequence[Any], y: Any = None) -> FedGenGMM:
        """Run FedGenGMM over in-process clients.

        Parameters
        ----------
        clients : list of array-like of shape (n_c, d)
            One array per client; only parameters and counts cross to the server.
        y : ignored

        Returns
        -------
        self : FedGenGMM
        """
        data = check_clients(clients)
        spec = self._spec()
        self.seed_ = as_seed(self.random_state)
        run, client_seconds = _run(data, spec, self.seed_, self.n_jobs, n_features=client_rows(data[0]).shape[1])
        assert run.fedgengmm is not None
        result = run.fedgengmm
        self.global_model_ = result.global_model
        self.local_client_ids_ = sorted(result.local_models)
        self.local_models_ = [GaussianMixture.from_state(result.local_models[c][0]) for c in self.local_client_ids_]
        self.union_model_ = GaussianMixture.from_state(result.union)
        self.client_records_ = [result.records[f"client {i}"] for i in range(len(data))]
        self.communication_: CommunicationLog = result.communication
        self.synthetic_size_ = result.synthetic_size
        self.n_components_ = result.global_model.n_components
        self.bic_ = result.bic
        self.server_seconds_ = result.server_seconds
        self.client_seconds_ = client_seconds
        self.n_features_in_ = client_rows(data[0]).shape[1]
        self.privacy_spent_ = [result.privacy_spent[c] for c in self.local_client_ids_ if c in result.privacy_spent]
        self.privacy_ = None if self.epsilon is None else guarantee(self.epsilon, self.delta, self.dp_noise_seed)
        _set_feature_names(self, clients)
        _warn_exclusions(result.records)
        if self.synthetic_size_:  # the fits inside the run are quiet (their ConvergenceWarnings are expected)
            warn_empty_components(self.global_model_.weights_, self.synthetic_size_, "FedGenGMM's global fit on the synthetic set")
        return self


class FederatedEM(_FederatedDensity):
    """Federated EM: every round the clients send E-step statistics, the server runs the M-step.

    From the same initial mixture it reaches exactly the model of centralized EM on the
    pooled data, at the cost of a round trip per EM iteration.

    Parameters
    ----------
    n_components : int, default=10
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    max_rounds : int or None, default=None
        Most EM rounds; None: 40, or 10 with ``epsilon`` (under DP every round runs and
        the budget is split over them: 10 is the measured configuration).
    round_tol : float, default=1e-3
        Stop when the federated mean log-likelihood changes by less than this.
    fit_tol : float, default=1e-3
        Convergence tolerance of each EM fit: the clients' local fits of the
        initialisation round and the hybrid's global fit.
    tol : float, optional
        Deprecated (FutureWarning): set both ``round_tol`` and ``fit_tol``, as it did.
    init : {"kmeans++", "fedgengmm"}, MixtureState or GaussianMixture, default="kmeans++"
        ``"kmeans++"``: clients upload local models once, the server seeds K components by
        weighted k-means++ over their means and moment-matches (no raw data on the
        server); ``"fedgengmm"``: start from a FedGenGMM model (the hybrid); a fitted
        mixture: start from it, with no initialisation round.
    local_components : int, (int, int), list or None, default=None
        Clients' local models for the initialisation round (None: ``4 × n_components``;
        a list: one per client, as in :class:`FedGenGMM`).
    synthetic_size : float or int, default=5.0
        For the hybrid's FedGenGMM step.
    reg_covar : float, default=1e-6
    local_reg_covar : float, "auto", "heldout" or None, default="auto"
        ``reg_covar`` of the clients' local fits of the initialisation round (as in
        :class:`FedGenGMM`; None: ``reg_covar``).
    n_init : int, default=10
        Starts of the global fit of the hybrid's FedGenGMM step (``init="fedgengmm"``).
    max_iter : int, default=100
        Most iterations of each local/global EM fit.
    min_samples_per_component : int, default=5
    min_clients : int, default=1
        Fewest clients whose statistics must arrive in a round.
    robust : bool, default=True
        Robust aggregation: every client's contribution is checked against the others'
        before merging (implausible ones rejected, counts capped, a distance filter over
        the uploaded mixtures), each decision in ``client_records_``. False is the
        paper's plain recipe (the server's synthetic set stays bounded either way).
    max_client_weight : float or None, default=0.5
        Largest share of the federation's weight one client gets (robust runs; None: no cap).
    random_state : int, Generator or None
    n_jobs : int, default=1
    epsilon : float or None, default=None
        Record-level (ε, δ)-DP per client (add/remove one row; accountant: ``dp-accounting``
        PLD), None off: local DP — each client noises its own statistics every round
        (:mod:`fedgmm.federated.private_rounds`). One budget per client covers the
        ``"kmeans++"`` initialisation upload (a DP-EM local fit) and ``max_rounds`` rounds,
        all of which run (``round_tol`` does not apply); a client refuses, with a recorded
        reason, any release beyond it. Not with ``init="fedgengmm"``. Needs ``clip_bound``
        (these facades run no preprocessing).
    delta : float, default=1e-5
    clip_bound : float or None, default=None
        A public bound on the rows' Euclidean norm; rows are clipped to it (DP runs).
    dp_noise : {"local", "distributed"}, default="local"
        ``"distributed"``: each client adds ``1/sqrt(C)`` of the calibrated noise so the
        sum carries it — the guarantee holds for the sum only, under secure aggregation,
        which the in-process transport does not have (use it to measure central DP's
        utility).
    dp_noise_seed : int or None, default=None
        None: each client seeds its DP noise with 128 secret bits of its own (from the
        OS), so no one else — the server included — can regenerate and subtract it; two
        fits then differ. An int replaces the secret: same seed, same model, **but the
        noise is then known to whoever knows this seed, the server included** — for tests
        and reproducible measurements, not a guarantee against the server (``privacy_``
        records ``"noise_source"``).

    Attributes
    ----------
    global_model_ : GaussianMixture
    init_model_ : GaussianMixture
    n_rounds_ : int
        EM rounds run (the initialisation round is counted in ``communication_.rounds``).
    converged_ : bool
    history_ : list of RoundRecord
        Per round: federated log-likelihood, clients merged, cumulative bytes up/down.
    communication_ : CommunicationLog
    client_records_ : list of ClientRecord
    seed_ : int
    privacy_spent_ : list of (float, float)
        DP runs: the ``(epsilon, delta)`` each client that took part spent over the whole
        run (its ledger's accountant value, as last reported), in client order (never
        above the target); empty otherwise.
    privacy_client_ids_ : list of int
        The client index of each ``privacy_spent_`` entry.
    privacy_ : dict or None
        The guarantee (target epsilon, delta, accountant, mechanism, neighbours, scope,
        noise_source).
    """

    def __init__(
        self,
        n_components: int = 10,
        *,
        covariance_type: str = "full",
        max_rounds: int | None = None,
        round_tol: float = 1e-3,
        fit_tol: float = 1e-3,
        init: str | MixtureState | GaussianMixture = "kmeans++",
        local_components: int | tuple[int, int] | Sequence[Any] | None = None,
        synthetic_size: float | int = DEFAULT_SYNTHETIC_FACTOR,
        reg_covar: float = 1e-6,
        local_reg_covar: float | str | None = "auto",
        max_iter: int = 100,
        n_init: int = 10,
        min_samples_per_component: int = DEFAULT_MIN_SAMPLES_PER_COMPONENT,
        min_clients: int = 1,
        robust: bool = True,
        max_client_weight: float | None = DEFAULT_MAX_CLIENT_WEIGHT,
        random_state: SeedLike = None,
        n_jobs: int = 1,
        tol: float | None = None,
        epsilon: float | None = None,
        delta: float = 1e-5,
        clip_bound: float | None = None,
        dp_noise: str = "local",
        dp_noise_seed: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.max_rounds = max_rounds
        self.round_tol = round_tol
        self.fit_tol = fit_tol
        self.init = init
        self.local_components = local_components
        self.synthetic_size = synthetic_size
        self.reg_covar = reg_covar
        self.local_reg_covar = local_reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.min_samples_per_component = min_samples_per_component
        self.min_clients = min_clients
        self.robust = robust
        self.max_client_weight = max_client_weight
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.tol = tol
        self.epsilon = epsilon
        self.delta = delta
        self.clip_bound = clip_bound
        self.dp_noise = dp_noise
        self.dp_noise_seed = dp_noise_seed

    def fit(self, clients: Sequence[Any], y: Any = None) -> FederatedEM:
        """Run federated EM over in-process clients.

        Parameters
        ----------
        clients : list of array-like of shape (n_c, d)
        y : ignored

        Returns
        -------
        self : FederatedEM
        """
        if not isinstance(self.n_components, int | np.integer) or isinstance(self.n_components, bool):
            raise ValueError(
                f"FederatedEM takes one n_components (an int >= 1), got {self.n_components!r}; a (min, max) BIC "
                "range is FedGenGMM only (FedGenGMM(n_components=(2, 8)))."
            )
        data = check_clients(clients)
        fit_tol, round_tol = _fit_tolerances(self.tol, self.fit_tol, self.round_tol, "FederatedEM")
        init_state: MixtureState | None = None
        if isinstance(self.init, GaussianMixture):
            init_state = self.init.state_
        elif isinstance(self.init, MixtureState):
            init_state = self.init
        elif self.init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, a MixtureState or a fitted GaussianMixture, got {self.init!r}.")
        n_features = client_rows(data[0]).shape[1]
        if init_state is not None and init_state.n_features != n_features:
            raise ValueError(f"init has {init_state.n_features} features, the clients have {n_features}.")
        max_rounds = default_max_rounds(self.epsilon) if self.max_rounds is None else self.max_rounds
        spec = MethodSpec(
            "fedem", n_components=self.n_components, covariance_type=self.covariance_type,  # type: ignore[arg-type]
            max_rounds=max_rounds, round_tol=round_tol, fit_tol=fit_tol,
            init=self.init if isinstance(self.init, str) else "kmeans++",
            local_components=parse_local_components(self.local_components),
            synthetic_size=self.synthetic_size, reg_covar=self.reg_covar, local_reg_covar=self.local_reg_covar,
            max_iter=self.max_iter, n_init=self.n_init, min_samples_per_component=self.min_samples_per_component,
            min_clients=self.min_clients, robust=self.robust, max_client_weight=self.max_client_weight,
            epsilon=self.epsilon, delta=self.delta, clip_bound=self.clip_bound, dp_noise=self.dp_noise,
            dp_noise_seed=self.dp_noise_seed,
        )
        self.seed_ = as_seed(self.random_state)
        run, client_seconds = _run(data, spec, self.seed_, self.n_jobs, init_state=init_state)
        assert run.fedem is not None
        result = run.fedem
        self.global_model_ = GaussianMixture.from_state(result.state)
        self.global_model_.converged_ = result.converged
        self.global_model_.n_iter_ = result.n_rounds
        self.global_model_.lower_bound_ = result.lower_bound
        self.init_model_ = GaussianMixture.from_state(result.init_state)
        self.n_rounds_ = result.n_rounds
        self.converged_ = result.converged
        self.history_: list[RoundRecord] = result.history
        self.communication_: CommunicationLog = result.communication
        self.client_records_ = [result.records.get(f"client {i}") for i in range(len(data))]
        self.server_seconds_ = run.server_seconds
        self.client_seconds_ = client_seconds
        self.n_features_in_ = n_features
        self.privacy_client_ids_ = sorted(result.privacy_spent)
        self.privacy_spent_ = [result.privacy_spent[c] for c in self.privacy_client_ids_]
        self.privacy_ = None if self.epsilon is None else fedem_guarantee(
            self.epsilon, self.delta, spec.max_rounds, self.dp_noise, self.dp_noise_seed
        )
        _set_feature_names(self, clients)
        _warn_exclusions(result.records)
        return self

"""One description of a method run (:class:`MethodSpec`) and the parsers of the notions it shares."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedgmm.federated.fedgengmm import (
    DEFAULT_SERVER_MAX_ITER,
    DEFAULT_SERVER_TOL,
    DEFAULT_SYNTHETIC_FACTOR,
    GlobalFitSettings,
)
from fedgmm.federated.local import (
    DEFAULT_AUTO_REG_FACTOR,
    DEFAULT_MIN_SAMPLES_PER_COMPONENT,
    LocalFitSettings,
)
from fedgmm.federated.robust import DEFAULT_MAX_CLIENT_WEIGHT, RobustSettings
from fedgmm.types import COVARIANCE_TYPES, CovarianceType

#: Every method a spec can name. ``centralized`` and ``local`` move raw data or nothing,
#: so only the in-process runner runs them; the others go through a transport.
METHODS = ("centralized", "local", "union", "fedgengmm", "fedem", "hybrid")
#: Methods that run over a transport (:func:`fedgmm.federated.dispatch.run_method`).
FEDERATED_METHODS = ("union", "fedgengmm", "fedem", "hybrid")
#: Federated EM's initialisations.
INITS = ("kmeans++", "fedgengmm")
#: Where private federated EM adds its noise (:data:`fedgmm.federated.private_rounds.NOISE_MODES`).
DP_NOISE_MODES = ("local", "distributed")
#: Default local K, as a multiple of the global K (see :func:`resolve_local_components`).
DEFAULT_LOCAL_FACTOR = 4
#: Federated EM's round limit without DP, and with ``epsilon`` set: under DP every round
#: runs and the budget is split over them, so each round's noise grows with the limit;
#: 10 is what the privacy benchmark and study measured (see :func:`default_max_rounds`).
DEFAULT_MAX_ROUNDS = 40
DP_MAX_ROUNDS = 10
#: How the server turns the union into the global model: ``"sample"`` (the paper: sample
#: the union, fit EM) or ``"reduce"`` (sample-free, :func:`fedgmm.federated.reduce.reduce_mixture`).
AGGREGATIONS = ("sample", "reduce")
#: ``local_reg_covar`` keywords: ``"auto"`` (0.05 × each client's mean per-feature variance)
#: and ``"heldout"`` (K and reg_covar chosen on each client's held-out rows).
LOCAL_REG_MODES = ("auto", "heldout")
#: Named baselines a study may list beside :data:`METHODS`: ``name -> (method, spec overrides)``.
#: ``"fedgengmm-paper"`` is the paper's recipe: BIC local K in 1–10, the local fits use the
#: global ``reg_covar``, one server start, sampling.
BASELINES: dict[str, tuple[str, dict[str, Any]]] = {
    "fedgengmm-paper": (
        "fedgengmm", {"local_components": (1, 10), "local_reg_covar": None, "n_init": 1, "aggregation": "sample"}
    ),
}


def parse_method(method: object) -> str:
    """``method`` checked against :data:`METHODS`."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}.")
    return str(method)


def parse_init(init: object) -> str:
    """Federated EM's ``init`` checked against :data:`INITS`."""
    if init not in INITS:
        raise ValueError(f"init must be one of {list(INITS)}, got {init!r}.")
    return str(init)


def parse_n_components(value: object) -> int | tuple[int, int]:
    """The global K: an int >= 1, or a ``(min, max)`` range with ``1 <= min <= max``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"n_components must be >= 1, got {value}.")
        return int(value)
    if isinstance(value, list | tuple) and len(value) == 2:
        lo, hi = (int(v) for v in value)
        if not 1 <= lo <= hi:
            raise ValueError(f"n_components range needs 1 <= min <= max, got {(lo, hi)}.")
        return lo, hi
    raise ValueError(f"n_components must be an int or a (min, max) pair, got {value!r}.")


LocalComponents = int | tuple[int, int] | tuple[tuple[int, int], ...] | None


def _components_entry(value: object, what: str) -> int | tuple[int, int]:
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"{what} must be >= 1, got {value}.")
        return int(value)
    if isinstance(value, list | tuple) and len(value) == 2 and all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value
    ):
        lo, hi = (int(v) for v in value)
        if not 1 <= lo <= hi:
            raise ValueError(f"local components need 1 <= min <= max, got ({lo}, {hi}).")
        return lo, hi
    raise ValueError(f"{what} must be an int or a (min, max) pair, got {value!r}.")


def parse_local_components(value: object) -> LocalComponents:
    """Clients' K: None (the default), an int >= 1, a ``(min, max)`` BIC range, or one per client.

    One value per client is a list (of length other than 2, or holding a pair) whose
    ``i``-th entry — an int or a ``(min, max)`` range — is client id ``i``'s (the position
    of the client in the in-process clients list, or a Flower node's ``partition-id``).
    It is stored as a tuple of ``(min, max)`` pairs, e.g. ``[2, 20, 20]`` →
    ``((2, 2), (20, 20), (20, 20))``; two clients need pairs, ``[[2, 2], [20, 20]]``,
    since ``[2, 20]`` is a range.
    """
    if value is None:
        return None
    if isinstance(value, list | tuple):
        is_range = len(value) == 2 and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value)
        if not is_range:
            if not value:
                raise ValueError("local_components per client needs at least one entry.")
            entries = [_components_entry(v, f"local_components[{i}]") for i, v in enumerate(value)]
            return tuple((e, e) if isinstance(e, int) else e for e in entries)
    try:
        return _components_entry(value, "local_components")
    except ValueError as exc:
        raise ValueError(
            f"local_components must be None, an int, a (min, max) pair or one per client, got {value!r} ({exc})"
        ) from None


def per_client_components(local_components: object) -> tuple[tuple[int, int], ...]:
    """The ``(k_min, k_max)`` of each client id when ``local_components`` is per client, else ``()``."""
    parsed = parse_local_components(local_components)
    if isinstance(parsed, tuple) and parsed and isinstance(parsed[0], tuple):
        return parsed  # type: ignore[return-value]
    return ()


def resolve_local_components(local_components: object, n_components: int | tuple[int, int]) -> tuple[int, int]:
    """The clients' ``(k_min, k_max)``: a fixed K, a BIC range, or the default for ``None``.

    ``None`` means a fixed ``DEFAULT_LOCAL_FACTOR × K`` = ``4 × K`` (the largest global K
    asked for). Local models are the only description of the clients' data the server
    gets, so they should err on the side of detail, regularised (``local_reg_covar``) so
    the detail generalises. Measured for issue 9 (``scripts/oneshot_ablation.py``;
    Fashion-MNIST 20 clients × ~700 rows, 16 whitened PCA dims, K = 20; satellite 10 ×
    ~200, 12 dims, K = 8; 2 seeds; gap to centralized at α = 0.1 / 1 / 100): local
    ``2K`` with ``reg_covar`` 1e-6 lost 0.37 / 0.85 / 0.88 nats/sample, local ``4K`` with
    local ``reg_covar`` 0.05 and 3 server starts 0.04 / 0.19 / 0.30 (satellite
    −0.02 / 0.16 / 0.29); BIC ranges (the paper) lost 0.4–1.5. Each client still caps K
    at ``n_c // min_samples_per_component``. For one K per client the range spans them all.
    """
    parsed = parse_local_components(local_components)
    if parsed is None:
        k = max(n_components) if isinstance(n_components, tuple) else int(n_components)
        return DEFAULT_LOCAL_FACTOR * k, DEFAULT_LOCAL_FACTOR * k
    if isinstance(parsed, int):
        return parsed, parsed
    per = per_client_components(parsed)
    if per:
        return min(lo for lo, _ in per), max(hi for _, hi in per)
    return parsed  # type: ignore[return-value]


def parse_synthetic_size(value: object) -> float | int:
    """A positive float (multiple of ``Σ n_c``) or int (rows)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) or value <= 0:
        raise ValueError(f"synthetic_size must be a positive float (multiple of Σ n_c) or int (rows), got {value!r}.")
    return value  # type: ignore[return-value]


def default_max_rounds(epsilon: float | None) -> int:
    """Federated EM's round limit when the user gives none: :data:`DP_MAX_ROUNDS` with
    ``epsilon`` set (the configuration the privacy figures were measured with), else
    :data:`DEFAULT_MAX_ROUNDS`."""
    return DEFAULT_MAX_ROUNDS if epsilon is None else DP_MAX_ROUNDS


@dataclass(frozen=True)
class MethodSpec:
    """Every hyper-parameter of one method run, checked once.

    The facades (:class:`~fedgmm.inprocess.FedGenGMM`, :class:`~fedgmm.inprocess.FederatedEM`),
    the study config (``[model]``) and the Flower run config all build this record; the
    algorithms read their settings from it through :meth:`local_settings` and
    :meth:`global_settings` and nowhere else.

    Attributes
    ----------
    method : {"centralized", "local", "union", "fedgengmm", "fedem", "hybrid"}
        ``"hybrid"`` is FedGenGMM followed by ``max_rounds`` federated EM rounds.
    n_components : int or (int, int)
        Global K (a range is chosen by BIC on the synthetic set; FedGenGMM only).
    covariance_type : {"full", "tied", "diag", "spherical"}
        Of the local and the global models.
    local_components : int, (int, int), list or None
        Clients' K: fixed, a BIC range, one per client id (see
        :func:`parse_local_components`), or None for ``4 × n_components``.
    synthetic_size : float or int
        FedGenGMM's synthetic set: a multiple of ``Σ n_c`` (float) or a row count (int).
    reg_covar : float
        Added to the covariance diagonals of the global (server) fits and the M-steps.
    local_reg_covar : float, "auto", "heldout" or None
        The clients' local fits' ``reg_covar``. ``"auto"`` (default): each client uses
        ``0.05 ×`` its mean per-feature variance — exactly 0.05 on standardised data, the
        value measured best for issue 9 (whitened PCA features, variance 1), and the same
        relative smoothing on raw-scale data. A float is absolute; None: ``reg_covar``;
        ``"heldout"``: each client picks K and reg_covar on a held-out quarter of its rows
        (:func:`~fedgmm.federated.local_selection.select_local_model`; its choice is in the
        client's record). Clients report the value they used, and the server takes it off
        before sampling.
    max_iter : int
        Most EM iterations of each fit.
    fit_tol : float
        Convergence tolerance of each EM fit (local, each start of the global fit).
    server_tol, server_max_iter : float, int
        The fits that run in one place go further: FedGenGMM's best global start runs on
        until its mean log-likelihood changes by less than ``server_tol`` (at most
        ``server_max_iter`` more iterations, 0: not at all), and the centralized reference
        is fitted to ``server_tol`` with ``max_iter + server_max_iter`` iterations, so the
        gap is not measured against an unconverged reference. Default ``1e-5`` / 500:
        measured on issue 9's r1 regime (``scripts/server_tol_probe.py``) the global model
        gained 0.01–0.03 nats/sample for ~10 % of the server's time; the centralized
        reference at ``fit_tol = 1e-3`` had stopped up to 1.2 nats/sample short of its
        converged score (α = 0.1), which made FedGenGMM look better than centralized.
    max_rounds : int
        Most federated EM rounds. The facades (:class:`~fedgmm.FederatedEM`, the Flower run
        config) default it by :func:`default_max_rounds`: 40, or 10 with ``epsilon``.
    round_tol : float
        Federated EM stops when the federated mean log-likelihood changes by less.
    init : {"kmeans++", "fedgengmm"}
        Federated EM's initialisation (the hybrid always starts from FedGenGMM).
    min_samples_per_component : int
        Clients cap K at ``n_c // min_samples_per_component``.
    min_clients : int
        Fewest usable clients per round.
    n_init : int
        EM restarts of the fits that run in one place — the centralized model and
        FedGenGMM's global fit (or reduction) on the server. Default 10 (issue 9's
        acceptance, ``benchmarks/oneshot_acceptance.py``, 12 cells: the FedGenGMM gap
        summed over them 2.78 → 2.12 nats/sample against 3 starts; r1 α = 0.1 seed 1
        0.52 → 0.18, r2 α = 100 seed 0 0.39 → 0.03, r2 α = 1 seed 1 0.01 → 0.28 — the
        best bound on the synthetic set is not always the best on held-back rows; 1 → 3
        had gained ~0.1 at α = 0.1). Server time grows linearly: ~3× the global fit.
    local_n_init : int
        EM restarts of each client's local fit.
    robust : bool
        Robust aggregation (default): plausibility checks of every client's contribution,
        the distance filter over uploaded mixtures, count caps (see
        :mod:`fedgmm.federated.robust`). False is the paper's plain recipe; the synthetic
        set stays bounded either way.
    max_client_weight : float or None
        Largest share of the federation's weight one client gets (robust runs; None: no cap).
    aggregation : {"sample", "reduce"}
        FedGenGMM's server step: ``"sample"`` (default; the paper: sample the union, refit
        by EM) or ``"reduce"`` (sample-free reduction of the union to K,
        :func:`~fedgmm.federated.reduce.reduce_mixture`: deterministic and its cost
        independent of Σ n_c, but it lost 0.3–0.8 nats/sample against sampling in issue 9's
        measurement). ``"reduce"`` needs a fixed ``n_components``.
    epsilon : float or None
        Record-level (ε, δ)-DP per client (add/remove one row; :mod:`fedgmm.privacy`), None
        off. FedGenGMM: each client's local fit is DP-EM and the upload carries a noisy
        count; federated EM: each client's per-round statistics are noised (local DP),
        composed with its private initialisation upload over ``max_rounds`` (all of them
        run; :mod:`fedgmm.federated.private_rounds`). Not for the union or the hybrid.
        Needs federated standardisation/PCA (its per-axis scale bounds the rows) or
        ``clip_bound``.
    delta : float
        The δ of the guarantee, in (0, 1).
    clip_bound : float or None
        A public bound on the rows' Euclidean norm (in the coordinates the clients fit in),
        used when no preprocessing transform gives one; rows are clipped to it.
    dp_noise : {"local", "distributed"}
        Private federated EM: ``"local"`` (default) — every client's reply carries the
        calibrated noise, the guarantee holds against a server that sees each reply;
        ``"distributed"`` — each client adds ``1/sqrt(C)`` of it so the sum of the C replies
        carries it: the guarantee holds for the sum only, under secure aggregation (the
        in-process transport has none: there it measures central DP's utility).
    dp_noise_seed : int or None
        None (default): each client seeds its DP noise with 128 secret bits of its own,
        drawn from the OS, so no one else can regenerate the noise. An int replaces that
        secret — same seed, same model — **but the noise is then known to whoever knows
        this seed, the server included**: for tests and reproducible measurements, not a
        guarantee against the server (the privacy record says ``"noise_source":
        "reproducible-seed ..."``).
    """

    method: str
    n_components: int | tuple[int, int] = 10
    covariance_type: CovarianceType = "full"
    local_components: LocalComponents = None
    synthetic_size: float | int = DEFAULT_SYNTHETIC_FACTOR
    reg_covar: float = 1e-6
    local_reg_covar: float | str | None = "auto"
    max_iter: int = 100
    fit_tol: float = 1e-3
    max_rounds: int = DEFAULT_MAX_ROUNDS
    round_tol: float = 1e-3
    init: str = "kmeans++"
    min_samples_per_component: int = DEFAULT_MIN_SAMPLES_PER_COMPONENT
    min_clients: int = 1
    n_init: int = 10
    local_n_init: int = 1
    server_tol: float = DEFAULT_SERVER_TOL
    server_max_iter: int = DEFAULT_SERVER_MAX_ITER
    robust: bool = True
    max_client_weight: float | None = DEFAULT_MAX_CLIENT_WEIGHT
    aggregation: str = "sample"
    epsilon: float | None = None
    delta: float = 1e-5
    clip_bound: float | None = None
    dp_noise: str = "local"
    dp_noise_seed: int | None = None

    def __post_init__(self) -> None:
        parse_method(self.method)
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {list(COVARIANCE_TYPES)}, got {self.covariance_type!r}.")
        object.__setattr__(self, "n_components", parse_n_components(self.n_components))
        object.__setattr__(self, "local_components", parse_local_components(self.local_components))
        parse_synthetic_size(self.synthetic_size)
        parse_init(self.init)
        _check_number("reg_covar", self.reg_covar, low=0.0)
        if isinstance(self.local_reg_covar, str):
            if self.local_reg_covar not in LOCAL_REG_MODES:
                raise ValueError(
                    f"local_reg_covar must be a number >= 0, None or one of {list(LOCAL_REG_MODES)}, "
                    f"got {self.local_reg_covar!r}."
                )
        elif self.local_reg_covar is not None:
            _check_number("local_reg_covar", self.local_reg_covar, low=0.0)
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {list(AGGREGATIONS)}, got {self.aggregation!r}.")
        if self.aggregation == "reduce" and self.method in ("fedgengmm", "hybrid") and not isinstance(
            self.n_components, int
        ):
            raise ValueError("aggregation='reduce' needs a fixed n_components (BIC over K needs samples).")
        _check_number("fit_tol", self.fit_tol, low=0.0)
        _check_number("round_tol", self.round_tol, low=0.0)
        _check_number("server_tol", self.server_tol, low=0.0)
        _check_int("server_max_iter", self.server_max_iter, 0)
        for name in ("max_iter", "n_init", "local_n_init", "min_samples_per_component", "min_clients"):
            _check_int(name, getattr(self, name), 1)
        _check_int("max_rounds", self.max_rounds, 0)
        if not isinstance(self.robust, bool | np.bool_):
            raise ValueError(f"robust must be True or False, got {self.robust!r}.")
        self.robust_settings()  # checks max_client_weight
        _check_privacy(self.epsilon, self.delta, self.clip_bound)
        if self.dp_noise not in DP_NOISE_MODES:
            raise ValueError(f"dp_noise must be one of {list(DP_NOISE_MODES)}, got {self.dp_noise!r}.")
        if self.dp_noise_seed is not None:
            _check_int("dp_noise_seed", self.dp_noise_seed, 0)
            if self.dp_noise_seed >= 2**63:
                raise ValueError(f"dp_noise_seed must be below 2**63 (it travels as a signed 64-bit int), got {self.dp_noise_seed}.")
        if self.epsilon is not None and self.method in ("fedem", "hybrid") and self.max_rounds < 1:
            raise ValueError("epsilon with federated EM needs max_rounds >= 1: the round limit is part of the budget.")

    @property
    def client_reg_covar(self) -> float:
        """The absolute ``reg_covar`` of the clients' local fits (0 when each client sets its own).

        It is the floor the server's screen checks covariance eigenvalues against; with
        ``"auto"`` / ``"heldout"`` the clients report theirs instead.
        """
        if isinstance(self.local_reg_covar, str):
            return 0.0
        return float(self.reg_covar if self.local_reg_covar is None else self.local_reg_covar)

    def robust_settings(self) -> RobustSettings:
        """How the server screens and weights the clients' contributions."""
        weight = self.max_client_weight
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, numbers.Real)):
            raise ValueError(f"max_client_weight must be a number in (0, 1] or None, got {weight!r}.")
        return RobustSettings(enabled=bool(self.robust), max_client_weight=None if weight is None else float(weight))

    def local_settings(self) -> LocalFitSettings:
        """How clients fit their local models."""
        k_min, k_max = resolve_local_components(self.local_components, self.n_components)
        mode = self.local_reg_covar if isinstance(self.local_reg_covar, str) else "absolute"
        return LocalFitSettings(
            covariance_type=self.covariance_type, k_min=int(k_min), k_max=int(k_max), reg_covar=self.client_reg_covar,
            max_iter=self.max_iter, tol=self.fit_tol, n_init=self.local_n_init,
            min_samples_per_component=self.min_samples_per_component, reg_covar_mode=mode,
            reg_covar_factor=DEFAULT_AUTO_REG_FACTOR, per_client=per_client_components(self.local_components),
            epsilon=None if self.epsilon is None else float(self.epsilon), delta=float(self.delta),
            clip_bound=None if self.clip_bound is None else float(self.clip_bound),
            dp_noise_seed=None if self.dp_noise_seed is None else int(self.dp_noise_seed),
        )

    def global_settings(self, n_components: int | tuple[int, int] | None = None) -> GlobalFitSettings:
        """How the server fits the global model (``n_components`` overrides the spec's K)."""
        return GlobalFitSettings(
            n_components=self.n_components if n_components is None else n_components,
            covariance_type=self.covariance_type, synthetic_size=self.synthetic_size, reg_covar=self.reg_covar,
            max_iter=self.max_iter, tol=self.fit_tol, n_init=self.n_init, aggregation=self.aggregation,
            server_tol=self.server_tol, server_max_iter=self.server_max_iter,
        )

    def centralized_fit(self) -> tuple[float, int]:
        """``(tol, max_iter)`` of the centralized reference: as far as the server's fit goes."""
        return min(self.fit_tol, self.server_tol), self.max_iter + self.server_max_iter

    def fixed_k(self) -> int:
        """The global K; a range raises (only FedGenGMM chooses K by BIC)."""
        if isinstance(self.n_components, int):
            return self.n_components
        raise ValueError(f"{self.method} needs a fixed n_components, got the range {self.n_components}.")


def baseline_spec(name: str, template: MethodSpec) -> MethodSpec:
    """The spec of a named baseline (:data:`BASELINES`) from a study's template."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {list(BASELINES)}.")
    from dataclasses import replace

    method, overrides = BASELINES[name]
    return replace(template, method=method, **overrides)


def _check_number(name: str, value: Any, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) >= low:
        raise ValueError(f"{name} must be a number >= {low:g}, got {value!r}.")


def _check_privacy(epsilon: Any, delta: Any, clip_bound: Any) -> None:
    """``epsilon`` > 0 or None, ``0 < delta < 1``, ``clip_bound`` > 0 or None."""
    for name, value in (("epsilon", epsilon), ("clip_bound", clip_bound)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < np.inf
        ):
            raise ValueError(f"{name} must be a finite number > 0 or None (off), got {value!r}.")
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0 < float(delta) < 1:
        raise ValueError(f"delta must be a number in (0, 1), got {delta!r}.")


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")

"""Client-side computations: the local GMM fit (fixed K or BIC), E-step statistics, data moments."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from fedgmm.em.stats import SufficientStatistics, e_step
from fedgmm.exceptions import DegenerateCovarianceError
from fedgmm.federated.local_selection import DEFAULT_REG_COVARS, select_local_model
from fedgmm.federated.messages import STATUS_EXCLUDED, STATUS_OK, LocalModelReply, MomentsReply
from fedgmm.gaussian_mixture import GaussianMixture
from fedgmm.mixture import MixtureState
from fedgmm.types import CovarianceType

#: A local component needs at least this many of the client's rows by default.
DEFAULT_MIN_SAMPLES_PER_COMPONENT = 5
#: How a client sets its local ``reg_covar``: ``"absolute"`` (the value sent), ``"auto"``
#: (``reg_covar_factor ×`` its mean per-feature variance) or ``"heldout"`` (K and
#: ``reg_covar`` chosen on held-out rows, :func:`~fedgmm.federated.local_selection.select_local_model`).
REG_COVAR_MODES = ("absolute", "auto", "heldout")
#: ``"auto"`` local ``reg_covar`` as a multiple of the client's mean per-feature variance:
#: measured best on standardised (whitened) features, where it is exactly 0.05.
DEFAULT_AUTO_REG_FACTOR = 0.05


@dataclass(frozen=True)
class LocalFitSettings:
    """How a client fits its local GMM (sent by the server in the request).

    Attributes
    ----------
    covariance_type : {"full", "tied", "diag", "spherical"}
    k_min, k_max : int
        Candidate numbers of components; ``k_min == k_max`` fixes K, otherwise the client
        picks the K with the lowest BIC on its own data.
    reg_covar, max_iter, tol, n_init
        As in :class:`fedgmm.GaussianMixture`; ``reg_covar`` is the absolute value of the
        ``"absolute"`` mode, and the floor the server's screen checks (0 in the other modes).
    min_samples_per_component : int
        K is capped at ``n_c // min_samples_per_component`` (at least 1) so a small client
        never fits components it cannot support; the cap is recorded in the reply.
    reg_covar_mode : {"absolute", "auto", "heldout"}
        See :data:`REG_COVAR_MODES`. The client reports the ``reg_covar`` it used.
    reg_covar_factor : float
        ``"auto"``: ``reg_covar = reg_covar_factor × mean_j Var(X[:, j])`` of the client's rows.
    per_client : tuple of (int, int)
        One ``(k_min, k_max)`` per client id (empty: ``(k_min, k_max)`` for every client).
        Client ``c`` uses entry ``c``: the client id is the position of the client in the
        in-process clients list, or the Flower node's ``partition-id``.
    """

    covariance_type: CovarianceType = "full"
    k_min: int = 1
    k_max: int = 10
    reg_covar: float = 1e-6
    max_iter: int = 100
    tol: float = 1e-3
    n_init: int = 1
    min_samples_per_component: int = DEFAULT_MIN_SAMPLES_PER_COMPONENT
    reg_covar_mode: str = "absolute"
    reg_covar_factor: float = DEFAULT_AUTO_REG_FACTOR
    per_client: tuple[tuple[int, int], ...] = ()
    #: Record-level DP of the local fit (None: off; :mod:`fedgmm.federated.private`).
    epsilon: float | None = None
    delta: float = 1e-5
    clip_bound: float | None = None
    feature_scale: tuple[float, ...] = ()
    #: Reproducible DP noise (None: each client's secret; :func:`fedgmm.federated.private.noise_generator`).
    dp_noise_seed: int | None = None

    def __post_init__(self) -> None:
        for lo, hi in ((self.k_min, self.k_max), *self.per_client):
            if not 1 <= lo <= hi:
                raise ValueError(f"local components need 1 <= min <= max, got ({lo}, {hi}).")
        if self.min_samples_per_component < 1:
            raise ValueError("min_samples_per_component must be >= 1.")
        if self.reg_covar_mode not in REG_COVAR_MODES:
            raise ValueError(f"reg_covar_mode must be one of {list(REG_COVAR_MODES)}, got {self.reg_covar_mode!r}.")
        if not self.reg_covar_factor >= 0:
            raise ValueError(f"reg_covar_factor must be >= 0, got {self.reg_covar_factor!r}.")

    def for_client(self, client_id: int) -> LocalFitSettings:
        """The settings client ``client_id`` fits with (its own K from :attr:`per_client`).

        Raises
        ------
        ValueError
            If :attr:`per_client` has no entry for ``client_id``.
        """
        if not self.per_client:
            return self
        if not 0 <= client_id < len(self.per_client):
            raise ValueError(
                f"local_components lists {len(self.per_client)} clients; client id {client_id} has no entry."
            )
        lo, hi = self.per_client[client_id]
        return replace(self, k_min=lo, k_max=hi, per_client=())

    def client_reg_covar(self, X: np.ndarray) -> float:
        """The ``reg_covar`` of a fixed-K or BIC local fit of ``X`` (shape ``(n_c, d)``)."""
        if self.reg_covar_mode != "auto":
            return float(self.reg_covar)
        scale = float(np.mean(np.var(X, axis=0)))
        reg = self.reg_covar_factor * scale
        return reg if np.isfinite(reg) and reg > 0 else max(float(self.reg_covar), 1e-6)


def client_seed(seed: int, client_id: int) -> int:
    """The seed a client uses for its own random steps: independent per client, reproducible."""
    return int(np.random.SeedSequence([int(seed), int(client_id), 0xC11E]).generate_state(1)[0])


def check_client_data(X: np.ndarray) -> str:
    """Why ``X`` cannot be used by a client, or "" when it can.

    ``X`` must be a 2-D numeric array with at least two finite rows.
    """
    if X.ndim != 2:
        return f"client data must be 2-D (n_samples, n_features), got shape {X.shape}."
    if X.dtype.kind not in "fiu":
        return f"client data must be numeric, got dtype {X.dtype}."
    n = X.shape[0]
    if n == 0:
        return "client has no samples."
    bad = int(np.count_nonzero(~np.all(np.isfinite(X), axis=1)))
    if bad:
        return f"client data has {bad} row(s) with NaN or infinity; clean or impute them before federating."
    if n < 2:
        return "client has 1 sample; at least 2 are needed to fit a Gaussian."
    return ""


def candidate_components(n_samples: int, settings: LocalFitSettings) -> tuple[list[int], str]:
    """Candidate K values a client of ``n_samples`` rows can support, and a note if capped."""
    cap = max(1, n_samples // settings.min_samples_per_component)
    ks = [k for k in range(settings.k_min, settings.k_max + 1) if k <= cap]
    if ks:
        note = "" if settings.k_max <= cap else f"K capped at {cap} for {n_samples} samples."
        return ks, note
    return [cap], f"K reduced from {settings.k_min} to {cap}: only {n_samples} samples."


def _fit(X: np.ndarray, k: int, settings: LocalFitSettings, seed: int, reg_covar: float) -> GaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(
            k,
            covariance_type=settings.covariance_type,
            reg_covar=reg_covar,
            max_iter=settings.max_iter,
            tol=settings.tol,
            n_init=settings.n_init,
            random_state=seed,
        ).fit(X)


def fit_local_model(X: np.ndarray, settings: LocalFitSettings, *, client_id: int, seed: int) -> LocalModelReply:
    """Fit the client's local GMM ``θ_c``: FedGenGMM's client step.

    Parameters
    ----------
    X : ndarray of shape (n_c, d)
    settings : LocalFitSettings
        Client ``client_id`` reads its own K from ``settings.per_client`` when given.
    client_id : int
    seed : int
        The run's seed; the client derives its own with :func:`client_seed`.

    Returns
    -------
    LocalModelReply
        ``status="ok"`` with the model of the chosen K (and the BIC of every candidate
        when K was chosen by BIC) and the ``reg_covar`` the fit used, or
        ``status="excluded"`` with the reason. A fit that fails on a degenerate covariance
        is retried with one component fewer. In the ``"heldout"`` mode the reason records
        the held-out choice (K, reg_covar, rows held out, why).
    """
    X = np.asarray(X)
    problem = check_client_data(X)
    if not problem:
        try:
            settings = settings.for_client(client_id)
        except ValueError as exc:
            problem = str(exc)
    if problem:
        return LocalModelReply(client_id, STATUS_EXCLUDED, int(X.shape[0]) if X.ndim else 0, None, problem)
    X = X.astype(np.float64, copy=False)
    if settings.reg_covar_mode == "heldout":
        return _heldout_local_model(X, settings, client_id=client_id, seed=seed)
    n = X.shape[0]
    reg = settings.client_reg_covar(X)
    ks, note = candidate_components(n, settings)
    rs = client_seed(seed, client_id)
    notes = [note] if note else []
    bic: dict[int, float] = {}
    best: tuple[float, GaussianMixture] | None = None
    for k in ks:
        try:
            model = _fit(X, k, settings, rs, reg)
        except DegenerateCovarianceError:
            notes.append(f"K={k} gave a degenerate covariance.")
            continue
        score = model.bic(X)
        bic[k] = score
        if best is None or score < best[0]:
            best = (score, model)
    if best is None:  # every candidate degenerate: fall back to fewer components
        for k in range(min(ks) - 1, 0, -1):
            try:
                model = _fit(X, k, settings, rs, reg)
            except DegenerateCovarianceError:
                continue
            notes.append(f"fell back to K={k}.")
            best = (model.bic(X), model)
            break
    if best is None:
        reason = " ".join(notes) + " Every local fit was degenerate; increase reg_covar or scale the data."
        return LocalModelReply(client_id, STATUS_EXCLUDED, n, None, reason.strip())
    chosen = best[1]
    return LocalModelReply(
        client_id, STATUS_OK, n, chosen.state_, " ".join(notes), bic if len(ks) > 1 else None, reg_covar=reg
    )


def _heldout_local_model(X: np.ndarray, settings: LocalFitSettings, *, client_id: int, seed: int) -> LocalModelReply:
    """The ``"heldout"`` mode: K and ``reg_covar`` chosen on the client's held-out rows.

    Candidate K: the range ``k_min … k_max``, or for a fixed K the quarter, half and
    whole of it (K, 2K and 4K under the default ``4 × K``); candidate ``reg_covar``:
    :data:`~fedgmm.federated.local_selection.DEFAULT_REG_COVARS` times the client's mean
    per-feature variance (the listed values on standardised data).
    """
    if settings.k_min == settings.k_max:
        k = settings.k_max
        ks = sorted({max(1, k // 4), max(1, k // 2), k})
    else:
        ks = list(range(settings.k_min, settings.k_max + 1))
    scale = float(np.mean(np.var(X, axis=0)))
    scale = scale if np.isfinite(scale) and scale > 0 else 1.0
    try:
        state, choice = select_local_model(
            X, ks, reg_covars=[r * scale for r in DEFAULT_REG_COVARS], covariance_type=settings.covariance_type,
            min_samples_per_component=settings.min_samples_per_component, max_iter=settings.max_iter,
            tol=settings.tol, n_init=settings.n_init, seed=client_seed(seed, client_id),
        )
    except (DegenerateCovarianceError, ValueError) as exc:
        return LocalModelReply(client_id, STATUS_EXCLUDED, X.shape[0], None, f"held-out local selection failed: {exc}")
    reason = f"held-out selection: K={choice.n_components}, reg_covar={choice.reg_covar:.3g}; {choice.reason}"
    return LocalModelReply(client_id, STATUS_OK, X.shape[0], state, reason, reg_covar=choice.reg_covar)


def em_statistics(X: np.ndarray, state: MixtureState, shift: np.ndarray) -> tuple[SufficientStatistics | None, str]:
    """Federated EM's client step: the E-step statistics of the client's data under ``state``.

    Returns
    -------
    (SufficientStatistics or None, reason)
        None with the reason when the client's data is unusable.
    """
    X = np.asarray(X)
    problem = check_client_data(X)
    if problem:  # a 1-row client is excluded here too, as in FedGenGMM's upload
        return None, problem
    if X.shape[1] != state.n_features:
        return None, f"client data has {X.shape[1]} features, the model has {state.n_features}."
    return e_step(X.astype(np.float64, copy=False), state, shift=shift), ""


def data_moments(X: np.ndarray, client_id: int) -> MomentsReply:
    """Federated preprocessing's client step: ``(n_c, Σ x, Σ x xᵀ)`` of the client's rows."""
    X = np.asarray(X)
    problem = check_client_data(X)
    if problem and not (X.ndim == 2 and X.shape[0] == 1 and "1 sample" in problem):
        return MomentsReply(client_id, STATUS_EXCLUDED, int(X.shape[0]) if X.ndim else 0, None, None, problem)
    X = X.astype(np.float64, copy=False)
    return MomentsReply(client_id, STATUS_OK, X.shape[0], X.sum(axis=0), X.T @ X)

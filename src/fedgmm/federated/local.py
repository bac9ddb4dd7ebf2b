"""Client-side computations: the local GMM fit (fixed K or BIC), E-step statistics, data moments."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from fedgmm.em.stats import SufficientStatistics, e_step
from fedgmm.exceptions import DegenerateCovarianceError
from fedgmm.federated.messages import STATUS_EXCLUDED, STATUS_OK, LocalModelReply, MomentsReply
from fedgmm.gaussian_mixture import GaussianMixture
from fedgmm.mixture import MixtureState
from fedgmm.types import CovarianceType

#: A local component needs at least this many of the client's rows by default.
DEFAULT_MIN_SAMPLES_PER_COMPONENT = 5


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
        As in :class:`fedgmm.GaussianMixture`.
    min_samples_per_component : int
        K is capped at ``n_c // min_samples_per_component`` (at least 1) so a small client
        never fits components it cannot support; the cap is recorded in the reply.
    """

    covariance_type: CovarianceType = "full"
    k_min: int = 1
    k_max: int = 10
    reg_covar: float = 1e-6
    max_iter: int = 100
    tol: float = 1e-3
    n_init: int = 1
    min_samples_per_component: int = DEFAULT_MIN_SAMPLES_PER_COMPONENT

    def __post_init__(self) -> None:
        if not 1 <= self.k_min <= self.k_max:
            raise ValueError(f"local components need 1 <= min <= max, got ({self.k_min}, {self.k_max}).")
        if self.min_samples_per_component < 1:
            raise ValueError("min_samples_per_component must be >= 1.")


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


def _fit(X: np.ndarray, k: int, settings: LocalFitSettings, seed: int) -> GaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(
            k,
            covariance_type=settings.covariance_type,
            reg_covar=settings.reg_covar,
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
    client_id : int
    seed : int
        The run's seed; the client derives its own with :func:`client_seed`.

    Returns
    -------
    LocalModelReply
        ``status="ok"`` with the model of the chosen K (and the BIC of every candidate
        when K was chosen by BIC), or ``status="excluded"`` with the reason. A fit that
        fails on a degenerate covariance is retried with one component fewer.
    """
    X = np.asarray(X)
    problem = check_client_data(X)
    if problem:
        return LocalModelReply(client_id, STATUS_EXCLUDED, int(X.shape[0]) if X.ndim else 0, None, problem)
    X = X.astype(np.float64, copy=False)
    n = X.shape[0]
    ks, note = candidate_components(n, settings)
    rs = client_seed(seed, client_id)
    notes = [note] if note else []
    bic: dict[int, float] = {}
    best: tuple[float, GaussianMixture] | None = None
    for k in ks:
        try:
            model = _fit(X, k, settings, rs)
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
                model = _fit(X, k, settings, rs)
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
        client_id, STATUS_OK, n, chosen.state_, " ".join(notes), bic if len(ks) > 1 else None
    )


def em_statistics(X: np.ndarray, state: MixtureState, shift: np.ndarray) -> tuple[SufficientStatistics | None, str]:
    """Federated EM's client step: the E-step statistics of the client's data under ``state``.

    Returns
    -------
    (SufficientStatistics or None, reason)
        None with the reason when the client's data is unusable.
    """
    X = np.asarray(X)
    problem = check_client_data(X)
    if problem and not (X.ndim == 2 and X.shape[0] == 1 and "1 sample" in problem):
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

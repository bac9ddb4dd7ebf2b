"""A client picks its own local model (K and reg_covar) on a held-out part of its rows, no extra round."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from fedgmm.exceptions import DegenerateCovarianceError
from fedgmm.gaussian_mixture import GaussianMixture
from fedgmm.mixture import MixtureState
from fedgmm.types import CovarianceType

#: Candidate local ``reg_covar`` values, for standardised features.
DEFAULT_REG_COVARS: tuple[float, ...] = (1e-6, 1e-3, 1e-2, 0.05, 0.1, 0.3)
#: Candidate local K as multiples of the global K.
DEFAULT_K_FACTORS: tuple[int, ...] = (1, 2, 4)
#: Share of a client's rows held out to score the candidates.
DEFAULT_HOLDOUT_FRACTION = 0.25
#: A local component needs at least this many training rows.
DEFAULT_MIN_SAMPLES_PER_COMPONENT = 5


@dataclass(frozen=True)
class LocalSelection:
    """What a client chose for its local model, and why.

    Attributes
    ----------
    n_components : int
        The chosen K (of the model fitted on all rows).
    reg_covar : float
        The chosen ``reg_covar``.
    scores : dict of (int, float) to float
        Held-out mean log-likelihood per sample of every candidate ``(K, reg_covar)`` that
        could be fitted (empty when the client was too small to hold rows out).
    n_train, n_holdout : int
        Rows used to fit the candidates and to score them.
    reason : str
        One sentence: how the choice was made (and what was skipped or degraded).
    """

    n_components: int
    reg_covar: float
    scores: dict[tuple[int, float], float] = field(default_factory=dict)
    n_train: int = 0
    n_holdout: int = 0
    reason: str = ""


def candidate_components(
    n_components: int,
    n_samples: int,
    *,
    factors: Sequence[int] = DEFAULT_K_FACTORS,
    min_samples_per_component: int = DEFAULT_MIN_SAMPLES_PER_COMPONENT,
) -> list[int]:
    """Local K candidates ``factor × n_components`` that ``n_samples`` rows can support.

    Each is capped at ``n_samples // min_samples_per_component`` (at least 1); duplicates
    after capping are dropped, order kept ascending.
    """
    if n_components < 1 or n_samples < 1 or min_samples_per_component < 1:
        raise ValueError("n_components, n_samples and min_samples_per_component must be >= 1.")
    cap = max(1, n_samples // min_samples_per_component)
    return sorted({min(int(f) * n_components, cap) for f in factors if f >= 1} or {min(n_components, cap)})


def _fit(
    X: np.ndarray, k: int, reg_covar: float, covariance_type: CovarianceType, seed: int,
    max_iter: int, tol: float, n_init: int,
) -> GaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(
            k, covariance_type=covariance_type, reg_covar=reg_covar, max_iter=max_iter, tol=tol,
            n_init=n_init, random_state=seed,
        ).fit(X)


def select_local_model(
    X: np.ndarray,
    n_components: Sequence[int] | int,
    *,
    reg_covars: Sequence[float] = DEFAULT_REG_COVARS,
    covariance_type: CovarianceType = "full",
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    min_samples_per_component: int = DEFAULT_MIN_SAMPLES_PER_COMPONENT,
    max_iter: int = 100,
    tol: float = 1e-3,
    n_init: int = 1,
    seed: int,
) -> tuple[MixtureState, LocalSelection]:
    """Choose the local ``(K, reg_covar)`` on held-out rows, then refit on all rows.

    The client shuffles its rows with ``seed``, fits every candidate on the first
    ``1 − holdout_fraction`` of them, scores each on the rest (mean log-likelihood per
    sample), and refits the best candidate on all its rows. Nothing leaves the client
    but the final model, so this costs no communication.

    Parameters
    ----------
    X : ndarray of shape (n_c, d)
        The client's rows (finite).
    n_components : int or sequence of int
        Candidate K values (e.g. from :func:`candidate_components`); each is capped so that
        every component has ``min_samples_per_component`` training rows.
    reg_covars : sequence of float
        Candidate ``reg_covar`` values (non-negative).
    covariance_type : {"full", "tied", "diag", "spherical"}
    holdout_fraction : float in (0, 1)
    min_samples_per_component : int
    max_iter, tol, n_init
        As in :class:`fedgmm.GaussianMixture`.
    seed : int
        Seeds the split and every fit.

    Returns
    -------
    (MixtureState, LocalSelection)
        The model fitted on all rows and the record of the choice. A client with fewer than
        ``2 × min_samples_per_component × min(K)`` rows holds nothing out: it fits the
        smallest K (capped by its rows) with the largest ``reg_covar`` and says so.

    Raises
    ------
    ValueError
        On empty candidate lists, a holdout fraction outside (0, 1) or fewer than 2 rows.
    DegenerateCovarianceError
        If even the fallback fit is degenerate.
    """
    X = np.asarray(X, dtype=np.float64)
    ks = sorted({int(n_components)} if isinstance(n_components, int | np.integer) else {int(k) for k in n_components})
    regs = sorted({float(r) for r in reg_covars})
    if not ks or not regs or ks[0] < 1 or regs[0] < 0:
        raise ValueError("need at least one K >= 1 and one reg_covar >= 0.")
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}.")
    n = X.shape[0]
    if n < 2:
        raise ValueError(f"a client needs at least 2 rows to fit a Gaussian, got {n}.")
    ss = np.random.SeedSequence([int(seed), 0x10CA1])
    split_seed, fit_seed = (int(s) for s in ss.generate_state(2))
    fit_args = (covariance_type, fit_seed, max_iter, tol, n_init)
    n_hold = round(holdout_fraction * n)
    n_train = n - n_hold
    if n < 2 * min_samples_per_component * ks[0] or n_hold < 2:
        k = max(1, min(ks[0], n // min_samples_per_component))
        reason = (
            f"only {n} rows (< 2 × {min_samples_per_component} × {ks[0]}): no held-out choice; "
            f"fixed K={k} and the largest reg_covar={regs[-1]:g}."
        )
        state = _fit(X, k, regs[-1], *fit_args).state_
        return state, LocalSelection(k, regs[-1], {}, n, 0, reason)
    order = np.random.default_rng(split_seed).permutation(n)
    train, hold = X[order[:n_train]], X[order[n_train:]]
    cap = max(1, n_train // min_samples_per_component)
    usable = sorted({min(k, cap) for k in ks})
    scores: dict[tuple[int, float], float] = {}
    failed: list[str] = []
    for k in usable:
        for reg in regs:
            try:
                model = _fit(train, k, reg, *fit_args)
            except DegenerateCovarianceError:
                failed.append(f"K={k}, reg_covar={reg:g}")
                continue
            scores[(k, reg)] = float(np.mean(model.score_samples(hold)))
    notes = []
    if usable != ks:
        notes.append(f"K capped at {cap} for {n_train} training rows")
    if failed:
        notes.append("degenerate: " + "; ".join(failed))
    if not scores:
        k = usable[0]
        state = _fit(X, k, regs[-1], *fit_args).state_
        reason = f"every candidate was degenerate; fixed K={k}, reg_covar={regs[-1]:g}. " + ". ".join(notes)
        return state, LocalSelection(k, regs[-1], scores, n_train, n_hold, reason.strip())
    (k, reg), best = max(scores.items(), key=lambda kv: kv[1])
    reason = (
        f"best held-out log-likelihood {best:.3f} of {len(scores)} candidates "
        f"({n_train} rows fitted, {n_hold} held out)"
    )
    reason = "; ".join([reason, *notes]) + "."
    state = _fit(X, k, reg, *fit_args).state_
    return state, LocalSelection(k, reg, scores, n_train, n_hold, reason)

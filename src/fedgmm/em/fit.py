"""The EM fit loop: restarts, convergence on the mean log-likelihood, best-of-n_init."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from fedgmm._convergence import EmptyComponentWarning
from fedgmm._random import SeedLike, as_random_state
from fedgmm.em.init import initial_state
from fedgmm.em.mstep import m_step
from fedgmm.em.stats import block_size_for, e_step, iter_blocks
from fedgmm.mixture import MixtureState
from fedgmm.types import CovarianceType

NOT_CONVERGED_MESSAGE = (
    "Best performing initialization did not converge. Try different init parameters, "
    "or increase max_iter, tol, or check for degenerate data."
)

#: A component is "empty" when it holds less than this share of one (average) row's weight.
EMPTY_COMPONENT_ROWS = 0.01


def empty_components(weights: np.ndarray, n_rows: float) -> list[int]:
    """Indices of the components whose weight is below :data:`EMPTY_COMPONENT_ROWS` of one row.

    Parameters
    ----------
    weights : ndarray of shape (K,)
        Mixture weights (summing to one).
    n_rows : float
        Rows the weights were estimated from.
    """
    return [int(k) for k in np.flatnonzero(np.asarray(weights) * n_rows < EMPTY_COMPONENT_ROWS)]


def warn_empty_components(weights: np.ndarray, n_rows: float, what: str = "GaussianMixture", stacklevel: int = 3) -> None:
    """Emit an :class:`~fedgmm.exceptions.EmptyComponentWarning` naming the empty components, if any.

    Parameters
    ----------
    weights : ndarray of shape (K,)
    n_rows : float
        Rows of the fit (the synthetic set for FedGenGMM's global fit).
    what : str
        The fit, for the message.
    """
    empty = empty_components(weights, n_rows)
    if not empty:
        return
    k, kept = len(weights), len(weights) - len(empty)
    shown = ", ".join(f"{i} (weight {weights[i]:.2g})" for i in empty)
    warnings.warn(
        f"{what} with n_components={k} on {n_rows:g} rows: component(s) {shown} are empty (less than "
        f"{EMPTY_COMPONENT_ROWS:.0%} of one row's weight each); the data support at most {kept} components "
        f"(duplicate rows or too few distinct points?). Fit with n_components <= {kept}.",
        EmptyComponentWarning,
        stacklevel=stacklevel,
    )


@dataclass(frozen=True)
class FitResult:
    """Outcome of an EM fit.

    Attributes
    ----------
    state : MixtureState
        Parameters after the last M-step of the best run.
    converged : bool
        Whether the best run stopped because the change fell below ``tol``.
    n_iter : int
        EM iterations of the best run.
    lower_bound : float
        Mean log-likelihood per sample at the last E-step of the best run (what
        scikit-learn calls ``lower_bound_``); ``-inf`` when ``max_iter == 0``.
    lower_bounds : tuple of float
        That value after every iteration of the best run.
    """

    state: MixtureState
    converged: bool
    n_iter: int
    lower_bound: float
    lower_bounds: tuple[float, ...]


IterationCallback = Callable[[int, float, float], None]


def data_mean(X: np.ndarray, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """(Weighted) column mean in float64, ``(d,)``: the reference point of the statistics.

    A reduction over ``X`` (no copy of it, so memory-mapped data stays on disk).
    """
    if sample_weight is None:
        return np.asarray(X.mean(axis=0, dtype=np.float64))
    w = np.asarray(sample_weight, dtype=np.float64)
    total = np.zeros(X.shape[1])
    for rows in iter_blocks(X.shape[0], block_size_for(X.shape[1])):
        total += w[rows] @ X[rows].astype(np.float64, copy=False)
    return total / w.sum()


def run_em(
    X: np.ndarray,
    state: MixtureState,
    *,
    reg_covar: float,
    tol: float,
    max_iter: int,
    lower_bound: float = -np.inf,
    shift: np.ndarray | None = None,
    block_size: int | None = None,
    dtype: np.dtype | type | None = None,
    callback: IterationCallback | None = None,
    sample_weight: np.ndarray | None = None,
) -> FitResult:
    """Run EM from ``state`` until the mean log-likelihood changes by less than ``tol``.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    state : MixtureState
        Starting parameters.
    reg_covar, tol, max_iter
        As in :class:`fedgmm.GaussianMixture`.
    lower_bound : float
        Mean log-likelihood before the first iteration (``-inf`` for a fresh start).
    shift : ndarray of shape (d,), optional
        Reference point of the sufficient statistics; the data mean by default.
    block_size, dtype
        Passed to :func:`fedgmm.em.e_step`.
    callback : callable, optional
        Called as ``callback(n_iter, lower_bound, change)`` after every iteration.
    sample_weight : ndarray of shape (n,), optional
        Non-negative row weights; the lower bound is then ``Σ w log p / Σ w``.

    Returns
    -------
    FitResult
    """
    if shift is None:
        shift = data_mean(X, sample_weight)
    total_weight = float(X.shape[0]) if sample_weight is None else float(np.sum(sample_weight))
    lower_bounds: list[float] = []
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        prev = lower_bound
        stats = e_step(X, state, shift=shift, block_size=block_size, dtype=dtype, sample_weight=sample_weight)
        del state  # free the old parameters before the M-step builds the new ones (memory at large d)
        state = m_step(stats, reg_covar, overwrite=True)
        lower_bound = stats.log_likelihood / total_weight
        lower_bounds.append(lower_bound)
        change = lower_bound - prev
        if callback is not None:
            callback(n_iter, lower_bound, change)
        if abs(change) < tol:
            converged = True
            break
    return FitResult(state, converged, n_iter, float(lower_bound), tuple(lower_bounds))


def fit_em(
    X: np.ndarray,
    *,
    n_components: int,
    covariance_type: CovarianceType = "full",
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    max_iter: int = 100,
    n_init: int = 1,
    init_params: str = "kmeans",
    weights_init: np.ndarray | None = None,
    means_init: np.ndarray | None = None,
    precisions_init: np.ndarray | None = None,
    random_state: SeedLike = None,
    warm_start: tuple[MixtureState, float] | None = None,
    dtype: np.dtype | type | None = None,
    block_size: int | None = None,
    verbose: int = 0,
    verbose_interval: int = 10,
    warn_not_converged: bool = True,
    warn_empty: bool = True,
    sample_weight: np.ndarray | None = None,
) -> FitResult:
    """Fit a Gaussian mixture by EM with ``n_init`` restarts, keeping the best.

    Follows scikit-learn's ``BaseMixture.fit_predict``: the same initialisation draws for
    an int ``random_state``, the same convergence test (absolute change of the mean
    log-likelihood below ``tol``) and the same choice of the best restart.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Finite data, already validated.
    warm_start : (MixtureState, float), optional
        Start once from these parameters and this previous lower bound instead of
        initialising (``n_init`` is then ignored).
    warn_not_converged : bool
        Emit a ``ConvergenceWarning`` when the best run did not converge.
    warn_empty : bool
        Emit an :class:`~fedgmm.exceptions.EmptyComponentWarning` when the best run has
        components holding (almost) no weight (see :func:`warn_empty_components`).
    sample_weight : ndarray of shape (n,), optional
        Non-negative row weights (validated): weighted statistics, weighted
        initialisation, lower bound ``Σ w log p / Σ w``. Integer weights give the fit of
        the repeated rows from the same given initial parameters.
    Other parameters
        As in :class:`fedgmm.GaussianMixture`.

    Returns
    -------
    FitResult
    """
    rs = as_random_state(random_state)
    shift = data_mean(X, sample_weight)
    n_runs = 1 if warm_start is not None else n_init
    best: FitResult | None = None
    for init in range(n_runs):
        if verbose >= 1:
            print(f"Initialization {init}")
        start = perf_counter()
        last = [start]

        def report(n_iter: int, lb: float, change: float, _last: list[float] = last) -> None:
            if verbose >= 1 and n_iter % verbose_interval == 0:
                now = perf_counter()
                if verbose == 1:
                    print(f"  Iteration {n_iter}")
                else:
                    print(f"  Iteration {n_iter}\t time lapse {now - _last[0]:.5f}s\t ll change {change:.5f}")
                _last[0] = now

        if warm_start is not None:
            state, lower_bound = warm_start
        else:
            state = initial_state(
                X,
                n_components,
                covariance_type,
                init_params=init_params,
                random_state=rs,
                reg_covar=reg_covar,
                weights_init=weights_init,
                means_init=means_init,
                precisions_init=precisions_init,
                shift=shift,
                block_size=block_size,
                sample_weight=sample_weight,
            )
            lower_bound = -np.inf
        if max_iter == 0:
            result = FitResult(state, False, 0, -np.inf, ())
        else:
            # Handed over, not kept: run_em frees each iteration's old parameters (at large d
            # the initial (K, d, d) arrays would otherwise live through the whole run).
            handover = [state]
            del state
            result = run_em(
                X,
                handover.pop(),
                reg_covar=reg_covar,
                tol=tol,
                max_iter=max_iter,
                lower_bound=lower_bound,
                shift=shift,
                block_size=block_size,
                dtype=dtype,
                callback=report,
                sample_weight=sample_weight,
            )
        if verbose >= 1:
            status = "converged" if result.converged else "did not converge"
            print(f"Initialization {status}. time lapse {perf_counter() - start:.5f}s\t lower bound {result.lower_bound:.5f}")
        if best is None or result.lower_bound > best.lower_bound or best.lower_bound == -np.inf:
            best = result
    assert best is not None
    if warn_not_converged and not best.converged and max_iter > 0:
        warnings.warn(NOT_CONVERGED_MESSAGE, ConvergenceWarning, stacklevel=2)
    if warn_empty and max_iter > 0:
        warn_empty_components(np.asarray(best.state.weights), float(X.shape[0]), stacklevel=5)
    return best

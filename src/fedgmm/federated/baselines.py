"""Baselines every study reports: centralized EM on pooled data, local-only models, the plain union."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from fedgmm.federated.local import LocalFitSettings, check_client_data, fit_local_model
from fedgmm.federated.messages import STATUS_OK, LocalModelReply
from fedgmm.federated.union import union_mixture
from fedgmm.gaussian_mixture import GaussianMixture
from fedgmm.types import CovarianceType


def pooled_data(clients: Sequence[np.ndarray]) -> np.ndarray:
    """All usable clients' rows stacked, ``(Σ n_c, d)`` (what no federation may do)."""
    usable = [np.asarray(X, dtype=np.float64) for X in clients if not check_client_data(np.asarray(X))]
    if not usable:
        raise ValueError("no client has usable data (each needs >= 2 finite rows).")
    return np.vstack(usable)


def centralized_model(
    clients: Sequence[np.ndarray],
    *,
    n_components: int,
    covariance_type: CovarianceType = "full",
    reg_covar: float = 1e-6,
    max_iter: int = 100,
    tol: float = 1e-3,
    n_init: int = 1,
    seed: int = 0,
) -> GaussianMixture:
    """Centralized GMM: EM on the pooled data of every usable client (the upper reference)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(
            n_components,
            covariance_type=covariance_type,
            reg_covar=reg_covar,
            max_iter=max_iter,
            tol=tol,
            n_init=n_init,
            random_state=seed,
        ).fit(pooled_data(clients))


def local_only_models(
    clients: Sequence[np.ndarray], local: LocalFitSettings, seed: int
) -> list[LocalModelReply]:
    """Each client's own model, fitted exactly as its FedGenGMM upload (no communication)."""
    return [fit_local_model(np.asarray(X), local, client_id=i, seed=seed) for i, X in enumerate(clients)]


def union_model(models: Sequence[LocalModelReply]) -> GaussianMixture:
    """The plain union mixture ``U`` of the usable local models, as a fitted estimator."""
    ok = [m for m in models if m.status == STATUS_OK and m.state is not None]
    if not ok:
        raise ValueError("no usable local model to build the union from.")
    state = union_mixture([m.state for m in ok if m.state is not None], [m.n_samples for m in ok])
    return GaussianMixture.from_state(state)

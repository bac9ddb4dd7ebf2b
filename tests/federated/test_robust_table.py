"""Every forgery of issue 11's table, end to end through the facades: the run completes and the forger is recorded."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from fedgmm.attacks import (
    ForgedStatistics,
    InflatedCount,
    ScaledCovariances,
    ScaledMeans,
    ScaledStatistics,
    ShiftedComponents,
)
from fedgmm.exceptions import ClientExclusionWarning
from fedgmm.inprocess import FederatedEM, FedGenGMM

ATTACKER = 2


@pytest.fixture(scope="module")
def federation(blobs) -> tuple[list[np.ndarray], np.ndarray]:  # type: ignore[no-untyped-def]
    """8 IID clients of 4 blobs in 3-D, and held-out rows."""
    X, _ = blobs(2800, 3, 4, seed=3)
    return [X[i:2400:8] for i in range(8)], X[2400:]


def quietly(model: Any, clients: list[Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClientExclusionWarning)
        return model.fit(clients)


def with_attacker(clients: list[np.ndarray], wrap: Any) -> list[Any]:
    out: list[Any] = list(clients)
    out[ATTACKER] = wrap(out[ATTACKER])
    return out


@pytest.fixture(scope="module")
def clean(federation) -> dict[str, float]:  # type: ignore[no-untyped-def]
    clients, X_test = federation
    return {
        "fedgengmm": quietly(FedGenGMM(4, random_state=0), clients).score(X_test),
        "fedem": quietly(FederatedEM(4, random_state=0, max_rounds=15), clients).score(X_test),
    }


@pytest.mark.parametrize(
    ("name", "wrap"),
    [
        ("means x 1e15", lambda X: ScaledMeans(X, 1e15)),
        ("means x 1e200", lambda X: ScaledMeans(X, 1e200)),
        ("covariance 1e300", lambda X: ScaledCovariances(X, 1e300)),
        ("covariance 1e-300", lambda X: ScaledCovariances(X, 1e-300)),
        ("shift 50, n x 1e3", lambda X: InflatedCount(ShiftedComponents(X, 50.0), 1e3)),
        ("n x 1e7", lambda X: InflatedCount(X, 1e7)),
        ("n x 1e12", lambda X: InflatedCount(X, 1e12)),
    ],
)
def test_fedgengmm_forgeries(federation, clean, name: str, wrap: Any) -> None:  # type: ignore[no-untyped-def]
    clients, X_test = federation
    model = quietly(FedGenGMM(4, random_state=0), with_attacker(clients, wrap))
    rec = model.client_records_[ATTACKER]
    assert rec.status == "rejected" or "capped" in rec.reason, (name, rec)
    assert model.synthetic_size_ <= 5 * 10 * sum(len(c) for c in clients)
    assert model.score(X_test) >= clean["fedgengmm"] - 0.5, name


@pytest.mark.parametrize(
    ("name", "wrap"),
    [
        ("sxx off-diagonal +1e6", lambda X: ForgedStatistics(X, "sxx-offdiag", 1e6)),
        ("sx = 1e200", lambda X: ForgedStatistics(X, "sx", 1e200)),
        ("log-likelihood 1e308", lambda X: ForgedStatistics(X, "log-likelihood", 1e308)),
        ("alternating log-likelihood 1e6", lambda X: ForgedStatistics(X, "alternating", 1e6)),
        ("statistics x 1e6", lambda X: ScaledStatistics(X, 1e6)),
    ],
)
def test_fedem_forgeries(federation, clean, name: str, wrap: Any) -> None:  # type: ignore[no-untyped-def]
    clients, X_test = federation
    model = quietly(FederatedEM(4, random_state=0, max_rounds=15), with_attacker(clients, wrap))
    assert all(any(d.client_id == ATTACKER for d in r.flagged) for r in model.history_), name
    assert abs(model.global_model_.lower_bound_) < 1e3  # no forged log-likelihood reaches the bound
    assert model.score(X_test) >= clean["fedem"] - 0.5, name

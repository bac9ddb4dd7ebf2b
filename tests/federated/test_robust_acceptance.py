"""Acceptance of the default defences: one or two hostile clients among 20 (digits, α = 1) barely move held-out quality."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from sklearn.decomposition import PCA

from fedgmm.attacks import (
    ForgedMoments,
    InflatedCount,
    ScaledMeans,
    ScaledStatistics,
    ShiftedComponents,
)
from fedgmm.datasets import load_dataset
from fedgmm.datasets.recipe import partition_rows
from fedgmm.datasets.split import split_dataset
from fedgmm.exceptions import ClientExclusionWarning, FederationError
from fedgmm.federated.preprocessing import run_preprocessing
from fedgmm.federated.robust import RobustSettings
from fedgmm.inprocess import FederatedEM, FedGenGMM
from fedgmm.inprocess.transport import InProcessTransport

K = 5
N_CLIENTS = 20
EM_ROUNDS = 10


@pytest.fixture(scope="module")
def digits() -> tuple[list[np.ndarray], np.ndarray]:
    """20 Dirichlet(α = 1) clients of digits (8 standardised principal axes) and the held-back test rows."""
    X, y, X_test, _ = split_dataset(load_dataset("digits"), test_fraction=0.25, seed=0)
    pca = PCA(8, random_state=0).fit(X)
    scale = pca.transform(X).std(axis=0)
    clients = partition_rows(
        pca.transform(X) / scale, y, partitioner="dirichlet", num_partitions=N_CLIENTS, alpha=1.0,
        min_partition_size=None, regimes="classes", seed=0,
    )
    return clients, pca.transform(X_test) / scale


def fedgengmm(clients: list[Any], **kwargs: Any) -> FedGenGMM:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClientExclusionWarning)
        return FedGenGMM(K, random_state=0, **kwargs).fit(clients)


def fedem(clients: list[Any], **kwargs: Any) -> FederatedEM:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClientExclusionWarning)
        return FederatedEM(K, random_state=0, max_rounds=EM_ROUNDS, **kwargs).fit(clients)


@pytest.fixture(scope="module")
def clean(digits: tuple[list[np.ndarray], np.ndarray]) -> dict[str, float]:
    clients, X_test = digits
    return {
        "fedgengmm": fedgengmm(clients).score(X_test),
        "fedgengmm-plain": fedgengmm(clients, robust=False).score(X_test),
        "fedem": fedem(clients).score(X_test),
    }


def attacked(clients: list[np.ndarray], wrap: Any, positions: tuple[int, ...] = (3,)) -> list[Any]:
    out: list[Any] = list(clients)
    for i in positions:
        out[i] = wrap(out[i])
    return out


def status(model: Any, client: int) -> tuple[str, str]:
    rec = model.client_records_[client]
    return rec.status, rec.reason


def test_no_attack_defended_equals_plain(clean: dict[str, float]) -> None:
    assert abs(clean["fedgengmm"] - clean["fedgengmm-plain"]) <= 0.05


def test_scaled_means_rejected_and_quality_kept(digits, clean) -> None:  # type: ignore[no-untyped-def]
    clients, X_test = digits
    model = fedgengmm(attacked(clients, lambda X: ScaledMeans(X, 1e15)))
    assert model.score(X_test) >= clean["fedgengmm"] - 0.1
    state, reason = status(model, 3)
    assert state == "rejected" and "robust scales" in reason
    assert sum(r.status == "rejected" for r in model.client_records_) == 1


def test_scaled_means_plain_failure_names_the_client(digits) -> None:  # type: ignore[no-untyped-def]
    clients, _ = digits
    with pytest.raises(FederationError, match=r"Most atypical clients merged: client 3 \(means 2\.\d+e\+15"):
        fedgengmm(attacked(clients, lambda X: ScaledMeans(X, 1e15)), robust=False)


def test_inflated_count_is_capped_and_bounds_the_synthetic_set(digits, clean) -> None:  # type: ignore[no-untyped-def]
    clients, X_test = digits
    model = fedgengmm(attacked(clients, lambda X: InflatedCount(X, 1e12)))
    assert model.score(X_test) >= clean["fedgengmm"] - 0.5
    state, reason = status(model, 3)
    assert state == "ok" and "capped" in reason
    assert model.synthetic_size_ <= 5 * 10 * sum(len(c) for c in clients)


def test_two_shifted_inflated_clients(digits, clean) -> None:  # type: ignore[no-untyped-def]
    clients, X_test = digits
    hostile = attacked(clients, lambda X: InflatedCount(ShiftedComponents(X, 50.0), 100), positions=(3, 7))
    defended = fedgengmm(hostile).score(X_test)
    plain = fedgengmm(hostile, robust=False).score(X_test)
    assert defended >= clean["fedgengmm"] - 0.5
    assert plain < clean["fedgengmm"] - 2.0  # the plain recipe collapses
    assert plain < defended - 2.0


def test_fedem_scaled_statistics(digits, clean) -> None:  # type: ignore[no-untyped-def]
    clients, X_test = digits
    model = fedem(attacked(clients, lambda X: ScaledStatistics(X, 1e6)))
    assert model.score(X_test) >= clean["fedem"] - 0.5
    state, reason = status(model, 3)
    assert "round" in reason and ("capped" in reason or state == "rejected")
    assert all(any(d.client_id == 3 for d in r.flagged) for r in model.history_)


def preprocessing_mean(clients: list[Any], robust: RobustSettings) -> tuple[np.ndarray, str]:
    with InProcessTransport(clients) as transport:
        tf, records = run_preprocessing(transport, robust=robust)
    return tf.mean, records["client 3"].status + ": " + records["client 3"].reason


def test_preprocessing_forged_count_does_not_collapse_the_mean(digits) -> None:  # type: ignore[no-untyped-def]
    shifted = [c + 10.0 for c in digits[0]]  # a mean far from 0, where a forged count would drag it
    truth = np.concatenate(shifted).mean(axis=0)
    hostile = attacked(shifted, lambda X: ForgedMoments(X, 1e12))
    defended, record = preprocessing_mean(hostile, RobustSettings())
    assert np.max(np.abs(defended - truth)) < 0.5
    assert record.startswith("rejected: ") and "implied" in record
    plain, _ = preprocessing_mean(hostile, RobustSettings(enabled=False))
    assert np.max(np.abs(plain)) < 1e-6  # the plain sum: the mean collapses to 0 for everyone


def test_preprocessing_inflated_count_is_capped(digits) -> None:  # type: ignore[no-untyped-def]
    shifted = [c + 10.0 for c in digits[0]]
    truth = np.concatenate(shifted).mean(axis=0)
    hostile = attacked(shifted, lambda X: InflatedCount(X, 1e12))
    defended, record = preprocessing_mean(hostile, RobustSettings())
    plain, _ = preprocessing_mean(hostile, RobustSettings(enabled=False))
    np.testing.assert_allclose(plain, shifted[3].mean(axis=0), atol=1e-6)  # plain: client 3's mean for everyone
    assert record.startswith("ok: capped: ")
    assert np.max(np.abs(defended - truth)) < 0.5 * np.max(np.abs(plain - truth))

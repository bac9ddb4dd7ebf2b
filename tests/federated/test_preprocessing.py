"""Federated standardisation and PCA equal the centralized ones, in one counted round."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from fedgmm.federated.fedgengmm import GlobalFitSettings, run_fedgengmm
from fedgmm.federated.local import LocalFitSettings
from fedgmm.federated.preprocessing import run_preprocessing, transform_from_moments
from fedgmm.inprocess import InProcessTransport


def data(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(6, 6))
    X = rng.normal(size=(900, 6)) @ A * np.array([1, 10, 100, 0.1, 1, 5]) + 50
    return [X[:100], X[100:500], X[500:]]


def test_standardisation_matches_sklearn() -> None:
    clients = data()
    transport = InProcessTransport(clients)
    tf, records = run_preprocessing(transport, standardize=True)
    pooled = np.vstack(clients)
    expected = (pooled - pooled.mean(0)) / pooled.std(0, ddof=1)
    np.testing.assert_allclose(tf.apply(pooled), expected, rtol=1e-8, atol=1e-8)
    assert transport.communication.rounds == 1
    assert all(r.status == "ok" for r in records.values())


def test_pca_matches_sklearn_up_to_sign() -> None:
    clients = data(1)
    tf, _ = run_preprocessing(InProcessTransport(clients), standardize=True, n_components=3)
    pooled = np.vstack(clients)
    ref = PCA(3).fit_transform(StandardScaler().fit_transform(pooled)) * np.sqrt((len(pooled) - 1) / len(pooled))
    ours = tf.apply(pooled)
    for j in range(3):
        sign = np.sign(ours[:, j] @ ref[:, j])
        np.testing.assert_allclose(ours[:, j], sign * ref[:, j], rtol=1e-6, atol=1e-6)
    assert tf.explained_variance_ratio is not None and np.all(np.diff(tf.explained_variance_ratio) <= 0)


def test_transform_ships_once_to_clients_and_is_applied_there() -> None:
    clients = data(2)
    transport = InProcessTransport(clients)
    tf, _ = run_preprocessing(transport, n_components=2)
    res = run_fedgengmm(
        transport, LocalFitSettings(k_min=2, k_max=2), GlobalFitSettings(n_components=2), seed=0,
        transform=tf.arrays(), transform_id=tf.transform_id,
    )
    assert res.global_model.n_features_in_ == 2
    fit_round = transport.communication.per_round[1]
    assert fit_round.bytes_down > 3 * 6 * 2 * 8  # the (6, 2) matrix went to each client


def test_constant_feature_and_bad_pca_size() -> None:
    X = np.c_[np.random.default_rng(0).normal(size=(50, 2)), np.full(50, 3.0)]
    tf = transform_from_moments(50, X.sum(0), X.T @ X)
    assert np.all(np.isfinite(tf.apply(X)))
    with pytest.raises(ValueError, match="PCA must be in"):
        transform_from_moments(50, X.sum(0), X.T @ X, n_components=5)

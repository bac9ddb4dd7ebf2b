"""Shared data for the federated tests: Gaussian blobs split across clients."""

from __future__ import annotations

import numpy as np
import pytest


def make_blobs(n: int, d: int, k: int, seed: int, spread: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows from ``k`` well-separated anisotropic Gaussians; returns (X, labels)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(k, d))
    mix = 0.4 * rng.normal(size=(k, d, d)) / np.sqrt(d) + np.eye(d)  # well-conditioned covariances
    labels = rng.integers(k, size=n)
    X = centers[labels] + np.einsum("nij,nj->ni", mix[labels], rng.normal(size=(n, d)))
    return X, labels


@pytest.fixture(scope="session")
def blobs():  # type: ignore[no-untyped-def]
    """The :func:`make_blobs` factory, for tests that need their own data."""
    return make_blobs


@pytest.fixture(scope="session")
def blob_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train X, train labels, test X): 4 components in 3-D."""
    X, y = make_blobs(3000, 3, 4, seed=0)
    return X[:2400], y[:2400], X[2400:]


@pytest.fixture(scope="session")
def iid_clients(blob_data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> list[np.ndarray]:
    X = blob_data[0]
    return [X[i::4] for i in range(4)]

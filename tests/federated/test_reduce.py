"""Sample-free reduction of a union mixture to K components."""

from __future__ import annotations

import numpy as np
import pytest

from fedgmm.federated.reduce import deregularized_covariances, reduce_mixture
from fedgmm.federated.union import merge_components, union_mixture
from fedgmm.mixture import MixtureState


def _split_clusters(seed: int, n_clients: int = 4, per_cluster: int = 3, d: int = 3) -> tuple[list[MixtureState], np.ndarray]:
    """Clients whose components are pieces of 3 well-separated clusters; returns (states, cluster of each component)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0] * d, [20.0] + [0.0] * (d - 1), [0.0, 20.0] + [0.0] * (d - 2)])
    states, truth = [], []
    for _ in range(n_clients):
        lab = np.repeat(np.arange(3), per_cluster)
        means = centres[lab] + rng.normal(scale=0.7, size=(lab.size, d))
        covs = np.stack([np.eye(d) * rng.uniform(0.5, 1.5) for _ in lab])
        states.append(MixtureState.from_covariances(rng.dirichlet(np.ones(lab.size) * 5), means, covs, "full"))
        truth.append(lab)
    return states, np.concatenate(truth)


def test_union_of_k_components_is_returned_as_is() -> None:
    states, _ = _split_clusters(0, n_clients=1, per_cluster=1)
    union = union_mixture(states, [100])
    out = reduce_mixture(union, 3, reg_covar=0.0)
    np.testing.assert_allclose(out.state.weights, union.weights)
    np.testing.assert_allclose(out.state.means, union.means)
    np.testing.assert_allclose(out.state.covariances, union.covariances, atol=1e-12)


@pytest.mark.parametrize("method", ["mm", "hem"])
def test_recovers_the_moment_matched_clusters(method: str) -> None:
    states, truth = _split_clusters(1)
    union = union_mixture(states, [50, 80, 120, 200])
    out = reduce_mixture(union, 3, method=method, reg_covar=0.0, virtual_samples=450.0, seed=3)  # type: ignore[arg-type]
    expected = merge_components(union, truth, 3, "full")
    order = [int(np.argmin(((expected.means - m) ** 2).sum(1))) for m in out.state.means]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(out.state.weights, expected.weights[order], atol=1e-6)
    np.testing.assert_allclose(out.state.means, expected.means[order], atol=1e-5)
    np.testing.assert_allclose(out.state.covariances, expected.covariances[order], atol=1e-4)
    assert out.converged


def test_deterministic_and_independent_of_the_claimed_counts() -> None:
    states, _ = _split_clusters(2)
    small = union_mixture(states, [10, 20, 30, 40])
    huge = union_mixture(states, [10_000_000, 20_000_000, 30_000_000, 40_000_000])
    a = reduce_mixture(small, 4, seed=5)
    b = reduce_mixture(huge, 4, seed=5)
    c = reduce_mixture(small, 4, seed=5)
    np.testing.assert_allclose(a.state.means, b.state.means, rtol=1e-10)
    np.testing.assert_array_equal(a.state.covariances, c.state.covariances)
    assert a.objective == min(a.objectives)


@pytest.mark.parametrize("ctype", ["tied", "diag", "spherical"])
def test_other_covariance_types(ctype: str) -> None:
    states, truth = _split_clusters(3)
    union = union_mixture(states, [1, 1, 1, 1])
    out = reduce_mixture(union, 3, covariance_type=ctype, reg_covar=0.0)  # type: ignore[arg-type]
    assert out.state.covariance_type == ctype
    expected = merge_components(union, truth, 3, ctype)  # type: ignore[arg-type]
    assert np.allclose(np.sort(out.state.weights), np.sort(expected.weights), atol=1e-6)


def test_local_regularisation_is_taken_off_once() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 3, 3))
    scatter = a @ a.transpose(0, 2, 1)
    np.testing.assert_allclose(deregularized_covariances(scatter + 0.05 * np.eye(3), 0.05), scatter, atol=1e-10)
    states, _ = _split_clusters(4, n_clients=1, per_cluster=1)
    reg = [MixtureState.from_covariances(s.weights, s.means, s.covariances + 0.05 * np.eye(3), "full") for s in states]
    out = reduce_mixture(union_mixture(reg, [10]), 3, local_reg_covar=0.05, reg_covar=1e-3)
    np.testing.assert_allclose(out.state.covariances, states[0].covariances + 1e-3 * np.eye(3), atol=1e-10)


def test_rejects_bad_arguments() -> None:
    states, _ = _split_clusters(0)
    union = union_mixture(states, [1, 1, 1, 1])
    with pytest.raises(ValueError, match="method"):
        reduce_mixture(union, 3, method="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 1"):
        reduce_mixture(union, 0)
    with pytest.raises(ValueError, match="virtual_samples"):
        reduce_mixture(union, 3, method="hem", virtual_samples=np.ones(2))

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


def _random_union(seed: int, n_clients: int = 12, k: int = 6, d: int = 4) -> MixtureState:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(4, d))
    states = []
    for _ in range(n_clients):
        a = rng.normal(size=(k, d, d)) / np.sqrt(d)
        states.append(MixtureState.from_covariances(
            rng.dirichlet(np.ones(k)), centres[rng.integers(4, size=k)] + rng.normal(scale=0.5, size=(k, d)),
            a @ a.transpose(0, 2, 1) + 0.1 * np.eye(d), "full"))
    return union_mixture(states, list(rng.integers(50, 500, size=n_clients)))


def test_mm_result_is_a_fixed_point_of_the_direct_iteration() -> None:
    """Each kept component is the moment match of the union components whose KL to it,
    computed directly (inverse and log-determinant per pair), is least."""
    union = _random_union(4)
    out = reduce_mixture(union, 4, method="mm", n_init=3, reg_covar=1e-3, seed=1)
    assert out.converged
    red, d = out.state, union.n_features
    kl = np.empty((union.n_components, 4))
    for j in range(4):
        prec = np.linalg.inv(red.covariances[j])
        logdet_j = np.linalg.slogdet(red.covariances[j])[1]
        for i in range(union.n_components):
            diff = union.means[i] - red.means[j]
            kl[i, j] = 0.5 * (np.trace(prec @ union.covariances[i]) + diff @ prec @ diff
                              + logdet_j - np.linalg.slogdet(union.covariances[i])[1] - d)
    direct = merge_components(union, kl.argmin(axis=1), 4, "full", reg_covar=1e-3)
    np.testing.assert_allclose(red.weights, direct.weights, rtol=1e-10)
    np.testing.assert_allclose(red.means, direct.means, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(red.covariances, direct.covariances, rtol=1e-10, atol=1e-10)
    # The objective, up to the union's own constant: Σ_i w_i min_j KL_ij (its trace term in float32).
    const = 0.5 * float(union.weights @ (np.linalg.slogdet(union.covariances)[1] + d))
    assert out.objective - const == pytest.approx(float(union.weights @ kl.min(axis=1)), rel=1e-5)


@pytest.mark.parametrize("method", ["mm", "hem"])
def test_threaded_restarts_give_the_serial_result(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from fedgmm.em import stats
    from fedgmm.federated import reduce as reduce_module

    union = _random_union(5)
    monkeypatch.setattr(reduce_module, "MIN_FLOPS_PER_THREAD", 1e-9)  # thread even this small reduction
    kwargs = dict(method=method, n_init=6, seed=3, virtual_samples=1000.0)
    try:
        stats.set_num_threads(1)
        assert reduce_module._restart_threads(union.n_components, 10, 6, 6) == 1
        serial = reduce_mixture(union, 6, **kwargs)  # type: ignore[arg-type]
        stats.set_num_threads(3)
        assert reduce_module._restart_threads(union.n_components, 10, 6, 6) == 3
        threaded = reduce_mixture(union, 6, **kwargs)  # type: ignore[arg-type]
    finally:
        stats.set_num_threads(None)
    assert serial.objectives == threaded.objectives
    np.testing.assert_array_equal(serial.state.means, threaded.state.means)
    np.testing.assert_array_equal(serial.state.covariances, threaded.state.covariances)
    assert len(set(serial.objectives)) > 1  # the restarts differ, so their order matters

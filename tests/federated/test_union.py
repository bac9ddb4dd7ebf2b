"""The union math on its own: moment-matched merging, de-regularisation, the union initialisation."""

from __future__ import annotations

import numpy as np
import pytest

from fedgmm.federated.union import (
    deregularized_factors,
    full_covariances,
    init_from_union,
    merge_components,
    union_mixture,
)
from fedgmm.mixture import MixtureState
from fedgmm.types import COVARIANCE_TYPES


def random_state(k: int, d: int, seed: int, ctype: str = "full") -> MixtureState:
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(k))
    means = rng.normal(scale=3.0, size=(k, d))
    a = rng.normal(size=(k, d, d))
    full = a @ a.transpose(0, 2, 1) / d + 0.5 * np.eye(d)
    covs = {
        "full": full,
        "tied": full[0],
        "diag": np.einsum("kii->ki", full),
        "spherical": np.einsum("kii->k", full) / d,
    }[ctype]
    return MixtureState.from_covariances(weights, means, covs, ctype)  # type: ignore[arg-type]


def test_full_covariances_expand_every_type() -> None:
    for ctype in COVARIANCE_TYPES:
        s = random_state(3, 2, 0, ctype)
        full = full_covariances(s)
        assert full.shape == (3, 2, 2)
        if ctype == "tied":
            np.testing.assert_array_equal(full[1], s.covariances)
        elif ctype == "diag":
            np.testing.assert_array_equal(full[2], np.diag(s.covariances[2]))
        elif ctype == "spherical":
            np.testing.assert_array_equal(full[0], s.covariances[0] * np.eye(2))


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_merge_components_matches_the_groups_moments(ctype: str) -> None:
    state = random_state(5, 3, 1)
    labels = np.array([0, 2, 0, 1, 2])
    reg = 0.01
    merged = merge_components(state, labels, 3, ctype, reg)  # type: ignore[arg-type]
    w, mu, sig = [], [], []
    for g in range(3):
        idx = np.flatnonzero(labels == g)
        wg = state.weights[idx].sum()
        mg = sum(state.weights[i] * state.means[i] for i in idx) / wg
        sg = sum(
            state.weights[i] * (state.covariances[i] + np.outer(state.means[i] - mg, state.means[i] - mg)) for i in idx
        ) / wg
        w.append(wg)
        mu.append(mg)
        sig.append(sg + reg * np.eye(3))
    w_, mu_, sig_ = np.array(w), np.array(mu), np.array(sig)
    np.testing.assert_allclose(merged.weights, w_ / w_.sum())
    np.testing.assert_allclose(merged.means, mu_)
    expected = {
        "full": sig_,
        "tied": np.einsum("g,gjk->jk", w_ / w_.sum(), sig_),
        "diag": np.array([np.diag(s) for s in sig_]),
        "spherical": np.array([np.trace(s) / 3 for s in sig_]),
    }[ctype]
    np.testing.assert_allclose(merged.covariances, expected, rtol=1e-12, atol=1e-12)


def test_merge_components_rejects_an_empty_group() -> None:
    with pytest.raises(ValueError, match="group 1 has no component"):
        merge_components(random_state(3, 2, 0), np.array([0, 0, 2]), 3, "full")


def test_merging_everything_keeps_the_mixtures_mean_and_covariance() -> None:
    state = random_state(6, 3, 2)
    one = merge_components(state, np.zeros(6, dtype=int), 1, "full")
    mean = state.weights @ state.means
    second = np.einsum("k,kij->ij", state.weights, state.covariances + np.einsum("ki,kj->kij", state.means, state.means))
    np.testing.assert_allclose(one.means[0], mean)
    np.testing.assert_allclose(one.covariances[0], second - np.outer(mean, mean), atol=1e-10)


def test_deregularized_factors_take_reg_covar_off_once() -> None:
    state = random_state(4, 3, 3)  # every covariance has eigenvalues >= 0.5
    for reg in (0.0, 0.3):
        A = deregularized_factors(state, reg)
        np.testing.assert_allclose(A @ A.transpose(0, 2, 1), state.covariances - reg * np.eye(3), atol=1e-10)


def test_deregularized_factors_clip_negative_eigenvalues() -> None:
    state = MixtureState.from_covariances(np.ones(1), np.zeros((1, 2)), np.array([[0.1, 2.0]]), "diag")
    A = deregularized_factors(state, 0.5)
    np.testing.assert_allclose(A[0] @ A[0].T, np.diag([0.0, 1.5]), atol=1e-12)


def test_union_weights_by_client_size() -> None:
    a, b = random_state(2, 2, 4), random_state(3, 2, 5)
    u = union_mixture([a, b], [100, 300])
    np.testing.assert_allclose(u.weights, np.r_[a.weights * 0.25, b.weights * 0.75])
    np.testing.assert_array_equal(u.means, np.vstack([a.means, b.means]))


@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_init_from_union_groups_the_union_components(ctype: str) -> None:
    union = random_state(12, 2, 6, ctype)
    start = init_from_union(union, 4, ctype, np.random.default_rng(0), reg_covar=0.0)  # type: ignore[arg-type]
    assert start.n_components == 4 and start.covariance_type == ctype
    # Moment matching over a partition of the union keeps its overall mean ...
    np.testing.assert_allclose(start.weights @ start.means, union.weights @ union.means, atol=1e-10)
    # ... and every merged weight is the total weight of a group of union components.
    masks = (np.arange(1, 2**12)[:, None] >> np.arange(12)) & 1
    subset_sums = masks @ union.weights
    assert all(np.abs(subset_sums - w).min() < 1e-12 for w in start.weights)


def test_init_from_union_with_fewer_components_than_k_samples_the_union() -> None:
    union = random_state(2, 2, 7)
    start = init_from_union(union, 5, "full", np.random.default_rng(1))
    assert start.n_components == 5
    again = init_from_union(union, 5, "full", np.random.default_rng(1))
    np.testing.assert_array_equal(start.means, again.means)

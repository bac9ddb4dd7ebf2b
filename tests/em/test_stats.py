"""Sufficient statistics: they add across shards, and the blocked kernels match a direct computation."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from fedgmm.em import e_step, m_step, statistics_from_responsibilities
from fedgmm.em.kernels import FullFactorKernel, FullOuterKernel
from fedgmm.mixture import MixtureState
from fedgmm.types import COVARIANCE_TYPES


def random_state(rng: np.random.Generator, k: int, d: int, ctype: str) -> MixtureState:
    """A well-conditioned random mixture of each covariance type."""
    w = rng.dirichlet(np.ones(k) * 2)
    mu = rng.normal(scale=2.0, size=(k, d))
    if ctype == "full":
        a = rng.normal(size=(k, d, d))
        cov = a @ a.transpose(0, 2, 1) / d + np.eye(d) * 0.5
    elif ctype == "tied":
        a = rng.normal(size=(d, d))
        cov = a @ a.T / d + np.eye(d) * 0.5
    elif ctype == "diag":
        cov = rng.uniform(0.3, 2.0, size=(k, d))
    else:
        cov = rng.uniform(0.3, 2.0, size=k)
    return MixtureState.from_covariances(w, mu, cov, ctype)  # type: ignore[arg-type]


def direct_log_prob(X: np.ndarray, state: MixtureState) -> np.ndarray:
    """``log π_k + log N(x | μ_k, Σ_k)`` with scipy, one component at a time."""
    k, d = state.n_components, state.n_features
    out = np.empty((X.shape[0], k))
    for j in range(k):
        if state.covariance_type == "full":
            cov = state.covariances[j]
        elif state.covariance_type == "tied":
            cov = state.covariances
        elif state.covariance_type == "diag":
            cov = np.diag(state.covariances[j])
        else:
            cov = np.eye(d) * state.covariances[j]
        out[:, j] = np.log(state.weights[j]) + multivariate_normal(state.means[j], cov).logpdf(X)
    return out


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_e_step_matches_direct_computation(ctype: str) -> None:
    rng = np.random.default_rng(1)
    state = random_state(rng, 4, 5, ctype)
    X = rng.normal(scale=2.0, size=(300, 5))
    logp = direct_log_prob(X, state)
    lse = logsumexp(logp, axis=1)
    resp = np.exp(logp - lse[:, None])
    stats = e_step(X, state, block_size=37)
    assert stats.log_likelihood == pytest.approx(lse.sum(), rel=1e-12)
    np.testing.assert_allclose(stats.nk, resp.sum(0), rtol=1e-10)
    np.testing.assert_allclose(stats.sx, resp.T @ X, rtol=1e-10, atol=1e-10)
    expected = {
        "full": np.einsum("nk,ni,nj->kij", resp, X, X),
        "tied": X.T @ X,
        "diag": resp.T @ X**2,
        "spherical": resp.T @ np.sum(X**2, axis=1),
    }[ctype]
    np.testing.assert_allclose(stats.sxx, expected, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_full_kernels_agree(dtype: type) -> None:
    rng = np.random.default_rng(2)
    state = random_state(rng, 3, 6, "full")
    X = rng.normal(size=(50, 6))
    shift = X.mean(0)
    outer = FullOuterKernel(3, 6, shift, np.dtype(dtype))
    factor = FullFactorKernel(3, 6, shift, np.dtype(dtype))
    for kern in (outer, factor):
        kern.set_parameters(state)
    ctx_o, ctx_f = outer.prepare(X), factor.prepare(X)
    lp_o, lp_f = outer.log_prob(ctx_o), factor.log_prob(ctx_f)  # (K, B)
    rtol = 1e-11 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(lp_o, lp_f, rtol=rtol)
    np.testing.assert_allclose(lp_o.T, direct_log_prob(X, state), rtol=10 * rtol)
    resp = rng.dirichlet(np.ones(3), size=50).astype(dtype).T
    outer.accumulate(ctx_o, resp)
    factor.accumulate(ctx_f, resp)
    for a, b in zip(outer.statistics(), factor.statistics(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12 if dtype == np.float64 else 1e-5, atol=1e-12 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize("d", [3, 80])
def test_e_step_matches_direct_computation_both_full_formulations(ctype: str, d: int) -> None:
    """Large d takes the per-component (factor) path for full covariance; both are exact."""
    rng = np.random.default_rng(11)
    state = random_state(rng, 2, d, ctype)
    X = rng.normal(scale=2.0, size=(400, d))
    logp = direct_log_prob(X, state)
    lse = logsumexp(logp, axis=1)
    resp = np.exp(logp - lse[:, None])
    w = rng.uniform(0.0, 2.0, size=400)
    stats = e_step(X, state, block_size=33, shift=X.mean(0), sample_weight=w)
    assert stats.log_likelihood == pytest.approx(w @ lse, rel=1e-11)
    wr = resp * w[:, None]
    xc = X - X.mean(0)
    np.testing.assert_allclose(stats.nk, wr.sum(0), rtol=1e-10)
    np.testing.assert_allclose(stats.sx, wr.T @ xc, rtol=1e-9, atol=1e-9)
    expected = {
        "full": np.einsum("nk,ni,nj->kij", wr, xc, xc),
        "tied": xc.T @ (xc * w[:, None]),
        "diag": wr.T @ xc**2,
        "spherical": wr.T @ np.sum(xc**2, axis=1),
    }[ctype]
    np.testing.assert_allclose(stats.sxx, expected, rtol=1e-9, atol=1e-8)


@settings(max_examples=40, deadline=None)
@given(
    ctype=st.sampled_from(COVARIANCE_TYPES),
    k=st.integers(1, 5),
    d=st.integers(1, 6),
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    seed=st.integers(0, 2**31 - 1),
    block=st.integers(1, 64),
)
def test_statistics_of_shards_add_up_to_pooled(
    ctype: str, k: int, d: int, sizes: list[int], seed: int, block: int
) -> None:
    """Summed shard statistics give the pooled statistics, hence the same M-step."""
    rng = np.random.default_rng(seed)
    total = sum(sizes)
    if total < 2:
        sizes = [*sizes, 2]
        total += 2
    state = random_state(rng, k, d, ctype)
    X = rng.normal(scale=2.0, size=(total, d))
    shift = rng.normal(size=d)
    pooled = e_step(X, state, shift=shift)
    bounds = np.cumsum([0, *sizes])
    shards = [
        e_step(X[a:b], state, shift=shift, block_size=block) for a, b in itertools.pairwise(bounds)
    ]
    summed = sum(shards)
    assert summed.n_samples == pooled.n_samples == total
    np.testing.assert_allclose(summed.log_likelihood, pooled.log_likelihood, rtol=1e-10)
    for name in ("nk", "sx", "sxx"):
        np.testing.assert_allclose(getattr(summed, name), getattr(pooled, name), rtol=1e-9, atol=1e-9)
    a, b = m_step(summed, 1e-6), m_step(pooled, 1e-6)
    np.testing.assert_allclose(a.weights, b.weights, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.means, b.means, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(a.covariances, b.covariances, rtol=1e-8, atol=1e-9)


def test_adding_incompatible_statistics_fails() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    s_full = e_step(X, random_state(rng, 2, 3, "full"))
    s_diag = e_step(X, random_state(rng, 2, 3, "diag"))
    with pytest.raises(ValueError, match="cannot add"):
        _ = s_full + s_diag
    with pytest.raises(ValueError, match="different shifts"):
        _ = s_full + e_step(X, random_state(rng, 2, 3, "full"), shift=np.ones(3))


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_float32_mode_close_to_float64(ctype: str) -> None:
    rng = np.random.default_rng(3)
    state = random_state(rng, 3, 8, ctype)
    X = rng.normal(size=(2000, 8))
    s64 = e_step(X, state, shift=X.mean(0))
    s32 = e_step(X.astype(np.float32), state, shift=X.mean(0), dtype=np.float32)
    assert s32.sxx.dtype == np.float64
    assert abs(s32.log_likelihood - s64.log_likelihood) / abs(s64.log_likelihood) < 1e-5
    np.testing.assert_allclose(m_step(s32, 1e-6).means, m_step(s64, 1e-6).means, atol=1e-4)


def test_e_step_memory_is_bounded_by_block_not_rows() -> None:
    """Peak extra memory of an E-step does not grow with n (blocked computation)."""
    rng = np.random.default_rng(4)
    state = random_state(rng, 8, 16, "full")
    peaks = []
    for n in (20_000, 160_000):
        X = rng.normal(size=(n, 16))
        tracemalloc.start()
        e_step(X, state, block_size=512)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # 8x the rows: peak must stay within the same bound (a few block-sized temporaries).
    assert peaks[1] < 1.5 * peaks[0] + 1_000_000
    assert peaks[1] < 160_000 * 8 * 16 * 0.5  # far below an (n, K, d) or even (n, d) float64 array


def test_statistics_from_responsibilities_matches_e_step_resp() -> None:
    rng = np.random.default_rng(5)
    state = random_state(rng, 3, 4, "diag")
    X = rng.normal(size=(100, 4))
    logp = direct_log_prob(X, state)
    resp = np.exp(logp - logsumexp(logp, axis=1)[:, None])
    a = statistics_from_responsibilities(X, resp, "diag", block_size=9)
    b = e_step(X, state)
    np.testing.assert_allclose(a.sxx, b.sxx, rtol=1e-10)
    np.testing.assert_allclose(a.nk, b.nk, rtol=1e-10)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_shared_accumulator_e_step_equals_one_thread(monkeypatch: pytest.MonkeyPatch, k: int, weighted: bool) -> None:
    """Large full factor statistics: the threads split each block's components over one
    accumulator (K = 1: a multi-threaded BLAS); the result is the single-thread E-step's."""
    from fedgmm.em import kernels
    from fedgmm.em import stats as em_stats

    rng = np.random.default_rng(5)
    d = 80
    state = random_state(rng, k, d, "full")
    X = rng.normal(scale=2.0, size=(500, d))
    w = rng.uniform(0.0, 2.0, size=500) if weighted else None
    em_stats.set_num_threads(1)
    try:
        alone = e_step(X, state, block_size=64, shift=X.mean(0), sample_weight=w)
        monkeypatch.setattr(kernels, "SHARED_ACCUMULATOR_BYTES", 0)
        monkeypatch.setattr(em_stats, "MIN_FLOPS_PER_THREAD", 1.0)
        em_stats.set_num_threads(2)
        assert em_stats._component_threads("full", k, d, 500) == min(2, k)
        split = e_step(X, state, block_size=64, shift=X.mean(0), sample_weight=w)
    finally:
        em_stats.set_num_threads(None)
    assert split.log_likelihood == pytest.approx(alone.log_likelihood, rel=1e-13)
    for a, b in ((split.nk, alone.nk), (split.sx, alone.sx), (split.sxx, alone.sxx)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-10)

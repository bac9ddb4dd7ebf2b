"""The compiled one-pass E-step (diag, spherical) gives the numpy passes' statistics, and
the numpy passes take over without numba."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from fedgmm.em import e_step, fused
from fedgmm.em.kernels import make_kernel
from fedgmm.mixture import MixtureState

numba = pytest.importorskip("numba")


def mixture(rng: np.random.Generator, ctype: str, k: int, d: int) -> MixtureState:
    """Random diag/spherical mixture with one zero-weight (impossible) component."""
    weights = rng.dirichlet(np.ones(k))
    weights[1] = 0.0
    weights /= weights.sum()
    cov = rng.uniform(0.3, 2.0, size=(k, d) if ctype == "diag" else k)
    return MixtureState.from_covariances(weights, rng.normal(scale=2.0, size=(k, d)), cov, ctype)  # type: ignore[arg-type]


@pytest.mark.parametrize("ctype", ["diag", "spherical"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
def test_fused_step_matches_numpy_passes(monkeypatch: pytest.MonkeyPatch, ctype: str, dtype: type, weighted: bool) -> None:
    rng = np.random.default_rng(3)
    k, d, n = 5, 33, 1001  # d where the compiled step is used; n not a multiple of its row tile
    state = mixture(rng, ctype, k, d)
    labels = rng.choice([0, 2, 3, 4], size=n)  # rows from all the possible components
    X = np.asfortranarray(state.means[labels] + rng.normal(size=(n, d)))  # strided rows too
    w = rng.uniform(0.0, 3.0, size=n) if weighted else None
    if w is not None:
        w[:10] = 0.0
    shift = X.mean(axis=0) + 0.3  # not the mean: Σ r x̃ does not cancel
    kernel = make_kernel(ctype, k, d, state=state, shift=shift, dtype=dtype)
    if dtype == np.float64 or ctype == "diag":
        assert kernel.has_fused_step
    compiled = e_step(X, state, shift=shift, dtype=dtype, sample_weight=w, block_size=97)
    monkeypatch.setattr(fused, "ENABLED", False)
    assert not make_kernel(ctype, k, d, state=state, shift=shift, dtype=dtype).has_fused_step
    passes = e_step(X, state, shift=shift, dtype=dtype, sample_weight=w, block_size=97)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    assert compiled.log_likelihood == pytest.approx(passes.log_likelihood, rel=rtol)
    # Round-off is relative to the sums of magnitudes (the centred Σ r x̃ nearly cancel).
    xc = np.abs(X - shift) * (1.0 if w is None else w[:, None])
    np.testing.assert_allclose(compiled.nk, passes.nk, rtol=rtol, atol=rtol * passes.nk.sum())
    np.testing.assert_allclose(compiled.sx, passes.sx, rtol=rtol, atol=rtol * xc.sum(axis=0).max())
    np.testing.assert_allclose(compiled.sxx, passes.sxx, rtol=rtol, atol=rtol * (xc * np.abs(X - shift)).sum(axis=0).max())
    assert compiled.nk[1] == 0.0  # the zero-weight component gets no responsibility


def test_numpy_passes_without_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    state = mixture(rng, "diag", 3, 20)
    X = rng.normal(size=(200, 20))
    assert make_kernel("diag", 3, 20, state=state).has_fused_step
    with_numba = e_step(X, state)
    monkeypatch.setattr(fused, "_STEPS", None)
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now raises ImportError
    assert fused.block_step("diag") is None
    assert not make_kernel("diag", 3, 20, state=state).has_fused_step
    without = e_step(X, state)
    assert without.log_likelihood == pytest.approx(with_numba.log_likelihood, rel=1e-12)
    np.testing.assert_allclose(without.sxx, with_numba.sxx, rtol=1e-12)


@pytest.mark.parametrize("ctype", ["diag", "spherical"])
def test_dense_responsibilities_hand_over_to_numpy_passes(monkeypatch: pytest.MonkeyPatch, ctype: str) -> None:
    rng = np.random.default_rng(5)
    k, d, n = 4, 20, 600
    cov = np.full((k, d), 50.0) if ctype == "diag" else np.full(k, 50.0)
    state = MixtureState.from_covariances(np.full(k, 1 / k), rng.normal(scale=0.1, size=(k, d)), cov, ctype)  # type: ignore[arg-type]
    X = rng.normal(size=(n, d))  # every row keeps all K responsibilities
    kernel = make_kernel(ctype, k, d, state=state, shift=np.zeros(d))
    assert kernel.has_fused_step
    kernel.fused_step(X[:100], None, -45.0)
    assert not kernel.has_fused_step  # the first block was dense: the numpy passes take the rest
    mixed = e_step(X, state, block_size=100)  # block 1 compiled, blocks 2-6 numpy
    monkeypatch.setattr(fused, "ENABLED", False)
    passes = e_step(X, state, block_size=100)
    assert mixed.log_likelihood == pytest.approx(passes.log_likelihood, rel=1e-12)
    np.testing.assert_allclose(mixed.nk, passes.nk, rtol=1e-12)
    np.testing.assert_allclose(mixed.sxx, passes.sxx, rtol=1e-12)

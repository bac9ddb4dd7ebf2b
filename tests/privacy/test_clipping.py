"""Clipping bounds the L2 sensitivity of every E-step statistic under add/remove one row."""

from __future__ import annotations

import numpy as np
import pytest

from fedgmm.em.stats import e_step
from fedgmm.mixture import MixtureState
from fedgmm.privacy.clipping import Sensitivity, clip_rows, norm_bound


def _state(ctype: str, rng: np.random.Generator, k: int = 3, d: int = 4) -> MixtureState:
    cov = {
        "full": np.broadcast_to(np.eye(d), (k, d, d)).copy(),
        "tied": np.eye(d),
        "diag": np.ones((k, d)),
        "spherical": np.ones(k),
    }[ctype]
    return MixtureState.from_covariances(np.full(k, 1 / k), rng.normal(size=(k, d)), cov, ctype)  # type: ignore[arg-type]


def test_clip_rows_bounds_norms_and_keeps_short_rows() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5)) * 3
    Xc, n = clip_rows(X, 4.0)
    norms = np.linalg.norm(Xc, axis=1)
    assert np.all(norms <= 4.0 + 1e-12)
    short = np.linalg.norm(X, axis=1) <= 4.0
    np.testing.assert_array_equal(Xc[short], X[short])
    assert n == int((~short).sum()) > 0


def test_norm_bound_from_public_variances() -> None:
    assert norm_bound(16) == pytest.approx(1.5 * 4.0)
    assert norm_bound(2, variances=np.array([9.0, 16.0]), factor=2.0) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        norm_bound(2, variances=np.array([1.0, -1.0]))


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
def test_one_row_moves_each_statistic_by_at_most_its_sensitivity(ctype: str) -> None:
    rng = np.random.default_rng(1)
    B = 2.5
    sens = Sensitivity(B)
    state = _state(ctype, rng)
    base, _ = clip_rows(rng.normal(size=(50, 4)) * 2, B)
    worst = [0.0, 0.0, 0.0]
    for trial in range(40):
        # Extreme rows: on the sphere of radius B, in random and axis-aligned directions.
        row = rng.normal(size=(1, 4)) if trial % 2 else np.eye(4)[[trial % 4]] * rng.choice([-1, 1])
        row = row / np.linalg.norm(row) * B
        a = e_step(base, state, shift=np.zeros(4))
        b = e_step(np.vstack([base, row]), state, shift=np.zeros(4))
        worst[0] = max(worst[0], float(np.linalg.norm(b.nk - a.nk)))
        worst[1] = max(worst[1], float(np.linalg.norm(b.sx - a.sx)))
        diff = b.sxx - a.sxx
        if ctype in ("full", "tied"):
            # Only the upper triangle is released (the lower one is its mirror).
            iu = np.triu_indices(4)
            diff = diff[..., iu[0], iu[1]]
        worst[2] = max(worst[2], float(np.linalg.norm(diff)))
    assert worst[0] <= sens.count + 1e-9
    assert worst[1] <= sens.first + 1e-9
    assert worst[2] <= sens.second + 1e-9
    # The bounds are not vacuous: a single component state attains them.
    assert worst[1] > 0.3 * sens.first


def test_chi_bound_is_the_chi_quantile_of_a_standard_normal_row() -> None:
    from scipy.stats import chi

    from fedgmm.privacy.clipping import chi_bound

    assert chi_bound(16, 0.9) == pytest.approx(chi.ppf(0.9, 16))
    assert chi_bound(16, 0.5) < chi_bound(16, 0.9) < chi_bound(16, 0.99) < chi_bound(32, 0.99)
    # What it promises: about that share of standard-normal rows is left whole.
    rows = np.random.default_rng(0).standard_normal((20000, 16))
    kept = float(np.mean(np.linalg.norm(rows, axis=1) <= chi_bound(16, 0.9)))
    assert kept == pytest.approx(0.9, abs=0.01)
    for bad in ((0, 0.9), (4, 0.0), (4, 1.0)):
        with pytest.raises(ValueError):
            chi_bound(*bad)

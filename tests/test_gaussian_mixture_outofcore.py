"""Fits on a memory-mapped ``.npy`` stream it block by block: same model, no copy of the data."""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from fedgmm import GaussianMixture


def write_npy(path: Path, n: int, d: int, dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(3, d))
    X = (centers[rng.integers(3, size=n)] + rng.normal(size=(n, d))).astype(dtype)
    np.save(path, X)
    return X


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("init_params", ["k-means++", "random_from_data"])
def test_memmap_fit_equals_in_memory_fit_without_copying(tmp_path: Path, dtype: str, init_params: str) -> None:
    n, d = 120_000, 32
    X = write_npy(tmp_path / "x.npy", n, d, dtype)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    w = np.random.default_rng(1).uniform(0.5, 2.0, size=n)
    kw = dict(n_components=3, covariance_type="full", init_params=init_params, random_state=0, max_iter=5, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        in_memory = GaussianMixture(**kw).fit(X, sample_weight=w)
        tracemalloc.start()
        streamed = GaussianMixture(**kw).fit(mapped, sample_weight=w)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    np.testing.assert_allclose(streamed.means_, in_memory.means_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(streamed.covariances_, in_memory.covariances_, rtol=1e-12, atol=1e-12)
    assert streamed.lower_bound_ == pytest.approx(in_memory.lower_bound_, rel=1e-12)
    # No copy of the data was ever allocated (one would be >= nbytes; a float64 cast of
    # float32 data 2x): only block-sized temporaries, a few MiB whatever n, plus for
    # k-means++ four float64 numbers per row (row norms, closest distances, their cumsum).
    assert peak < 0.5 * X.nbytes, (peak, X.nbytes)


def test_memmap_scoring_and_partial_fit_do_not_copy(tmp_path: Path) -> None:
    n, d = 120_000, 32
    write_npy(tmp_path / "x.npy", n, d, "float64")
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    gm = GaussianMixture(3, init_params="random_from_data", random_state=0)
    tracemalloc.start()
    for rows in np.array_split(np.arange(n), 4):
        gm.partial_fit(mapped[rows[0] : rows[-1] + 1])
    logp = gm.score_samples(mapped)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert logp.shape == (n,) and np.all(np.isfinite(logp))
    assert peak < 0.2 * mapped.nbytes, (peak, mapped.nbytes)


def test_kmeans_plusplus_seeding_is_scikit_learns() -> None:
    """The streaming k-means++ picks the rows scikit-learn's kmeans_plusplus picks."""
    from sklearn.cluster import kmeans_plusplus

    from fedgmm.em.init import kmeans_plusplus_indices

    for seed in range(6):
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(3000, 7)) * rng.uniform(0.1, 10.0)
        w = None if seed % 2 else rng.uniform(0.0, 3.0, size=3000)
        _, expected = kmeans_plusplus(X, 9, random_state=seed, sample_weight=w)
        got = kmeans_plusplus_indices(X, 9, np.random.RandomState(seed), w, block_size=257)
        np.testing.assert_array_equal(got, expected)


def test_non_finite_value_in_a_late_block_is_found(tmp_path: Path) -> None:
    n, d = 50_000, 32
    X = write_npy(tmp_path / "x.npy", n, d, "float64")
    X[-3, 5] = np.nan
    np.save(tmp_path / "bad.npy", X)
    with pytest.raises(ValueError, match="NaN"):
        GaussianMixture(2).fit(np.load(tmp_path / "bad.npy", mmap_mode="r"))

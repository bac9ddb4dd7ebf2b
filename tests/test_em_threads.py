"""BLAS thread limits of the engine: small d × d linear algebra in one thread, large in all."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from fedgmm import GaussianMixture
from fedgmm.em import stats
from fedgmm.em.stats import THREADED_LINALG_MIN_FEATURES, get_num_threads, linear_algebra_threads


def _blas_threads() -> set[int]:
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


@pytest.fixture
def two_blas_threads() -> object:
    if not _blas_threads():
        pytest.skip("no BLAS library seen by threadpoolctl")
    with threadpool_limits(limits=2, user_api="blas"):
        yield


def test_small_linear_algebra_runs_in_one_blas_thread(two_blas_threads: object) -> None:
    with linear_algebra_threads(THREADED_LINALG_MIN_FEATURES - 1):
        assert _blas_threads() == {1}
    assert _blas_threads() == {2}  # restored on exit


def test_large_linear_algebra_keeps_the_allowed_threads(two_blas_threads: object) -> None:
    stats.set_num_threads(2)
    try:
        with linear_algebra_threads(1), linear_algebra_threads(THREADED_LINALG_MIN_FEATURES):
            # Nested inside a one-thread context, the large one still gets the allowed threads.
            assert _blas_threads() == {get_num_threads()} == {2}
    finally:
        stats.set_num_threads(None)


def test_fit_leaves_the_callers_blas_threads_alone(two_blas_threads: object) -> None:
    X = np.random.default_rng(0).normal(size=(200, 3))
    GaussianMixture(2, random_state=0).fit(X).partial_fit(X)
    assert _blas_threads() == {2}

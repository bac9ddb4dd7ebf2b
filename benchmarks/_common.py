"""Helpers shared by the EM benchmarks: data, a common initialisation, timing and peak memory."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np


def make_data(n: int, d: int, k: int, seed: int) -> np.ndarray:
    """``n`` rows of ``k`` axis-aligned Gaussian blobs in ``d`` dimensions, float64 ``(n, d)``."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(k, d))
    scales = rng.uniform(0.5, 1.5, size=(k, 1, d))
    labels = rng.integers(k, size=n)
    return centers[labels] + rng.normal(size=(n, d)) * scales[labels, 0]


def init_arrays(X: np.ndarray, k: int, ctype: str, seed: int) -> dict[str, np.ndarray]:
    """``weights_init``/``means_init``/``precisions_init`` both estimators start from."""
    rng = np.random.default_rng(seed)
    d = X.shape[1]
    var = X.var(axis=0).mean()
    prec = {
        "full": np.stack([np.eye(d) / var] * k),
        "tied": np.eye(d) / var,
        "diag": np.full((k, d), 1 / var),
        "spherical": np.full(k, 1 / var),
    }[ctype]
    return {
        "weights_init": np.full(k, 1.0 / k),
        "means_init": X[rng.choice(X.shape[0], k, replace=False)],
        "precisions_init": prec,
    }


def peak_memory(fit: Callable[[], Any]) -> int:
    """Peak bytes allocated (tracemalloc: every NumPy buffer) while ``fit()`` runs, beyond its inputs."""
    tracemalloc.start()
    try:
        fit()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def best_times(fits: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """Run every fit ``repeats`` times, interleaved; best wall and process-CPU seconds, last models."""
    wall = dict.fromkeys(fits, np.inf)
    cpu = dict.fromkeys(fits, np.inf)
    models: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fit in fits.items():
            w0, c0 = time.perf_counter(), time.process_time()
            models[name] = fit()
            wall[name] = min(wall[name], time.perf_counter() - w0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    return wall, cpu, models


def relative_ll_gap(ours: Any, reference: Any) -> float:
    """``|Δ lower_bound_| / |reference lower_bound_|`` of two fitted mixtures."""
    return float(abs(ours.lower_bound_ - reference.lower_bound_) / abs(reference.lower_bound_))

"""Server aggregation time: sample-free reduction vs sampling + EM, for many clients' local models.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_oneshot.py [--clients 1000] [--local-k 10] [--dim 32] [--k 10]
        [--skip-sampling] [--repeats 3]

Synthetic local models: each client's components are noisy pieces of K overlapping
clusters (random full covariances). Prints wall and CPU seconds per aggregation (best of
``--repeats``); the headline is FedGenGMM's server aggregation with ``aggregation="reduce"``
at its defaults (union of the uploads, then the MM reduction with the library's ``n_init``), beside an
anchor measured in the same run: one float64 GEMM of the reduction's size
(``N × d(d+1)/2 × K``), so the figure can be read on a loaded machine.

BLAS and OpenMP are held to one thread (``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``,
unless set), but :func:`~fedgmm.federated.reduce.reduce_mixture` runs its independent
restarts in up to :func:`fedgmm.em.stats.get_num_threads` Python threads (the CPUs
available unless ``set_num_threads`` says otherwise) when the reduction is large enough;
the lines print how many, and CPU time above wall time is that parallelism. The result
is the same for any thread count.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import time
import warnings
from collections.abc import Callable

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from fedgmm.em.stats import get_num_threads
from fedgmm.federated.reduce import _restart_threads, reduce_mixture
from fedgmm.federated.spec import MethodSpec
from fedgmm.federated.union import deregularized_factors, union_mixture
from fedgmm.gaussian_mixture import GaussianMixture
from fedgmm.mixture import MixtureState, sample_gaussians


def best_of(repeats: int, fn: Callable[[], object]) -> Timer:
    """The run with the least CPU time of ``repeats``."""
    best: Timer | None = None
    for _ in range(repeats):
        with Timer() as t:
            fn()
        if best is None or t.cpu < best.cpu:
            best = t
    assert best is not None
    return best


class Timer:
    """Wall and CPU seconds of a block (CPU time is the fairer figure on a shared machine)."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def __str__(self) -> str:
        return f"{self.wall:.3f} s wall, {self.cpu:.3f} s CPU"


def local_models(n_clients: int, local_k: int, d: int, k: int, seed: int, spread: float) -> list[MixtureState]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(k, d))
    out = []
    for _ in range(n_clients):
        lab = rng.integers(k, size=local_k)
        a = rng.normal(size=(local_k, d, d)) / np.sqrt(d)
        out.append(MixtureState.from_covariances(
            rng.dirichlet(np.ones(local_k)), centres[lab] + rng.normal(scale=0.5, size=(local_k, d)),
            a @ a.transpose(0, 2, 1) + 0.05 * np.eye(d), "full"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--local-k", type=int, default=10)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--rows-per-client", type=int, default=100)
    p.add_argument("--spread", type=float, default=0.5, help="scale of the cluster centres (1: barely separated)")
    p.add_argument("--skip-sampling", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    states = local_models(a.clients, a.local_k, a.dim, a.k, 0, a.spread)
    counts = [a.rows_per_client] * a.clients
    union = union_mixture(states, counts)
    tri = a.dim * (a.dim + 1) // 2
    rng = np.random.default_rng(0)
    m2, w = rng.normal(size=(union.n_components, tri)), rng.normal(size=(tri, a.k))
    anchor = best_of(a.repeats, lambda: m2 @ w)
    print(f"anchor: one float64 GEMM {union.n_components} x {tri} x {a.k}: {anchor}")
    t = best_of(a.repeats, lambda: union_mixture(states, counts))
    print(f"union of {union.n_components} components (d = {a.dim}): {t}")

    n_init = MethodSpec.__dataclass_fields__["n_init"].default  # the library's server restarts

    def server() -> None:
        reduce_mixture(union_mixture(states, counts), a.k, method="mm", n_init=n_init, local_reg_covar=0.05, seed=0)

    t = best_of(a.repeats, server)
    threads = _restart_threads(union.n_components, tri, a.k, n_init)
    print(f"SERVER AGGREGATION (union + reduce, mm, n_init={n_init} = FedGenGMM's default): {t} "
          f"= {t.cpu / anchor.cpu:.0f} anchor GEMMs (CPU); restarts in {threads} Python thread(s) "
          f"of get_num_threads() = {get_num_threads()}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    for method in ("mm", "hem"):
        for starts in (1, 3, 5, 10):
            t = best_of(a.repeats, lambda m=method, s=starts: reduce_mixture(  # type: ignore[misc]
                union, a.k, method=m, n_init=s, local_reg_covar=0.05, virtual_samples=float(sum(counts)), seed=0))
            r = reduce_mixture(union, a.k, method=method, n_init=starts, local_reg_covar=0.05,  # type: ignore[arg-type]
                               virtual_samples=float(sum(counts)), seed=0)
            print(f"reduce to K = {a.k}, {method}, n_init={starts}: {t} ({r.n_iter} iterations, objective {r.objective:.4f}, "
                  f"{_restart_threads(union.n_components, tri, a.k, starts)} thread(s))")
    if not a.skip_sampling:
        with Timer() as t:
            rng = np.random.default_rng(0)
            x, _ = sample_gaussians(union.weights, union.means, deregularized_factors(union, 0.05), 5 * sum(counts), rng)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                GaussianMixture(a.k, random_state=0).fit(x)
        print(f"sample 5 x Σn = {x.shape[0]} rows + EM to K = {a.k}: {t}")


if __name__ == "__main__":
    main()

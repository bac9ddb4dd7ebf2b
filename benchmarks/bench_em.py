"""EM iteration speed and memory: fedgmm.GaussianMixture against scikit-learn's, same init, same iterations.

Run by hand (not a test):  .venv/bin/python benchmarks/bench_em.py [--n 200000 --d 32 --k 16]

Before/after in one run: ``--baseline fedgmm_base`` adds a column for another importable
copy of the package, e.g. an older commit renamed::

    git archive <commit> src | tar -x -C /tmp/base
    cp -r /tmp/base/src/fedgmm /tmp/base_pkg/fedgmm_base
    grep -rl fedgmm /tmp/base_pkg/fedgmm_base | xargs sed -i 's/\bfedgmm\\./fedgmm_base./g; s/from fedgmm import/from fedgmm_base import/g'
    PYTHONPATH=/tmp/base_pkg .venv/bin/python benchmarks/bench_em.py --baseline fedgmm_base

Both estimators start from the same weights/means/precisions and run exactly ``--iters``
EM iterations (tol=0), so they do the same work and must reach the same log-likelihood.
The runs are interleaved (scikit-learn, ours float64, ours float32, then again) and each
timing is the best of ``--repeats`` (the machines are shared and noisy); the speed-up is
scikit-learn's wall time over ours from the same process. The CPU-time ratio (process CPU
seconds, all threads) is printed too: it is the ratio of work done, and less sensitive to
other load on the machine than wall time.

The floor of each covariance type is measured in the same run: this machine's GEMM
GFLOP/s (float64 and float32) and copy bandwidth, against the flops of fedgmm's matrix
products per iteration and one read of ``X`` (benchmarks/bench_machine.py); "× floor" is
fedgmm's time over that bound.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import best_times, init_arrays, make_data, peak_memory, relative_ll_gap
from bench_machine import bandwidth_gbs, em_floor_seconds, gemm_gflops
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from threadpoolctl import threadpool_info

from fedgmm import GaussianMixture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--types", default="full,tied,diag,spherical")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", default=None, help="importable package with a GaussianMixture to time too")
    args = parser.parse_args()
    baseline = importlib.import_module(args.baseline).GaussianMixture if args.baseline else None

    X = make_data(args.n, args.d, args.k, args.seed)
    blas = ", ".join(f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads)" for i in threadpool_info())
    print(f"# EM benchmark: N={args.n:,} d={args.d} K={args.k}, {args.iters} iterations from the same init, best of {args.repeats}")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, BLAS: {blas}")
    print(f"# data: {X.nbytes / 2**20:.0f} MiB float64 (not counted in peak memory, which is extra allocation during fit)")
    peak = {"float64": gemm_gflops(np.float64), "float32": gemm_gflops(np.float32)}
    bw = bandwidth_gbs()
    print(f"# this run: GEMM {peak['float64']:.1f} GFLOP/s float64, {peak['float32']:.1f} float32; copy bandwidth {bw:.1f} GB/s")
    header = (
        f"{'covariance':<10} {'dtype':<8} {'sklearn s/iter':>14} {'fedgmm s/iter':>14} {'speed-up':>9} "
        f"{'CPU ratio':>9} {'sk peak MiB':>12} {'ours peak MiB':>13} {'|Δ ll| rel':>11} {'floor s':>8} {'× floor':>8}"
        + (f" {'base s/iter':>11} {'vs base':>8}" if baseline else "")
    )
    print(header)
    print("-" * len(header))
    warnings.simplefilter("ignore", ConvergenceWarning)
    for ctype in args.types.split(","):
        init = init_arrays(X, args.k, ctype, args.seed)
        common = dict(n_components=args.k, covariance_type=ctype, max_iter=args.iters, tol=0.0, **init)
        fits: dict[str, Callable[[], Any]] = {
            "sklearn": lambda common=common: SkGaussianMixture(**common).fit(X),
            "float64": lambda common=common: GaussianMixture(**common, dtype="float64").fit(X),
            "float32": lambda common=common: GaussianMixture(**common, dtype="float32").fit(X),
        }
        if baseline is not None:
            fits["base-float64"] = lambda common=common: baseline(**common, dtype="float64").fit(X)
            fits["base-float32"] = lambda common=common: baseline(**common, dtype="float32").fit(X)
        wall, cpu, models = best_times(fits, args.repeats)
        mem = {name: peak_memory(fit) for name, fit in fits.items() if not name.startswith("base")}
        sk = models["sklearn"]
        for dtype in ("float64", "float32"):
            ours = models[dtype]
            assert ours.n_iter_ == sk.n_iter_ == args.iters
            dll = relative_ll_gap(ours, sk)
            floor, _ = em_floor_seconds(ctype, args.n, args.d, args.k, np.dtype(dtype).itemsize, peak[dtype], bw)
            per_iter = wall[dtype] / args.iters
            line = (
                f"{ctype:<10} {dtype:<8} {wall['sklearn'] / args.iters:>14.3f} {per_iter:>14.3f} "
                f"{wall['sklearn'] / wall[dtype]:>8.1f}x {cpu['sklearn'] / cpu[dtype]:>8.1f}x "
                f"{mem['sklearn'] / 2**20:>12.1f} {mem[dtype] / 2**20:>13.1f} {dll:>11.1e} "
                f"{floor:>8.3f} {per_iter / floor:>7.1f}x"
            )
            if baseline is not None:
                base = wall[f"base-{dtype}"]
                line += f" {base / args.iters:>11.3f} {base / wall[dtype]:>7.1f}x"
            print(line, flush=True)


if __name__ == "__main__":
    main()

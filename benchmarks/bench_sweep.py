"""Shape sweep: fedgmm against scikit-learn over d × K, per covariance type, same init, same iterations.

Run by hand (not a test):
    .venv/bin/python benchmarks/bench_sweep.py                              (all four types, float64)
    .venv/bin/python benchmarks/bench_sweep.py --types full --d 128,512 --k 16

For every point N is chosen so that one scikit-learn iteration costs about ``--budget``
flops (N = clip(budget / flops-per-row, max(4K, 256), 200,000)). A point whose scikit-learn
run is estimated (from this run's GEMM rate) above ``--max-seconds`` is printed as skipped
with the reason, never dropped. Each point runs scikit-learn and fedgmm interleaved,
``--repeats`` times, and prints the best wall times, their ratio, both peak extra
allocations (tracemalloc, one extra run each, the same method for both) and the relative
log-likelihood difference; a summary lists every point slower than scikit-learn or
with more peak memory.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import best_times, init_arrays, make_data, peak_memory, relative_ll_gap
from bench_machine import gemm_gflops
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from fedgmm import GaussianMixture
from fedgmm.em.kernels import full_formulation


def sklearn_flops_per_row(ctype: str, d: int, k: int) -> float:
    """Rough flops per row of one scikit-learn EM iteration (to size N and estimate its time)."""
    if ctype == "full":
        return 4.0 * d * d * k
    if ctype == "tied":
        return 2.0 * d * d * k + 2.0 * d * d
    return 8.0 * d * k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", default="2,8,32,128,512,2000")
    parser.add_argument("--k", default="2,16,128")
    parser.add_argument("--types", default="full,diag,tied,spherical")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--budget", type=float, default=4e9, help="scikit-learn flops per iteration per point")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="skip points whose scikit-learn fit would take longer")
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    gflops = gemm_gflops(np.float64)
    print(f"# shape sweep, {args.dtype}, {args.iters} iterations from the same init, best of {args.repeats}, interleaved")
    print(f"# this run: GEMM {gflops:.1f} GFLOP/s float64 (scikit-learn's time is estimated at a quarter of it to skip points)")
    header = (
        f"{'type':<9} {'d':>5} {'K':>4} {'N':>7} {'form':>6} {'sklearn s':>10} {'fedgmm s':>9} {'speed-up':>8} "
        f"{'sk MiB':>8} {'ours MiB':>8} {'|Δll| rel':>9}"
    )
    print(header)
    print("-" * len(header))
    slower, skipped = [], []
    for ctype in args.types.split(","):
        for d in (int(v) for v in args.d.split(",")):
            for k in (int(v) for v in args.k.split(",")):
                per_row = sklearn_flops_per_row(ctype, d, k)
                n = int(np.clip(args.budget / per_row, max(4 * k, 256), 200_000))
                form = full_formulation(k, d) if ctype == "full" else "-"
                estimate = n * per_row * args.iters * (args.repeats + 1) / (0.25 * gflops * 1e9)
                if estimate > args.max_seconds:
                    reason = f"scikit-learn estimated at {estimate:.0f} s > --max-seconds {args.max_seconds:.0f}"
                    print(f"{ctype:<9} {d:>5} {k:>4} {n:>7} {form:>6} skipped: {reason}", flush=True)
                    skipped.append((ctype, d, k))
                    continue
                X = make_data(n, d, k, args.seed)
                common = dict(
                    n_components=k, covariance_type=ctype, max_iter=args.iters, tol=0.0,
                    **init_arrays(X, k, ctype, args.seed),
                )
                fits: dict[str, Callable[[], Any]] = {
                    "sklearn": lambda common=common, X=X: SkGaussianMixture(**common).fit(X),
                    "fedgmm": lambda common=common, X=X: GaussianMixture(**common, dtype=args.dtype).fit(X),
                }
                wall, _, models = best_times(fits, args.repeats)
                mem = {name: peak_memory(fit) for name, fit in fits.items()}
                dll = relative_ll_gap(models["fedgmm"], models["sklearn"])
                ratio = wall["sklearn"] / wall["fedgmm"]
                print(
                    f"{ctype:<9} {d:>5} {k:>4} {n:>7} {form:>6} {wall['sklearn'] / args.iters:>10.3f} "
                    f"{wall['fedgmm'] / args.iters:>9.3f} {ratio:>7.1f}x {mem['sklearn'] / 2**20:>8.1f} "
                    f"{mem['fedgmm'] / 2**20:>8.1f} {dll:>9.1e}",
                    flush=True,
                )
                if ratio < 1.0 or mem["fedgmm"] > mem["sklearn"]:
                    slower.append((ctype, d, k, ratio, mem["fedgmm"] / max(1, mem["sklearn"])))
    print(f"# points slower than scikit-learn or with more peak memory: {len(slower)}")
    for ctype, d, k, ratio, mem_ratio in slower:
        print(f"#   {ctype} d={d} K={k}: speed-up {ratio:.2f}x, memory ratio {mem_ratio:.2f}")
    print(f"# skipped points (reason printed above): {len(skipped)}")


if __name__ == "__main__":
    main()

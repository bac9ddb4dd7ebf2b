"""Shape sweep: fedgmm against scikit-learn over d × K, per covariance type, same init, same iterations.

Run by hand (not a test):
    .venv/bin/python benchmarks/bench_sweep.py                       (full covariance, float64)
    .venv/bin/python benchmarks/bench_sweep.py --types full,tied,diag,spherical

For every point N is chosen so that one scikit-learn iteration costs about ``--budget``
flops (N = clip(budget / flops-per-row, max(4K, 256), 200,000)); a point whose
parameters alone (K·d² float64 per array for full) exceed ``--max-param-gib``, or whose
smallest N still costs over 25× the budget, is printed as skipped with the reason, never
dropped. Each point runs scikit-learn and fedgmm interleaved, ``--repeats`` times, and
reports the best wall times, their ratio, both peak extra allocations (tracemalloc, one
extra run each) and the relative log-likelihood difference.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from bench_em import init_arrays, make_data
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from fedgmm import GaussianMixture
from fedgmm.em.kernels import full_formulation


def sklearn_flops_per_row(ctype: str, d: int, k: int) -> float:
    """Rough flops per row of one scikit-learn EM iteration (to size N)."""
    if ctype == "full":
        return 4.0 * d * d * k
    if ctype == "tied":
        return 2.0 * d * d * k + 2.0 * d * d
    return 8.0 * d * k


def param_bytes(ctype: str, d: int, k: int) -> int:
    return 8 * {"full": k * d * d, "tied": d * d, "diag": k * d, "spherical": k}[ctype]


def timed(fit: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    model = fit()
    return time.perf_counter() - t0, model


def peak_memory(fit: Callable[[], Any]) -> int:
    tracemalloc.start()
    fit()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", default="2,8,32,128,512,2000")
    parser.add_argument("--k", default="2,16,128")
    parser.add_argument("--types", default="full")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--budget", type=float, default=4e9, help="scikit-learn flops per iteration per point")
    parser.add_argument("--max-param-gib", type=float, default=1.0)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    print(f"# shape sweep, {args.dtype}, {args.iters} iterations from the same init, best of {args.repeats}, interleaved")
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
                lo = max(4 * k, 256)
                n = int(np.clip(args.budget / per_row, lo, 200_000))
                form = full_formulation(k, d) if ctype == "full" else "-"
                reason = None
                if param_bytes(ctype, d, k) > args.max_param_gib * 2**30:
                    reason = f"parameters {param_bytes(ctype, d, k) / 2**30:.1f} GiB per array > --max-param-gib"
                elif n * per_row > 25 * args.budget:
                    reason = f"N={n} rows cost {n * per_row / args.budget:.0f}x the budget"
                if reason:
                    print(f"{ctype:<9} {d:>5} {k:>4} {'-':>7} {form:>6} skipped: {reason}", flush=True)
                    skipped.append((ctype, d, k, reason))
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
                best = dict.fromkeys(fits, np.inf)
                models: dict[str, Any] = {}
                for _ in range(args.repeats):
                    for name, fit in fits.items():
                        seconds, models[name] = timed(fit)
                        best[name] = min(best[name], seconds)
                mem = {name: peak_memory(fit) for name, fit in fits.items()}
                sk, ours = models["sklearn"], models["fedgmm"]
                dll = abs(ours.lower_bound_ - sk.lower_bound_) / abs(sk.lower_bound_)
                ratio = best["sklearn"] / best["fedgmm"]
                print(
                    f"{ctype:<9} {d:>5} {k:>4} {n:>7} {form:>6} {best['sklearn'] / args.iters:>10.3f} "
                    f"{best['fedgmm'] / args.iters:>9.3f} {ratio:>7.1f}x {mem['sklearn'] / 2**20:>8.1f} "
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

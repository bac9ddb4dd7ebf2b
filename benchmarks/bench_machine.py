"""This machine's GEMM peak and memory bandwidth, and the EM floor model (shared by the EM benchmarks).

Run by hand:  .venv/bin/python benchmarks/bench_machine.py
"""

from __future__ import annotations

import time

import numpy as np

from fedgmm.em.kernels import row_flops


def gemm_gflops(dtype: type, n: int = 1536, repeats: int = 3) -> float:
    """Best-of-``repeats`` GFLOP/s of an ``n × n × n`` matrix product (all BLAS threads)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, n)).astype(dtype)
    b = rng.normal(size=(n, n)).astype(dtype)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def bandwidth_gbs(mib: int = 256, repeats: int = 3) -> float:
    """Best-of-``repeats`` memory bandwidth (GB/s) of a large array copy (bytes read + written)."""
    src = np.ones(mib * 2**20 // 8)
    dst = np.empty_like(src)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * src.nbytes / best / 1e9


def em_flops(ctype: str, n: int, d: int, k: int) -> float:
    """Floating-point operations of one fedgmm EM iteration (its matrix products)."""
    return n * row_flops(ctype, k, d)


def em_floor_seconds(ctype: str, n: int, d: int, k: int, itemsize: int, gflops: float, gbs: float) -> tuple[float, str]:
    """Lower bound of one EM iteration: the larger of its GEMM time at peak and one read of ``X``."""
    compute = em_flops(ctype, n, d, k) / (gflops * 1e9)
    memory = n * d * itemsize / (gbs * 1e9)
    return (compute, "GEMM") if compute >= memory else (memory, "memory")


def main() -> None:
    print(f"GEMM float64 {gemm_gflops(np.float64):.1f} GFLOP/s, float32 {gemm_gflops(np.float32):.1f} GFLOP/s, "
          f"copy bandwidth {bandwidth_gbs():.1f} GB/s")


if __name__ == "__main__":
    main()

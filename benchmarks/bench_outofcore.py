"""Out-of-core EM: fedgmm.GaussianMixture.fit on a memory-mapped .npy, wall time and peak extra memory.

Run by hand (not a test):
    quick:  .venv/bin/python benchmarks/bench_outofcore.py                 (0.5 GiB file)
    big:    .venv/bin/python benchmarks/bench_outofcore.py --gib 14 --dir /path/with/space
            (a file larger than half of a 23 GiB machine's memory; needs the disk space)

The file is written block by block (never whole in memory), then opened with
``np.load(mmap_mode="r")`` and fitted. Peak extra allocation is reported three ways:
tracemalloc's peak (every NumPy allocation, excluding the mapping), the peak of the
process's anonymous resident memory (``RssAnon``, sampled every 20 ms: heap, not file
pages), and the ``ru_maxrss`` delta, which also counts the file's pages mapped in while
they are read (page cache the kernel can drop, not allocation).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from fedgmm import GaussianMixture


def write_npy(path: Path, n: int, d: int, k: int, seed: int, block: int = 1 << 16) -> None:
    """Blobs written block by block into a ``.npy`` file (float64)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(k, d))
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, d))
    for start in range(0, n, block):
        stop = min(n, start + block)
        labels = rng.integers(k, size=stop - start)
        out[start:stop] = centers[labels] + rng.normal(size=(stop - start, d))
    out.flush()
    del out


def rss_anon_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


class AnonPeak:
    """Samples ``RssAnon`` in a thread; ``peak`` is the highest value seen (KiB)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.peak, self._stop = interval, rss_anon_kib(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_anon_kib())
            time.sleep(self.interval)

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon_kib())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=0.5, help="size of the data file in GiB (default 0.5)")
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--covariance-type", default="full")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--init", default="k-means++", help="init_params (kmeans copies the data: avoid)")
    parser.add_argument("--dir", default=None, help="directory for the data file (default: the temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the data file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    n = int(args.gib * 2**30 // (8 * args.d))
    directory = Path(args.dir or tempfile.gettempdir())
    path = directory / f"fedgmm-outofcore-{n}x{args.d}.npy"
    mem_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(f"# out-of-core EM: N={n:,} d={args.d} K={args.k} {args.covariance_type}, {args.iters} iterations, init={args.init}")
    print(f"# data file {path}: {n * args.d * 8 / 2**30:.2f} GiB float64; machine memory {mem_total / 2**30:.1f} GiB, {os.cpu_count()} CPUs")
    t0 = time.perf_counter()
    write_npy(path, n, args.d, args.k, args.seed)
    print(f"# written in {time.perf_counter() - t0:.1f} s")
    try:
        X = np.load(path, mmap_mode="r")
        gm = GaussianMixture(
            args.k, covariance_type=args.covariance_type, max_iter=args.iters, tol=0.0,
            init_params=args.init, random_state=args.seed,
        )
        warnings.simplefilter("ignore", ConvergenceWarning)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        anon0 = rss_anon_kib()
        tracemalloc.start()
        with AnonPeak() as anon:
            w0 = time.perf_counter()
            gm.fit(X)
            wall = time.perf_counter() - w0
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"wall time of fit           {wall:10.1f} s  ({wall / max(1, args.iters + 1):.1f} s per pass over the file, init counted as one)")
        print(f"tracemalloc peak           {traced / 2**20:10.1f} MiB")
        print(f"peak RssAnon increase      {(anon.peak - anon0) / 2**10:10.1f} MiB")
        print(f"ru_maxrss increase         {(rss1 - rss0) / 2**10:10.1f} MiB  (includes file pages mapped while read)")
        print(f"data size                  {X.nbytes / 2**20:10.1f} MiB")
        print(f"mean log-likelihood        {gm.lower_bound_:10.4f}")
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()

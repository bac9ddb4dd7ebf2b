"""FedGenGMM at scale: server aggregation time against synthetic-set size and client count, and an end-to-end run.

Run by hand (not a test):
    .venv/bin/python benchmarks/bench_federated.py aggregation   # server step only, 10 … 1,000 clients
    .venv/bin/python benchmarks/bench_federated.py end-to-end --clients 1000 --jobs 2

The aggregation benchmark builds each client's local model by fitting it on that client's
rows (done once, not timed), then times the server step alone — union, sampling the
synthetic set, global EM — for each synthetic-set size. The end-to-end benchmark runs
the whole protocol through the in-process transport (every message serialised as Flower
would send it), and prints the phases' wall times, the bytes each way, and the test
log-likelihood against centralized EM on the pooled rows.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from fedgmm import GaussianMixture
from fedgmm.datasets import load_dataset
from fedgmm.federated.fedgengmm import GlobalFitSettings, fit_global_model, server_rng
from fedgmm.federated.spec import MethodSpec
from fedgmm.federated.union import union_mixture
from fedgmm.inprocess import run_inprocess as run_method
from fedgmm.partition import DirichletPartitioner


def clients_of(n_clients: int, rows_per_client: int, d: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Blobs (8 classes) split over clients by Dirichlet(α=1) label skew, plus a test set."""
    n = n_clients * rows_per_client
    ds = load_dataset("blobs", n_samples=n + 5000, n_features=d, n_classes=8, seed=seed)
    X, y = ds.X[:n], ds.y[:n]
    parts = DirichletPartitioner(num_partitions=n_clients, alpha=1.0, min_partition_size=10, seed=seed, max_attempts=200).split(y)
    return [X[p] for p in parts], ds.X[n:]


def header(what: str) -> None:
    print(f"# {what}")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}")


def aggregation(args: argparse.Namespace) -> None:
    header(f"server aggregation: d={args.d}, K={args.k}, local K={args.local_k}, {args.rows} rows per client")
    print(f"{'clients':>8} {'union comps':>12} {'synthetic':>10} {'rows':>10} {'union+sample s':>15} {'global EM s':>12} {'total s':>9}")
    warnings.simplefilter("ignore", ConvergenceWarning)
    for n_clients in args.clients:
        clients, _ = clients_of(n_clients, args.rows, args.d, args.seed)
        states, counts = [], []
        for i, X in enumerate(clients):
            k = min(args.local_k, max(1, X.shape[0] // 5))
            states.append(GaussianMixture(k, reg_covar=1e-3, random_state=i).fit(X).state_)
            counts.append(X.shape[0])
        total = sum(counts)
        for factor in args.synthetic:
            settings = GlobalFitSettings(n_components=args.k, synthetic_size=float(factor), reg_covar=1e-3)
            rng = server_rng(args.seed)
            t0 = time.perf_counter()
            union = union_mixture(states, counts)
            union.sample(round(factor * total), np.random.default_rng(0))
            t1 = time.perf_counter()
            _, rows, _ = fit_global_model(union, total, settings, rng)
            t2 = time.perf_counter()
            # fit_global_model samples again internally; report the EM share as total minus one sampling
            print(f"{n_clients:>8} {union.n_components:>12} {factor:>9g}x {rows:>10,} {t1 - t0:>15.2f} {t2 - t1 - (t1 - t0):>12.2f} {t2 - t1:>9.2f}")


def end_to_end(args: argparse.Namespace) -> None:
    header(f"end to end: {args.clients[0]} clients x ~{args.rows} rows, d={args.d}, K={args.k}, local K {args.local_range}, {args.jobs} worker(s)")
    clients, X_test = clients_of(args.clients[0], args.rows, args.d, args.seed)
    local: int | tuple[int, int] | None = None
    if args.local_range != "auto":
        parts = [int(v) for v in args.local_range.split("-")]
        local = parts[0] if len(parts) == 1 else (parts[0], parts[1])
    spec = MethodSpec("fedgengmm", n_components=args.k, local_components=local, reg_covar=1e-3, synthetic_size=float(args.synthetic[0]))
    run = run_method(spec, clients, seed=args.seed, n_jobs=args.jobs)
    central = run_method(MethodSpec("centralized", n_components=args.k, reg_covar=1e-3), clients, seed=args.seed)
    comm = run.communication
    print(f"clients: {len(clients)}  rows: {sum(c.shape[0] for c in clients):,}  synthetic rows: {run.extra['synthetic_size']:,}")
    print(f"wall {run.wall_seconds:.1f} s  (client compute summed {run.client_seconds:.1f} s over {args.jobs} worker(s); server {run.server_seconds:.2f} s)")
    print(f"rounds {comm.rounds}  bytes up {comm.bytes_up:,} ({comm.bytes_up / len(clients):,.0f} per client)  bytes down {comm.bytes_down:,}")
    print(f"test log-likelihood: FedGenGMM {run.model.score(X_test):.3f}  centralized {central.model.score(X_test):.3f} (centralized EM {central.wall_seconds:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["aggregation", "end-to-end"])
    parser.add_argument("--clients", type=int, nargs="+", default=None)
    parser.add_argument("--rows", type=int, default=200, help="rows per client (average)")
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--local-k", type=int, default=5)
    parser.add_argument("--local-range", default="auto", help="clients' K: N, MIN-MAX (BIC) or auto (2K)")
    parser.add_argument("--synthetic", type=float, nargs="+", default=None)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.mode == "aggregation":
        args.clients = args.clients or [10, 100, 1000]
        args.synthetic = args.synthetic or [1, 2, 5, 10]
        aggregation(args)
    else:
        args.clients = args.clients or [1000]
        args.synthetic = args.synthetic or [5]
        end_to_end(args)


if __name__ == "__main__":
    main()

"""FedGenGMM(epsilon=...) against centralized, in the issue-10 regime, driving the real estimator.

Fashion-MNIST, 20 Dirichlet(α = 1) clients of ~700 rows, standardised + PCA to 16 dimensions
from the pooled moments and whitened (the per-axis scale the federated transform publishes),
global K = 20 full, held-out test rows. Each ε runs ``FedGenGMM(n_components=20, epsilon=ε,
clip_bound=chi_bound(16), random_state=seed)`` — every DP default is the library's — and
ε = inf is the non-private estimator. Also prints the decomposition at ε = inf of the DP local
fit: clipping + data-independent start, without noise (``--decompose``). The DP noise is
seeded reproducibly (``dp_noise_seed=seed``: a measurement must be reproducible from its seeds;
the library's default, each client's secret, makes the noise unknown to the server).

    .venv/bin/python benchmarks/privacy_dpem.py --eps 1 2 4 8 inf --seeds 0 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import numpy as np

from fedgmm import FedGenGMM, GaussianMixture
from fedgmm.datasets import load_dataset
from fedgmm.privacy.clipping import chi_bound

#: Dimension and global K of the regime.
DIMENSIONS = 16
COMPONENTS = 20


def pca_transform(X: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardise + PCA from pooled moments (what federated preprocessing computes)."""
    mean = X.mean(0)
    std = X.std(0, ddof=1)
    std = np.where(std > 1e-12, std, 1.0)
    corr = np.cov((X - mean) / std, rowvar=False)
    w, v = np.linalg.eigh(corr)
    order = np.argsort(w)[::-1][:p]
    return mean, v[:, order] / std[:, None], w[order]


def dirichlet_clients(y: np.ndarray, n_clients: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    from fedgmm.partition import DirichletPartitioner

    part = DirichletPartitioner(num_partitions=n_clients, alpha=alpha, min_partition_size=20, seed=int(rng.integers(2**31)))
    return [np.asarray(p, dtype=np.intp) for p in part.split(y)]


def regime(seed: int, n_clients: int = 20, rows: int = 700, dataset: str = "fashion-mnist"):
    """Whitened train clients, test rows, for one seed."""
    rng = np.random.default_rng(seed)
    ds = load_dataset(dataset)
    n_train = n_clients * rows
    idx = rng.permutation(ds.X.shape[0])[: n_train + n_train // 3]
    X, y = ds.X[idx].astype(np.float64), ds.y[idx]
    mean, mat, eig = pca_transform(X[:n_train], DIMENSIONS)
    mat = mat / np.sqrt(eig)  # whitened: unit variance per axis
    Xtr, Xte = (X[:n_train] - mean) @ mat, (X[n_train:] - mean) @ mat
    parts = dirichlet_clients(y[:n_train], n_clients, 1.0, rng)
    return Xtr, Xte, [Xtr[p] for p in parts]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eps", nargs="+", default=["1", "2", "4", "8", "inf"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rows", type=int, default=700)
    ap.add_argument("--decompose", action="store_true", help="also: DP local fit without noise (clipping + start)")
    args = ap.parse_args()
    bound = chi_bound(DIMENSIONS)
    rows = []
    for seed in args.seeds:
        Xtr, Xte, clients = regime(seed, args.clients, args.rows, args.dataset)
        t0 = time.time()
        central = float(GaussianMixture(COMPONENTS, random_state=seed).fit(Xtr).score(Xte))
        print(f"seed {seed}: centralized K={COMPONENTS} test LL {central:.3f} ({time.time() - t0:.0f}s); "
              f"clip bound {bound:.3f}", flush=True)
        runs: list[tuple[str, float]] = [(e, float(e)) for e in args.eps]
        if args.decompose:
            runs.append(("clip-only", math.inf))
        for label, eps in runs:
            t0 = time.time()
            if label == "clip-only":
                model = _clip_only(clients, seed, bound)
            elif math.isinf(eps):
                model = FedGenGMM(n_components=COMPONENTS, random_state=seed).fit(clients)
            else:
                model = FedGenGMM(n_components=COMPONENTS, epsilon=eps, clip_bound=bound, random_state=seed,
                                  dp_noise_seed=seed).fit(clients)
            ll = float(model.score(Xte))
            spent = max((e for e, _ in model.privacy_spent_), default=None)
            row = {"seed": seed, "epsilon": label, "central": central, "global": ll, "gap": central - ll,
                   "max_spent": spent, "seconds": round(time.time() - t0, 1)}
            rows.append(row)
            print(f"  eps={label:>9}: global LL {ll:.3f}  gap {central - ll:.3f} nats/sample  max spent {spent}"
                  f"  ({row['seconds']}s)", flush=True)
    print("\n| ε | gap to centralized (nats/sample), per seed | mean |\n|---|---|---|")
    for label in dict.fromkeys(r["epsilon"] for r in rows):
        gaps = [r["gap"] for r in rows if r["epsilon"] == label]
        print(f"| {label} | {', '.join(f'{g:.2f}' for g in gaps)} | {np.mean(gaps):.2f} |")
    print(json.dumps({"args": vars(args), "bound": bound, "rows": rows}))


def _clip_only(clients: list[np.ndarray], seed: int, bound: float) -> FedGenGMM:
    """The DP path with the noise switched off (clipping, start, iterations, local K): not private."""
    import fedgmm.privacy.dpem as dpem

    original = dpem.fit_dp_local

    def no_noise(*a, **kw):
        # The released ε is inf; the upload's record carries the nominal one.
        return dataclasses.replace(original(*a, **{**kw, "noise": False}), epsilon=kw["epsilon"])

    dpem.fit_dp_local = no_noise  # type: ignore[assignment]
    try:
        model = FedGenGMM(n_components=COMPONENTS, epsilon=8.0, clip_bound=bound, random_state=seed,
                          dp_noise_seed=seed).fit(clients)
    finally:
        dpem.fit_dp_local = original  # type: ignore[assignment]
    model.privacy_spent_ = []  # not private
    return model


if __name__ == "__main__":
    main()

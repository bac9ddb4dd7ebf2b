"""DP-EM local fits → size-weighted union → sampled global GMM, against centralized (stand-in for FedGenGMM(epsilon=...)).

Regime of issue 10: Fashion-MNIST, 20 Dirichlet(α = 1) clients of ~700 rows, standardised + PCA to
16 dimensions from the pooled moments, global K = 20 full, held-out test rows.

    .venv/bin/python benchmarks/privacy_dpem.py --eps 1 8 inf --local-k 4 --ctype diag --iters 4
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from fedgmm.datasets import load_dataset
from fedgmm.em.fit import fit_em
from fedgmm.em.stats import score_samples
from fedgmm.mixture import MixtureState
from fedgmm.privacy.dpem import BudgetSplit, fit_dp_local


def pca_transform(X: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardise + PCA from pooled moments (what federated preprocessing computes)."""
    mean = X.mean(0)
    std = X.std(0, ddof=1)
    std = np.where(std > 1e-12, std, 1.0)
    corr = np.cov((X - mean) / std, rowvar=False)
    w, v = np.linalg.eigh(corr)
    order = np.argsort(w)[::-1][:p]
    return mean, v[:, order] / std[:, None], w[order]


def union(states: list[MixtureState], counts: list[float]) -> MixtureState:
    n = np.asarray(counts, dtype=np.float64)
    w = np.concatenate([s.weights * c / n.sum() for s, c in zip(states, n, strict=True)])
    mu = np.concatenate([s.means for s in states])
    d = states[0].n_features
    covs = []
    for s in states:
        c = s.covariances
        if s.covariance_type == "full":
            covs.append(c)
        elif s.covariance_type == "tied":
            covs.append(np.broadcast_to(c, (s.n_components, d, d)))
        elif s.covariance_type == "diag":
            covs.append(c[:, :, None] * np.eye(d))
        else:
            covs.append(c[:, None, None] * np.eye(d))
    return MixtureState.from_covariances(w / w.sum(), mu, np.concatenate(covs), "full")


def dirichlet_clients(y: np.ndarray, n_clients: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    from fedgmm.partition import DirichletPartitioner

    part = DirichletPartitioner(num_partitions=n_clients, alpha=alpha, min_partition_size=20, seed=int(rng.integers(2**31)))
    return [np.asarray(p, dtype=np.intp) for p in part.split(y)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eps", nargs="+", default=["1", "8", "inf"])
    ap.add_argument("--local-k", type=int, default=4)
    ap.add_argument("--ctype", default="full")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--clip", type=float, default=1.5)
    ap.add_argument("--split", type=float, nargs=4, default=None, help="count first second scatter")
    ap.add_argument("--residual", type=float, default=0.75)
    ap.add_argument("--cov-strength", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rows", type=int, default=700)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    ds = load_dataset(args.dataset)
    n_train = args.clients * args.rows
    n_test = n_train // 3
    idx = rng.permutation(ds.X.shape[0])[: n_train + n_test]
    Xall, yall = ds.X[idx].astype(np.float64), ds.y[idx]
    Xtr_raw, ytr, Xte_raw = Xall[:n_train], yall[:n_train], Xall[n_train:]
    mean, mat, eig = pca_transform(Xtr_raw, 16)
    Xtr, Xte = (Xtr_raw - mean) @ mat, (Xte_raw - mean) @ mat
    parts = dirichlet_clients(ytr, args.clients, 1.0, rng)
    t0 = time.time()
    central = fit_em(Xtr, n_components=20, covariance_type="full", reg_covar=0.05, random_state=args.seed,
                     warn_not_converged=False).state
    ll_central = float(score_samples(Xte, central).mean())
    out = {"dataset": args.dataset, "clients": [int(p.size) for p in parts], "central": ll_central, "rows": []}
    print(f"centralized K=20 test LL {ll_central:.3f} ({time.time() - t0:.1f}s); client sizes {sorted(out['clients'])}")
    scale = np.sqrt(eig)  # public per-feature std of the PCA coordinates (from the transform)
    split = BudgetSplit(*args.split) if args.split else None
    for e in args.eps:
        eps = float(e)
        t0 = time.time()
        states, counts, spent = [], [], []
        for c, rows in enumerate(parts):
            rows = np.asarray(rows, dtype=np.intp)
            Xc = Xtr[rows]
            if np.isinf(eps):
                st = fit_em(Xc, n_components=args.local_k, covariance_type=args.ctype, reg_covar=0.05,
                            random_state=args.seed + c, warn_not_converged=False).state
                states.append(st)
                counts.append(float(rows.size))
                continue
            res = fit_dp_local(Xc, n_components=args.local_k, epsilon=eps, delta=1e-5,
                               covariance_type=args.ctype, max_iter=args.iters, feature_scale=scale, clip_factor=args.clip, residual_factor=args.residual,
                               split=split, cov_strength=args.cov_strength, random_state=args.seed * 1000 + c)
            states.append(res.state)
            counts.append(res.noisy_count)
            spent.append(res.epsilon)
        U = union(states, counts)
        ll_union = float(score_samples(Xte, U).mean())
        S, _ = U.sample(5 * n_train, np.random.default_rng(args.seed + 7))
        g = fit_em(S, n_components=20, covariance_type="full", reg_covar=0.05, random_state=args.seed,
                   warn_not_converged=False, max_iter=100).state
        ll_global = float(score_samples(Xte, g).mean())
        row = {"epsilon": eps, "union": ll_union, "global": ll_global, "gap": ll_central - ll_global,
               "max_spent": max(spent) if spent else None, "seconds": time.time() - t0}
        out["rows"].append(row)
        print(f"eps={eps:>4}: union LL {ll_union:.3f}  global LL {ll_global:.3f}  gap {ll_central - ll_global:.3f} nats  "
              f"max spent {row['max_spent']}  ({row['seconds']:.1f}s)")
    print(json.dumps({"args": vars(args), **{k: v for k, v in out.items() if k != 'clients'}}))


if __name__ == "__main__":
    main()

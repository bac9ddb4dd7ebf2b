"""Federated EM with local DP per round (RoundPrivacy), against centralized, in the issue-10 regime.

    .venv/bin/python benchmarks/privacy_fedem.py --eps 1 8 --rounds 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from privacy_dpem import dirichlet_clients, pca_transform

from fedgmm.datasets import load_dataset
from fedgmm.em.fit import fit_em
from fedgmm.em.stats import score_samples
from fedgmm.mixture import MixtureState
from fedgmm.privacy.clipping import norm_bound
from fedgmm.privacy.dpem import (
    Prior,
    RoundPrivacy,
    _affine_state,
    centred_statistics,
    noise_aware_m_step,
    prior_initial_state,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eps", nargs="+", default=["1", "8"])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--ctype", default="full")
    ap.add_argument("--residual", type=float, default=0.75)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    ds = load_dataset("fashion-mnist")
    n_train = 20 * 700
    idx = rng.permutation(ds.X.shape[0])[: n_train + n_train // 3]
    X, y = ds.X[idx].astype(np.float64), ds.y[idx]
    mean, mat, eig = pca_transform(X[:n_train], 16)
    Xtr, Xte = (X[:n_train] - mean) @ mat, (X[n_train:] - mean) @ mat
    parts = dirichlet_clients(y[:n_train], 20, 1.0, rng)
    central = fit_em(Xtr, n_components=args.k, covariance_type="full", reg_covar=0.05, random_state=args.seed,
                     warn_not_converged=False).state
    ll_c = float(score_samples(Xte, central).mean())
    sc = np.sqrt(eig)
    d = 16
    B = norm_bound(d)
    B_r = norm_bound(d, factor=args.residual)
    from fedgmm.privacy.clipping import clip_rows

    clients = [clip_rows(Xtr[p] / sc, B)[0] for p in parts]
    for e in args.eps:
        eps = float(e)
        privacy = [RoundPrivacy(eps, 1e-5, args.rounds, args.ctype, B_r) for _ in clients]  # type: ignore[arg-type]
        state = prior_initial_state(args.k, d, args.ctype, B, np.random.default_rng(args.seed))  # type: ignore[arg-type]
        prior = Prior(scale=np.eye(d), cov_strength=2.0)
        for _ in range(args.rounds):
            total = sum(
                rp.release(centred_statistics(Xc, state, B_r), np.random.default_rng([args.seed, c, rp.rounds_done]))
                for c, (Xc, rp) in enumerate(zip(clients, privacy, strict=True))
            )
            step = noise_aware_m_step(total, prior)
            state = MixtureState.from_covariances(step.weights, step.means + state.means, step.covariances, args.ctype)  # type: ignore[arg-type]
        final = _affine_state(state, sc)
        ll = float(score_samples(Xte, final).mean())
        spent = max(rp.spent()[0] for rp in privacy)
        print(f"fedem eps={eps} rounds={args.rounds}: test LL {ll:.3f}, centralized {ll_c:.3f}, gap {ll_c - ll:.3f}; "
              f"max spent eps {spent:.4f}", flush=True)


if __name__ == "__main__":
    main()

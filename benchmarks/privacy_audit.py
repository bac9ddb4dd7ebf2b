"""Membership-inference audit of the uploads (local models), non-private vs DP-EM, in the issue-10 regime.

The DP upload is FedGenGMM's real client step (:func:`fedgmm.federated.private.fit_private_local_model`
with the library's DP defaults, rows whitened as in ``privacy_dpem.py``, clip bound ``chi_bound(16)``);
the non-private one a local K = 40 full GMM (the issue's measurement).

    .venv/bin/python benchmarks/privacy_audit.py --eps inf 1 8 --clients 20
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from privacy_dpem import dirichlet_clients, pca_transform

from fedgmm.datasets import load_dataset
from fedgmm.em.fit import fit_em
from fedgmm.federated.local import LocalFitSettings
from fedgmm.federated.private import fit_private_local_model
from fedgmm.privacy.audit import audit_release, fit_reference
from fedgmm.privacy.clipping import chi_bound


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eps", nargs="+", default=["inf", "1", "8"])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--audit-clients", type=int, default=20, help="how many clients' uploads to attack")
    ap.add_argument("--plain-k", type=int, default=40, help="local K of the non-private upload")
    ap.add_argument("--k-max", type=int, default=80, help="k_max of the DP client step (FedGenGMM's 4 x K)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    ds = load_dataset("fashion-mnist")
    # Each client holds ~1000 rows: it fits on ~700 (members) and ~300 of the same
    # distribution are held out (non-members), so the attack measures membership, not
    # the client's label skew.
    n_train = args.clients * 1000
    n_test = n_train // 3
    idx = rng.permutation(ds.X.shape[0])[: n_train + n_test]
    X, y = ds.X[idx].astype(np.float64), ds.y[idx]
    mean, mat, eig = pca_transform(X[:n_train], 16)
    mat = mat / np.sqrt(eig)  # whitened, as the DP benchmark
    Xtr, Xte = (X[:n_train] - mean) @ mat, (X[n_train:] - mean) @ mat
    ref = fit_reference(Xte, n_components=20)
    parts = dirichlet_clients(y[:n_train], args.clients, 1.0, rng)
    out = []
    for e in args.eps:
        eps = float(e)
        aucs: dict[str, list[float]] = {"likelihood": [], "density-ratio": []}
        tprs: dict[str, list[float]] = {"likelihood": [], "density-ratio": []}
        cis: dict[str, list[tuple[float, float]]] = {"likelihood": [], "density-ratio": []}
        for c, rows in enumerate(parts[: args.audit_clients]):
            cut = int(0.7 * rows.size)
            Xc, non_members = Xtr[rows[:cut]], Xtr[rows[cut:]]
            if np.isinf(eps):
                model = fit_em(Xc, n_components=args.plain_k, covariance_type="full", reg_covar=0.05,
                               random_state=c, warn_not_converged=False).state
            else:
                settings = LocalFitSettings(k_min=1, k_max=args.k_max, epsilon=eps, delta=1e-5,
                                            clip_bound=chi_bound(Xc.shape[1]), dp_noise_seed=args.seed)
                reply = fit_private_local_model(Xc, settings, client_id=c, seed=args.seed)
                assert reply.state is not None and reply.privacy is not None and reply.privacy[0] <= eps
                model = reply.state
            for r in audit_release(model, Xc, non_members, reference=ref, n_bootstrap=200, random_state=c):
                aucs[r.attack].append(r.auc)
                tprs[r.attack].append(r.tpr)
                cis[r.attack].append(r.auc_ci)
        row = {"epsilon": eps}
        for a in aucs:
            row[a] = {"auc_mean": float(np.mean(aucs[a])), "auc_max": float(np.max(aucs[a])),
                      "auc_ci_of_max": cis[a][int(np.argmax(aucs[a]))], "tpr@1%fpr_mean": float(np.mean(tprs[a]))}
        out.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

"""FederatedEM(epsilon=e, max_rounds=R) — local DP per client per round — against centralized, issue 10's regime.

Fashion-MNIST, 20 Dirichlet(α = 1) clients of ~700 rows, federated standardisation + PCA to 16
dimensions (the library's preprocessing round), global K = 20 full, held-out test rows. Every
run goes through the library (``run_inprocess`` over the in-process transport, the wire format
included), so the bytes are the messages' and the spent ε is each client's ledger's. The DP
noise is seeded reproducibly (``dp_noise_seed=seed``: a measurement must be reproducible from
its seeds; the library's default, each client's secret, makes the noise unknown to the server).

    nice -n 10 .venv/bin/python benchmarks/privacy_fedem.py --eps 1 2 4 8 --rounds 10 --seeds 0
    nice -n 10 .venv/bin/python benchmarks/privacy_fedem.py --eps 1 2 4 8 --dp-noise distributed --no-anchor
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from privacy_dpem import dirichlet_clients

from fedgmm.datasets import load_dataset
from fedgmm.em.fit import fit_em
from fedgmm.em.stats import score_samples
from fedgmm.federated.preprocessing import run_preprocessing
from fedgmm.federated.spec import MethodSpec
from fedgmm.inprocess import InProcessTransport, run_inprocess
from fedgmm.mixture import MixtureState


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eps", nargs="+", default=["1", "2", "4", "8"])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--ctype", default="full")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rows", type=int, default=700)
    ap.add_argument("--dp-noise", default="local", choices=["local", "distributed"])
    ap.add_argument("--no-anchor", action="store_true", help="skip the non-private run")
    ap.add_argument("--noise-prior-factor", type=float, default=None,
                    help="experiment: override private_rounds.NOISE_PRIOR_FACTOR (the M-step prior's strength)")
    ap.add_argument("--init-noise-ratio", type=float, default=None,
                    help="experiment: override private_rounds.INIT_NOISE_RATIO (the init upload's share)")
    args = ap.parse_args()
    if args.init_noise_ratio is not None:
        import fedgmm.federated.private_rounds as private_rounds

        private_rounds.INIT_NOISE_RATIO = args.init_noise_ratio
    if args.noise_prior_factor is not None:
        import fedgmm.federated.private_rounds as private_rounds

        private_rounds.NOISE_PRIOR_FACTOR = args.noise_prior_factor
    ds = load_dataset("fashion-mnist")
    rows = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        n_train = args.clients * args.rows
        idx = rng.permutation(ds.X.shape[0])[: n_train + n_train // 3]
        X, y = ds.X[idx].astype(np.float64), ds.y[idx]
        parts = dirichlet_clients(y[:n_train], args.clients, 1.0, rng)
        clients = [X[:n_train][p] for p in parts]
        with InProcessTransport(clients) as transport:
            tf, _ = run_preprocessing(transport, standardize=True, n_components=16)
        Xtr, Xte = tf.apply(X[:n_train]), tf.apply(X[n_train:])
        t0 = time.time()
        central = fit_em(Xtr, n_components=args.k, covariance_type="full", reg_covar=0.05, random_state=seed,
                         warn_not_converged=False).state
        ll_c = float(score_samples(Xte, central).mean())
        # A data-free anchor: the single Gaussian the preprocessing transform already implies.
        one = MixtureState.from_covariances(np.ones(1), np.zeros((1, Xte.shape[1])), np.asarray(tf.variances)[None], "diag")
        ll_1 = float(score_samples(Xte, one).mean())
        print(f"seed {seed}: centralized K={args.k} full (reg 0.05) test LL {ll_c:.3f} ({time.time() - t0:.0f}s); "
              f"the transform's single Gaussian {ll_1:.3f} (gap {ll_c - ll_1:.3f})", flush=True)
        for e in ([] if args.no_anchor else ["inf"]) + list(args.eps):
            eps = None if e == "inf" else float(e)
            spec = MethodSpec("fedem", n_components=args.k, covariance_type=args.ctype, max_rounds=args.rounds,  # type: ignore[arg-type]
                              round_tol=0.0, epsilon=eps, dp_noise=args.dp_noise, dp_noise_seed=seed)  # fmt: skip
            t0 = time.time()
            run = run_inprocess(spec, clients, seed=seed, transform=tf)
            assert run.model is not None
            ll = float(run.model.score(Xte))
            per_round = [r for r in run.communication.per_round if r.kind == "em-statistics"]
            up = float(np.mean([r.bytes_up for r in per_round])) / len(clients)
            down = float(np.mean([r.bytes_down for r in per_round])) / len(clients)
            spent = [p[0] for p in run.extra.get("privacy_spent", {}).values()] if eps else []
            row = {"seed": seed, "init_noise_ratio": args.init_noise_ratio, "noise_prior_factor": args.noise_prior_factor, "single_gaussian": ll_1, "epsilon": e, "rounds": args.rounds, "dp_noise": args.dp_noise, "ctype": args.ctype, "test_ll": ll, "central": ll_c, "gap": ll_c - ll,
                   "max_spent": max(spent) if spent else None, "bytes_up_per_client_round": up,
                   "bytes_down_per_client_round": down, "init_bytes_up": run.communication.per_round[0].bytes_up,
                   "seconds": time.time() - t0}  # fmt: skip
            rows.append(row)
            print(f"  {args.ctype} {args.dp_noise} eps={e:>4} R={args.rounds}: test LL {ll:.3f}  gap {ll_c - ll:.3f} nats  max spent "
                  f"{row['max_spent']}  up/client/round {up:.0f} B  down {down:.0f} B  ({row['seconds']:.0f}s)", flush=True)
    print(json.dumps({"args": vars(args), "rows": rows}))


if __name__ == "__main__":
    main()

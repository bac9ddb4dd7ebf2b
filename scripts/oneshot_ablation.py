"""One-shot quality ablation: local model choice × aggregation × server restarts, with leakage and bytes.

Builds FedGenGMM from its parts (local fits, size-weighted union, sampling or sample-free
reduction, global fit) so it measures the levers independently of the estimator facades.
Results are appended to a JSONL file, one row per (regime, α, seed, local, aggregation,
restarts); an interrupted run resumes without recomputing finished rows.

    PYTHONPATH=src .venv/bin/python scripts/oneshot_ablation.py run --regimes r1,r2
    PYTHONPATH=src .venv/bin/python scripts/oneshot_ablation.py table

Regimes (held-back test rows; standardise + PCA with whitening fitted on the training rows):
r1 = Fashion-MNIST, 20 clients × ~700 rows, 16 dims, K = 20; r2 = satellite, 10 clients ×
~200 rows, 12 dims, K = 8; r2f = the same on Fashion-MNIST. Bytes are an approximation: float64 parameters × 8 (weights,
means, the upper triangle of each covariance, and n_c), not Flower's wire bytes.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import defaultdict  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.cluster import kmeans_plusplus  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from fedgmm.datasets import load_dataset  # noqa: E402
from fedgmm.em.init import initial_state  # noqa: E402
from fedgmm.em.mstep import m_step  # noqa: E402
from fedgmm.em.prior import prior_from_data, run_map_em  # noqa: E402
from fedgmm.em.stats import (  # noqa: E402
    log_responsibilities,
    score_samples,
    statistics_from_responsibilities,
)
from fedgmm.federated.local_selection import candidate_components, select_local_model  # noqa: E402
from fedgmm.federated.reduce import deregularized_covariances, reduce_mixture  # noqa: E402
from fedgmm.federated.union import (  # noqa: E402
    deregularized_factors,
    full_covariances,
    merge_components,
    union_mixture,
)
from fedgmm.gaussian_mixture import GaussianMixture  # noqa: E402
from fedgmm.mixture import MixtureState, sample_gaussians  # noqa: E402

try:  # the partitioner may move during the refactor
    from fedgmm.datasets.partition import DirichletPartitioner  # type: ignore[import-not-found]
except ImportError:
    from fedgmm.partition import DirichletPartitioner

OUT = Path("/tmp/oneshot")
SYNTHETIC_FACTOR = 5
GLOBAL_REG = 1e-6


@dataclass(frozen=True)
class Regime:
    dataset: str
    n_clients: int
    n_train: int
    n_test: int
    dim: int
    k: int


REGIMES = {
    "r1": Regime("fashion-mnist", 20, 14000, 4000, 16, 20),
    "r2": Regime("satellite", 10, 2000, 2000, 12, 8),
    "r2f": Regime("fashion-mnist", 10, 2000, 4000, 12, 8),
}

#: Local strategies: (K rule, reg_covar rule). "auto" = held-out choice on the client.
LOCALS = {
    "2K-1e-6": ("fixed", 2, 1e-6),  # today's library default
    "2K-0.05": ("fixed", 2, 0.05),
    "4K-0.05": ("fixed", 4, 0.05),
    "4K-0.1": ("fixed", 4, 0.1),
    "8K-0.05": ("fixed", 8, 0.05),
    "4K-auto": ("auto-reg", 4, None),
    "auto": ("auto", 0, None),  # K in {K, 2K, 4K} × reg grid
    "map-2K": ("map", 2, None),
    "map-4K": ("map", 4, None),
    "bic-1-10": ("bic", 0, 1e-6),  # the paper's recipe
}


def _data(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train X, train labels, test X) for a regime and seed, projected; cached."""
    cache = OUT / "cache" / f"data-{name}-{seed}.npz"
    if cache.exists():
        z = np.load(cache)
        return z["xtr"], z["ytr"], z["xte"]
    reg = REGIMES[name]
    ds = load_dataset(reg.dataset)
    rng = np.random.default_rng([seed, 7])
    idx = rng.permutation(ds.X.shape[0])
    tr, te = idx[: reg.n_train], idx[reg.n_train : reg.n_train + reg.n_test]
    scaler = StandardScaler().fit(ds.X[tr])
    pca = PCA(reg.dim, whiten=True, random_state=seed).fit(scaler.transform(ds.X[tr]))
    xtr = pca.transform(scaler.transform(ds.X[tr]))
    xte = pca.transform(scaler.transform(ds.X[te]))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, xtr=xtr, ytr=ds.y[tr], xte=xte)
    return xtr, ds.y[tr], xte


def _gmm(k: int, reg: float, seed: int, **kw: object) -> GaussianMixture:
    return GaussianMixture(k, reg_covar=reg, random_state=seed, **kw)  # type: ignore[arg-type]


def _fit(X: np.ndarray, k: int, reg: float, seed: int) -> MixtureState:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _gmm(min(k, max(1, X.shape[0] // 5)), reg, seed).fit(X).state_


def fit_local(X: np.ndarray, strategy: str, k_global: int, seed: int) -> tuple[MixtureState, float, str]:
    """One client's upload: (model, the reg_covar to take off before sampling, note)."""
    rule, factor, reg_or_none = LOCALS[strategy]
    reg = 0.0 if reg_or_none is None else float(reg_or_none)
    if rule == "fixed":
        return _fit(X, factor * k_global, reg, seed), reg, ""
    if rule == "auto":
        ks = candidate_components(k_global, X.shape[0], factors=(1, 2, 4))
        state, rec = select_local_model(X, ks, seed=seed)
        return state, rec.reg_covar, f"K={rec.n_components} reg={rec.reg_covar:g}"
    if rule == "auto-reg":
        state, rec = select_local_model(X, factor * k_global, seed=seed)
        return state, rec.reg_covar, f"K={rec.n_components} reg={rec.reg_covar:g}"
    if rule == "map":
        k = min(factor * k_global, max(1, X.shape[0] // 5))
        prior = prior_from_data(X, k, "full")
        start = initial_state(X, k, "full", init_params="kmeans", random_state=np.random.RandomState(seed), reg_covar=1e-3)
        state, _, _ = run_map_em(X, start, prior)
        return state, 0.0, ""
    # BIC over 1..10 with reg 1e-6
    best, best_bic = None, np.inf
    for k in range(1, min(10, X.shape[0] // 5) + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m = _gmm(k, reg, seed).fit(X)
        b = m.bic(X)
        if b < best_bic:
            best, best_bic = m, b
    assert best is not None
    return best.state_, reg, f"K={best.n_components}"


def init_from_union(union: MixtureState, k: int, rng: np.random.Generator) -> MixtureState:
    """The library's global EM start (weighted k-means++ over the union's means, moment-matched)."""
    seed = int(rng.integers(0, 2**31 - 1))
    centers, _ = kmeans_plusplus(union.means, k, sample_weight=union.weights, random_state=seed)
    labels = ((union.means[:, None, :] - centers[None]) ** 2).sum(axis=2).argmin(axis=1)
    for g, c in enumerate(centers):
        labels[np.flatnonzero(np.all(union.means == c, axis=1))[0]] = g
    return merge_components(union, labels, k, "full", GLOBAL_REG)


def sample_and_fit(
    union: MixtureState, factors: np.ndarray, total: int, k: int, starts: int, seed: int,
    dereg: MixtureState | None = None,
) -> list[tuple[float, MixtureState]]:
    """FedGenGMM's server step, one (train lower bound, model) per start, in start order.

    With ``dereg`` each start is the MM reduction of that (deregularised) union instead of
    the library's one-step k-means++ merge.
    """
    rng = np.random.default_rng([seed, 0x5E5])
    synthetic, _ = sample_gaussians(union.weights, union.means, factors, SYNTHETIC_FACTOR * total, rng)
    out = []
    for _ in range(starts):
        if dereg is None:
            st = init_from_union(union, k, rng)
        else:
            st = reduce_mixture(dereg, k, n_init=1, reg_covar=GLOBAL_REG, seed=rng).state
        m = _gmm(k, GLOBAL_REG, int(rng.integers(0, 2**31 - 1)), weights_init=st.weights,
                 means_init=st.means, precisions_init=st.precisions)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m.fit(synthetic)
        out.append((float(m.lower_bound_), m.state_))
    return out


def sigma_points(union: MixtureState, local_reg_covar: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic weighted point set with the union's exact first two moments per component.

    Each component ``i`` gives the ``2d`` points ``μ_i ± √d · a_im`` (``a_im`` the columns
    of a square root of ``Σ_i − local_reg_covar·I``, eigenvalues clipped at 0), each of
    weight ``w_i / 2d`` — the unscented transform's symmetric set (Julier & Uhlmann 1997).
    A weighted EM on them replaces the random synthetic set: no Monte Carlo noise, and its
    size ``2d · N`` does not depend on the clients' (claimed) row counts.

    Returns
    -------
    X : ndarray of shape (2d·N, d)
    weights : ndarray of shape (2d·N,)
        Summing to one.
    """
    covs = deregularized_covariances(full_covariances(union), local_reg_covar)
    eigval, eigvec = np.linalg.eigh(covs)
    d = union.n_features
    roots = eigvec * np.sqrt(np.clip(eigval, 0.0, None) * d)[:, None, :]  # columns √d·a_im
    offsets = np.concatenate([roots, -roots], axis=2).transpose(0, 2, 1)  # (N, 2d, d)
    X = (union.means[:, None, :] + offsets).reshape(-1, d)
    weights = np.repeat(np.asarray(union.weights) / (2 * d), 2 * d)
    return X, weights


def sigma_and_fit(
    union: MixtureState, local_regs: np.ndarray, k: int, starts: int, seed: int, tol: float = 1e-4, max_iter: int = 200
) -> list[tuple[float, MixtureState]]:
    """Weighted EM on the union's sigma points (deterministic, sample-free), one result per start."""
    xs, ws = [], []
    offset = 0
    for reg_c, n_c in local_regs:  # per client: its components, its own local reg_covar
        part = MixtureState.from_covariances(union.weights[offset : offset + n_c] / union.weights[offset : offset + n_c].sum(),
                                             union.means[offset : offset + n_c],
                                             union.covariances[offset : offset + n_c], "full")
        x, w = sigma_points(part, reg_c)
        xs.append(x)
        ws.append(w * union.weights[offset : offset + n_c].sum())
        offset += n_c
    X, w = np.concatenate(xs), np.concatenate(ws)
    w = w / w.sum()
    shift = w @ X
    rng = np.random.default_rng([seed, 0x5E5])
    out = []
    for _ in range(starts):
        state = init_from_union(union, k, rng)
        prev = -np.inf
        for _ in range(max_iter):
            log_resp, log_norm = log_responsibilities(X, state)
            ll = float(w @ log_norm)
            stats = statistics_from_responsibilities(X, np.exp(log_resp) * w[:, None], "full", shift=shift)
            state = m_step(stats, GLOBAL_REG)
            if abs(ll - prev) < tol:
                break
            prev = ll
        out.append((ll, state))
    return out


def leakage_auc(states: list[MixtureState], parts: list[np.ndarray], xte: np.ndarray, seed: int) -> float:
    """Mean over clients of the likelihood-threshold membership AUC: own rows vs unseen test rows."""
    rng = np.random.default_rng([seed, 0xA0C])
    aucs = []
    for st, xc in zip(states, parts, strict=True):
        out = xte[rng.choice(xte.shape[0], size=min(xte.shape[0], max(xc.shape[0], 50)), replace=False)]
        s = np.concatenate([score_samples(xc, st), score_samples(out, st)])
        y = np.concatenate([np.ones(xc.shape[0]), np.zeros(out.shape[0])])
        aucs.append(roc_auc_score(y, s))
    return float(np.mean(aucs))


def n_bytes(states: list[MixtureState]) -> int:
    d = states[0].n_features
    return int(sum(8 * (s.n_components * (1 + d + d * (d + 1) // 2) + 1) for s in states))


def _done(path: Path) -> set[tuple]:
    keys = set()
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            keys.add((r["regime"], r["alpha"], r["seed"], r["local"], r["agg"], r["starts"]))
    return keys


def _append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def run_cell(name: str, alpha: float, seed: int, locals_: list[str], aggs: list[str], starts: list[int], path: Path) -> None:
    reg = REGIMES[name]
    done = _done(path)
    base = {"regime": name, "alpha": alpha, "seed": seed}
    xtr, ytr, xte = _data(name, seed)
    parts_idx = DirichletPartitioner(num_partitions=reg.n_clients, alpha=alpha, seed=seed).split(y=ytr)
    parts = [xtr[i] for i in parts_idx]
    counts = [p.shape[0] for p in parts]
    if (name, alpha, seed, "centralized", "-", 3) not in done:
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            cm = _gmm(reg.k, GLOBAL_REG, seed, n_init=3).fit(xtr)
        _append(path, {**base, "local": "centralized", "agg": "-", "starts": 3,
                       "test_ll": float(cm.score(xte)), "seconds": time.perf_counter() - t})
    for loc in locals_:
        wanted = [(a, s) for a in aggs for s in (starts if a != "union" else [0])]
        if all((name, alpha, seed, loc, a, s) in done for a, s in wanted):
            continue
        t0 = t = time.perf_counter()
        fits = [fit_local(p, loc, reg.k, int(np.random.SeedSequence([seed, c]).generate_state(1)[0]))
                for c, p in enumerate(parts)]
        local_seconds = time.perf_counter() - t
        states = [f[0] for f in fits]
        union = union_mixture(states, counts)
        factors = np.concatenate([deregularized_factors(s, f[1]) for s, f in zip(states, fits, strict=True)])
        info = {"auc": leakage_auc(states, parts, xte, seed), "bytes": n_bytes(states),
                "union_ll": float(np.mean(score_samples(xte, union))), "local_seconds": local_seconds,
                "local_k": [s.n_components for s in states], "notes": [f[2] for f in fits if f[2]]}
        if (name, alpha, seed, loc, "union", 0) not in done:
            _append(path, {**base, "local": loc, "agg": "union", "starts": 0, "test_ll": info["union_ll"], **info})
        # Per-client regularisation taken off, for the reduction as for sampling.
        dereg = MixtureState.from_covariances(
            union.weights, union.means, np.einsum("nij,nkj->nik", factors, factors) + 1e-12 * np.eye(reg.dim), "full")
        for agg in aggs:
            if agg == "union":
                continue
            todo = [s for s in starts if (name, alpha, seed, loc, agg, s) not in done]
            if not todo:
                continue
            t = time.perf_counter()
            if agg in ("sample", "sample-mm", "sigma"):
                if agg == "sigma":
                    regs_ = np.array([(f[1], s_.n_components) for f, s_ in zip(fits, states, strict=True)], dtype=object)
                    runs = sigma_and_fit(union, regs_, reg.k, max(todo), seed)
                else:
                    runs = sample_and_fit(union, factors, sum(counts), reg.k, max(todo), seed,
                                          dereg if agg == "sample-mm" else None)
                secs = (time.perf_counter() - t) / max(todo)
                for s in todo:
                    best = max(runs[:s], key=lambda r: r[0])[1]
                    _append(path, {**base, "local": loc, "agg": agg, "starts": s, "seconds_per_start": secs,
                                   "test_ll": float(np.mean(score_samples(xte, best))), **info})
            else:
                method, virtual = (agg, None) if agg == "mm" else ("hem", float(sum(counts)))
                for s in todo:
                    t = time.perf_counter()
                    r = reduce_mixture(dereg, reg.k, method=method, n_init=s, reg_covar=GLOBAL_REG,  # type: ignore[arg-type]
                                       virtual_samples=virtual, seed=seed)
                    _append(path, {**base, "local": loc, "agg": agg, "starts": s, "seconds": time.perf_counter() - t,
                                   "test_ll": float(np.mean(score_samples(xte, r.state))), **info})
        print(f"{name} α={alpha} seed={seed} {loc}: done in {time.perf_counter() - t0:.0f}s "
              f"(local {local_seconds:.0f}s)", flush=True)


def table(paths: list[Path], only: set[str] | None = None) -> None:
    """Gap to centralized (nats/sample, mean over seeds) per regime, α and configuration.

    ``only``: keep the configurations named ``local:aggregation:starts``.
    """
    rows = [json.loads(line) for path in paths for line in path.read_text().splitlines()]
    central = {(r["regime"], r["alpha"], r["seed"]): r["test_ll"] for r in rows if r["local"] == "centralized"}
    gaps: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    aucs: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        if r["local"] == "centralized":
            continue
        key = (r["regime"], r["local"], r["agg"], r["starts"])
        if only is not None and f"{r['local']}:{r['agg']}:{r['starts']}" not in only:
            continue
        c = central.get((r["regime"], r["alpha"], r["seed"]))
        if c is not None:
            gaps[key][r["alpha"]].append(c - r["test_ll"])
            aucs[key].append(r["auc"])
    alphas = sorted({r["alpha"] for r in rows})
    print("| regime | local | aggregation | starts | " + " | ".join(f"gap α={a:g}" for a in alphas) + " | AUC | KiB up |")
    print("|---|---|---|---|" + "---|" * len(alphas) + "---|---|")
    kib_rows: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        if "bytes" in r and r["agg"] == "union":
            kib_rows[(r["regime"], r["local"])].append(r["bytes"] / 1024)
    kib = {key: float(np.mean(v)) for key, v in kib_rows.items()}
    for key in sorted(gaps):
        cells = []
        for a in alphas:
            v = gaps[key].get(a, [])
            cells.append(f"{np.mean(v):.2f} ({len(v)})" if v else "—")
        print(f"| {' | '.join(str(k) for k in key)} | " + " | ".join(cells)
              + f" | {np.mean(aucs[key]):.2f} | {kib.get((key[0], key[1]), 0):.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "table"])
    p.add_argument("--regimes", default="r1,r2")
    p.add_argument("--alphas", default="0.1,1,100")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--locals", default="4K-0.05,2K-0.05,auto,2K-1e-6")
    p.add_argument("--aggs", default="union,sample,mm,hem")
    p.add_argument("--starts", default="1,3")
    p.add_argument("--only", default="", help="table: comma-separated local:aggregation:starts to show")
    p.add_argument("--out", default=str(OUT / "results.jsonl"), help="JSONL file (table: comma-separated list)")
    a = p.parse_args()
    if a.command == "table":
        table([Path(x) for x in a.out.split(",")], set(a.only.split(",")) if a.only else None)
        return
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in a.regimes.split(","):
        for seed in (int(s) for s in a.seeds.split(",")):
            for alpha in (float(x) for x in a.alphas.split(",")):
                run_cell(name, alpha, seed, a.locals.split(","), a.aggs.split(","),
                         [int(s) for s in a.starts.split(",")], path)


if __name__ == "__main__":
    main()

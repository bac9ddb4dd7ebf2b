"""The study runner: expand a config's grid, run every cell once, append results, resume after interruption."""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sklearn.metrics import average_precision_score, roc_auc_score

from fedgmm.datasets import Dataset, load_dataset
from fedgmm.datasets.recipe import partition_rows
from fedgmm.datasets.split import DEFAULT_REGIMES, MIN_CLASSES_FOR_LABEL_SKEW
from fedgmm.datasets.split import split_dataset as split_rows
from fedgmm.em.stats import score_samples
from fedgmm.experiments.config import StudyConfig
from fedgmm.experiments.results import (
    RESULTS_FILE,
    ResultRow,
    RoundPoint,
    append_rows,
    completed_keys,
    read_rows,
    repair_truncated_tail,
)
from fedgmm.federated.dispatch import run_method
from fedgmm.federated.preprocessing import Transform, run_preprocessing, transform_from_moments
from fedgmm.federated.spec import (
    BASELINES,
    FEDERATED_METHODS,
    MethodSpec,
    baseline_spec,
    per_client_components,
    resolve_local_components,
)
from fedgmm.federated.transport import CommunicationLog
from fedgmm.inprocess.runner import MethodRun, run_inprocess
from fedgmm.inprocess.transport import InProcessTransport
from fedgmm.mixture import MixtureState
from fedgmm.model_io import save_mixture

LABELS = {
    "centralized": "Centralized",
    "local": "Local only",
    "union": "Union (no retraining)",
    "fedgengmm": "FedGenGMM",
    "fedem": "Federated EM",
    "fedgengmm-paper": "FedGenGMM (paper recipe)",
}
#: Which swept settings change which method (the others share one run per data cell).
RELEVANT = {
    "local_components": {"local", "union", "fedgengmm", "fedem", "hybrid"},
    "synthetic_size": {"fedgengmm", "hybrid", "fedgengmm-paper"},
    "hybrid_rounds": {"hybrid"},
    "n_components": {"centralized", "fedgengmm", "fedem", "hybrid", "fedgengmm-paper"},
    # The one-shot ablation levers vary FedGenGMM (and the union, for the local strategy);
    # the hybrid and federated EM start from the template's one-shot settings.
    "local_reg_covar": {"union", "fedgengmm"},
    "aggregation": {"fedgengmm"},
    "n_init": {"fedgengmm"},
    "attack": {"union", "fedgengmm", "fedem", "hybrid"},
    "attack_fraction": {"union", "fedgengmm", "fedem", "hybrid"},
    "robust": {"union", "fedgengmm", "fedem", "hybrid"},
    # Record-level DP of the clients' releases (None / inf: off); the baselines see raw rows.
    "epsilon": {"fedgengmm", "fedem", "hybrid"},
}


@dataclass
class DataCell:
    """One (dataset, α, contamination, seed) split: client arrays, test set, preprocessing."""

    dataset: str
    alpha: float | None
    contamination: float
    seed: int
    clients: list[np.ndarray]
    X_test: np.ndarray
    X_ood: np.ndarray | None
    transform: Transform | None
    preprocessing: CommunicationLog = field(default_factory=CommunicationLog)
    #: Per client, rows held out of every fit (the audit's non-members); None without ``audit_holdout``.
    held_out: list[np.ndarray] | None = None
    #: The audit's reference density (fitted on test rows on first use).
    reference: Any = None


@dataclass
class StudyOutcome:
    """What a study run did: rows computed now, rows found in the cache, failed runs."""

    results_path: Path
    computed: int = 0
    cached: int = 0
    failed: int = 0
    report_path: Path | None = None


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _local_label(value: Any) -> str:
    if value is None:
        return "default"
    per = per_client_components(value)
    if per:  # one K per client: the distinct values, e.g. "2/20"
        return "/".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in sorted(set(per)))
    return str(value) if isinstance(value, int) else f"{value[0]}-{value[1]}"


# ----------------------------------------------------------------------------- data
def split_dataset(
    ds: Dataset, config: StudyConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The study's train / test / OOD split (see :func:`fedgmm.datasets.split.split_dataset`)."""
    return split_rows(ds, test_fraction=config.test_fraction, seed=seed, ood_classes=config.ood_classes)


def contaminate(
    clients: list[np.ndarray], fraction: float, config: StudyConfig, rng: np.random.Generator
) -> list[np.ndarray]:
    """Replace ``share`` of the rows of ``round(fraction · C)`` clients by uniform outliers.

    Outliers fill the training data's bounding box widened by ``margin`` times its
    extent on each side (:class:`~fedgmm.experiments.config.ContaminationConfig`).
    """
    if fraction <= 0:
        return clients
    pooled = np.vstack([c for c in clients if c.shape[0]])
    lo, hi = pooled.min(axis=0), pooled.max(axis=0)
    width = hi - lo
    lo, hi = lo - config.contamination.margin * width, hi + config.contamination.margin * width
    n_bad = round(fraction * len(clients))
    bad = set(rng.choice(len(clients), size=n_bad, replace=False).tolist())
    out = []
    for i, X in enumerate(clients):
        if i in bad and X.shape[0]:
            X = X.copy()
            rows = rng.choice(X.shape[0], size=round(config.contamination.share * X.shape[0]), replace=False)
            X[rows] = rng.uniform(lo, hi, size=(rows.size, X.shape[1]))
        out.append(X)
    return out


def prepare_cell(
    ds: Dataset, config: StudyConfig, alpha: float | None, contamination_fraction: float, seed: int
) -> DataCell:
    """Split, partition, contaminate and (federatedly) preprocess one data cell."""
    X_train, y_train, X_test, X_ood = split_dataset(ds, config, seed)
    p = config.partition
    clean = partition_rows(
        X_train, y_train, partitioner=p.name, num_partitions=p.num_partitions, alpha=alpha,
        min_partition_size=p.min_partition_size, regimes=p.regimes, seed=seed, extra=p.extra,
    )
    held_out: list[np.ndarray] | None = None
    if config.audit_holdout > 0:
        clean, held_out = holdout_rows(clean, config.audit_holdout, seed)
    clients = contaminate(
        clean, contamination_fraction, config, np.random.default_rng(np.random.SeedSequence([seed, 0xBAD]))
    )
    # Log-likelihoods are only comparable in one coordinate system: with clean_preprocessing
    # the transform is fitted on the clean rows, so every contamination level is scored alike.
    fit_on = clean if config.contamination.clean_preprocessing else clients
    pre = config.preprocessing
    transform: Transform | None = None
    log = CommunicationLog()
    pca = min(pre.pca, ds.n_features) if pre.pca else None
    if pre.mode == "federated" and (pre.standardize or pca):
        transport = InProcessTransport(fit_on)
        transform, _ = run_preprocessing(transport, standardize=pre.standardize, n_components=pca)
        log = transport.communication
    elif pre.mode == "public" and (pre.standardize or pca):
        pooled = np.vstack(fit_on)
        transform = transform_from_moments(
            pooled.shape[0], pooled.sum(0), pooled.T @ pooled, standardize=pre.standardize, n_components=pca
        )
    return DataCell(ds.name, alpha, contamination_fraction, seed, clients, X_test, X_ood, transform, log, held_out)


def holdout_rows(clients: list[np.ndarray], fraction: float, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Keep ``round(fraction · n_c)`` of each client's rows (seeded) out of the fit: (kept, held out)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA0D17, 1]))
    kept, held = [], []
    for X in clients:
        order = rng.permutation(X.shape[0])
        n_out = round(fraction * X.shape[0])
        kept.append(X[order[n_out:]])
        held.append(X[order[:n_out]])
    return kept, held


# ----------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class Variant:
    """One method with one combination of swept settings."""

    method: str
    label: str
    spec: MethodSpec
    settings: dict[str, Any]


def method_variants(config: StudyConfig, method: str) -> list[Variant]:
    """Every distinct run of ``method`` that the sweep asks for (irrelevant sweeps collapse)."""
    m = config.model.spec
    keys = [k for k in config.sweep if k != "contamination" and method in RELEVANT.get(k, set())]
    combos = itertools.product(*(config.sweep[k] for k in keys)) if keys else [()]
    variants: list[Variant] = []
    for combo in combos:
        values = dict(zip(keys, combo, strict=True))
        n_comp = int(values.get("n_components", m.n_components))
        lc = values.get("local_components", m.local_components)
        k_lo, k_hi = resolve_local_components(lc, n_comp)
        local: Any = per_client_components(lc) or (k_lo if k_lo == k_hi else (k_lo, k_hi))
        rounds = int(values.get("hybrid_rounds", config.model.hybrid_rounds)) if method == "hybrid" else m.max_rounds
        spec = replace(
            m, method=BASELINES[method][0] if method in BASELINES else method, n_components=n_comp, local_components=local,
            synthetic_size=values.get("synthetic_size", m.synthetic_size), max_rounds=rounds,
            robust=bool(values.get("robust", m.robust)),
        )
        spec = replace(spec, **{k: values[k] for k in ("local_reg_covar", "aggregation", "n_init") if k in values})
        if "epsilon" in values:
            values["epsilon"] = None if math.isinf(float(values["epsilon"])) else float(values["epsilon"])
            if values["epsilon"] is not None and not takes_epsilon(spec.method):
                continue  # listed by skipped_private_variants
            spec = replace(spec, epsilon=values["epsilon"])
        if method in BASELINES:
            spec = baseline_spec(method, spec)
        label = LABELS.get(method, f"FedGenGMM + {rounds} EM") + _ablation_label(values)
        if method in RELEVANT["attack"]:
            kind, fraction = variant_attack(config, values)
            values = {k: v for k, v in values.items() if k not in ("attack", "attack_fraction")}
            if kind != "none":
                values.update({"attack": kind, "attack_fraction": fraction})
                label += f" · {kind} on {fraction:.0%}"
            if not spec.robust:
                label += " (plain)"
        if all(v.spec != spec or v.settings != values for v in variants):
            variants.append(Variant(method, label, spec, values))
    return variants


class _Unreached(Exception):
    """The probe's transport was reached: the dispatch accepted the spec."""


class _ProbeTransport:
    """A transport whose first use ends the run (see :func:`takes_epsilon`)."""

    def __getattr__(self, name: str) -> Any:
        raise _Unreached(name)


@functools.cache
def takes_epsilon(method: str) -> bool:
    """Whether the dispatch runs ``method`` with differential privacy on (``epsilon`` set).

    Asks :func:`~fedgmm.federated.dispatch.run_method` itself, with a transport that stops
    the run at its first message: a method the dispatch refuses raises ``ValueError``
    first. So a study's private federated EM rows run as soon as the dispatch takes ε.
    """
    try:
        run_method(_ProbeTransport(), MethodSpec(method, n_components=1, epsilon=1.0, clip_bound=1.0), 0)  # type: ignore[arg-type]
    except _Unreached:
        return True
    except ValueError:
        return False
    return True


def skipped_private_variants(config: StudyConfig) -> list[str]:
    """``"<method> at ε=…"`` for the swept ε a method cannot run with yet (left out of the grid)."""
    eps = [float(e) for e in config.sweep.get("epsilon", ()) if not math.isinf(float(e))]
    methods = [m for m in config.methods if m in RELEVANT["epsilon"] and not takes_epsilon(m)]
    return [f"{LABELS.get(m, m)} at ε={', '.join(f'{e:g}' for e in eps)}" for m in methods] if eps else []


def _ablation_label(values: dict[str, Any]) -> str:
    """The label suffix of the one-shot ablation sweeps (local strategy, aggregation, server starts)."""
    parts = []
    if "local_components" in values and per_client_components(values["local_components"]):
        parts.append("mixed local K " + _local_label(per_client_components(values["local_components"])))
    if "local_reg_covar" in values:
        parts.append(f"local reg {values['local_reg_covar']}")
    if "aggregation" in values:
        parts.append(str(values["aggregation"]))
    if "n_init" in values:
        parts.append(f"{values['n_init']} start" + ("s" if values["n_init"] != 1 else ""))
    if "epsilon" in values:
        parts.append("ε=∞" if values["epsilon"] is None or math.isinf(values["epsilon"]) else f"ε={values['epsilon']:g}")
    return f" [{', '.join(parts)}]" if parts else ""


def variant_attack(config: StudyConfig, values: dict[str, Any]) -> tuple[str, float]:
    """The ``(attack kind, fraction of clients)`` of a variant: ``("none", 0.0)`` when nobody attacks."""
    kind = str(values.get("attack", config.attack.kind)).strip() or "none"
    fraction = float(values.get("attack_fraction", config.attack.fraction))
    if kind.lower() in ("none", "honest") or fraction <= 0:
        return "none", 0.0
    return kind, fraction


def attacked_clients(clients: list[np.ndarray], kind: str, fraction: float, seed: int) -> list[Any]:
    """``round(fraction · C)`` of the clients (at least one; chosen by ``seed``) wrapped in the attack ``kind``."""
    if kind == "none" or fraction <= 0:
        return list(clients)
    from fedgmm.attacks import parse_attack

    plan = parse_attack(kind)
    n_bad = min(len(clients), max(1, round(fraction * len(clients))))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA77AC]))
    bad = set(rng.choice(len(clients), size=n_bad, replace=False).tolist())
    return [plan(X) if i in bad else X for i, X in enumerate(clients)]


def regime_mode(config: StudyConfig, ds: Dataset) -> int | str:
    """What ``partition.regimes`` means for ``ds``: ``"classes"`` or a number of k-means regimes."""
    regimes = config.partition.regimes
    if regimes != "auto":
        return regimes
    inlier_y = ds.y if ds.anomaly is None else ds.y[~ds.anomaly]
    inlier_y = inlier_y[~np.isin(inlier_y, config.ood_classes)]
    return "classes" if np.unique(inlier_y).size >= MIN_CLASSES_FOR_LABEL_SKEW else DEFAULT_REGIMES


def cell_key(
    config: StudyConfig, cell: tuple[str, float | None, float, int], variant: Variant, regimes: int | str = "classes"
) -> str:
    """Stable id of one run: everything that changes its result, nothing else.

    ``regimes`` is the effective partition labelling (:func:`regime_mode`); it enters the
    key only when it is not the classes, so keys of class-skew cells stay as they were.
    """
    dataset, alpha, contamination, seed = cell
    partition = asdict(replace(config.partition, alpha=()))
    partition.pop("regimes")
    if regimes != "classes":
        partition["regimes"] = regimes
    spec = _key_fields(variant.spec)
    if "attack" in variant.settings:  # only attacked runs carry it, so earlier keys stay as they were
        spec["attack"] = [variant.settings["attack"], variant.settings["attack_fraction"]]
    if variant.method in ("centralized",):
        for k in ("local_components", "synthetic_size", "max_rounds", "em_tol", "init", "min_samples_per_component"):
            spec.pop(k)
    if variant.method in ("local", "union"):
        for k in ("n_components", "synthetic_size", "max_rounds", "em_tol", "init", "n_init"):
            spec.pop(k)
    if variant.method == "fedem":
        spec.pop("n_init")
    if variant.method == "fedgengmm":
        for k in ("max_rounds", "em_tol", "init"):
            spec.pop(k)
    return _digest({
        "dataset": dataset, "options": config.dataset_options.get(dataset, {}), "alpha": alpha,
        "contamination": contamination, "contamination_settings": asdict(config.contamination) if contamination else None,
        "seed": seed, "partition": partition, "preprocessing": asdict(config.preprocessing),
        "test_fraction": config.test_fraction, "ood": list(config.ood_classes), "spec": spec,
        **({"audit_holdout": config.audit_holdout} if config.audit_holdout else {}),
    })  # fmt: skip


#: The spec fields the first run keys held, by the names they had then. A field added
#: later enters a key only when it is off its default, so rows of earlier runs keep
#: their keys and a new hyper-parameter needs no change here.
_KEY_FIELDS_V1 = (
    "method", "n_components", "covariance_type", "local_components", "synthetic_size", "reg_covar", "max_iter",
    "tol", "max_rounds", "em_tol", "init", "min_samples_per_component", "min_clients", "n_init",
)  # fmt: skip
_KEY_NAMES_V1 = {"fit_tol": "tol", "round_tol": "em_tol"}


def _key_fields(spec: MethodSpec) -> dict[str, Any]:
    """The spec as the run key names it (see :data:`_KEY_FIELDS_V1`)."""
    defaults = {f.name: f.default for f in fields(MethodSpec)}
    out: dict[str, Any] = {}
    for name, value in asdict(spec).items():
        key = _KEY_NAMES_V1.get(name, name)
        if key in _KEY_FIELDS_V1 or value != defaults[name]:
            out[key] = value
    return out


def iter_cells(config: StudyConfig) -> Iterator[tuple[str, float | None, float, int]]:
    """(dataset, α, contamination, seed) in run order."""
    alphas: tuple[float | None, ...] = config.partition.alpha if config.partition.name in ("dirichlet", "quantity") else (None,)
    contaminations = tuple(float(c) for c in config.sweep.get("contamination", (0.0,)))
    yield from itertools.product(config.datasets, alphas, contaminations, config.seeds)


# ----------------------------------------------------------------------------- evaluation
def _detection(scores: np.ndarray, n_test: int, X_ood_scores: np.ndarray | None) -> tuple[float | None, float | None]:
    if X_ood_scores is None:
        return None, None
    labels = np.r_[np.zeros(n_test), np.ones(X_ood_scores.shape[0])]
    big = float(np.finfo(np.float64).max)
    # −log p(x) = +inf (a point the model deems impossible) is the most anomalous score.
    anomaly = np.nan_to_num(-np.r_[scores, X_ood_scores], nan=big, posinf=big, neginf=-big)
    return float(average_precision_score(labels, anomaly)), float(roc_auc_score(labels, anomaly))


def evaluate_state(state: MixtureState, X_test: np.ndarray, X_ood: np.ndarray | None) -> tuple[float, float | None, float | None]:
    """Mean test log-likelihood and, with OOD rows, AUC-PR and AUROC of ``−log p(x)``."""
    scores = score_samples(X_test, state)
    ood_scores = score_samples(X_ood, state) if X_ood is not None else None
    pr, roc = _detection(scores, X_test.shape[0], ood_scores)
    return float(np.mean(scores)), pr, roc


def _evaluate(run: MethodRun, X_test: np.ndarray, X_ood: np.ndarray | None) -> tuple[float, float | None, float | None]:
    if run.model is not None:
        return evaluate_state(run.model.state_, X_test, X_ood)
    results = [evaluate_state(m.state_, X_test, X_ood) for m in run.local_models]
    if not results:
        return math.nan, None, None
    ll = float(np.mean([r[0] for r in results]))
    prs = [r[1] for r in results if r[1] is not None]
    rocs = [r[2] for r in results if r[2] is not None]
    return ll, (float(np.mean(prs)) if prs else None), (float(np.mean(rocs)) if rocs else None)


def run_variant(config: StudyConfig, cell: DataCell, variant: Variant, key: str, progress: Callable[[str, int, int], None] | None = None) -> tuple[ResultRow, MethodRun | None]:
    """Run one method variant on one data cell and score it on the cell's test set."""
    X_test = cell.transform.apply(cell.X_test) if cell.transform else cell.X_test
    X_ood = None
    if cell.X_ood is not None:
        X_ood = cell.transform.apply(cell.X_ood) if cell.transform else cell.X_ood
    federated = variant.spec.method in FEDERATED_METHODS
    extra: dict[str, Any] = {"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in variant.settings.items()}}
    history: list[RoundPoint] = []
    run: MethodRun | None = None
    try:
        clients = attacked_clients(
            cell.clients, variant.settings.get("attack", "none"), float(variant.settings.get("attack_fraction", 0.0)),
            cell.seed,
        )
        run = run_inprocess(
            variant.spec, clients, seed=cell.seed, n_jobs=config.n_jobs, progress=progress,
            keep_round_states=variant.method in ("fedem", "hybrid"), transform=cell.transform,
        )
        ll, pr, roc = _evaluate(run, X_test, X_ood)
        # History rounds count every round of the run (preprocessing and initialisation too),
        # so a curve and a one-shot method's point share one x axis.
        offset = run.communication.rounds - len(run.history) + (cell.preprocessing.rounds if federated else 0)
        for rec, state in zip(run.history, run.round_states, strict=False):
            history.append(RoundPoint(rec.round + offset, rec.log_likelihood, float(np.mean(score_samples(X_test, state))),
                                      rec.bytes_up + cell.preprocessing.bytes_up * federated,
                                      rec.bytes_down + cell.preprocessing.bytes_down * federated))
        comm = run.communication
        extra.update({k: v for k, v in run.extra.items() if k in ("synthetic_size", "n_components", "local_components", "n_rounds", "converged", "n_iter", "bic")})
        extra["excluded"] = [f"{r.source}: {r.status} ({r.reason})" for r in run.records if r.status != "ok"]
        if federated:
            extra.update(membership_audit(run, cell, X_test, attacked="attack" in variant.settings))
        used = sum(1 for r in run.records if r.status == "ok") if run.records else len(cell.clients)
        times = (run.client_seconds, run.server_seconds, run.wall_seconds)
    except Exception as exc:  # a failing method is a result (NaN row with the reason), not a crash
        ll, pr, roc = math.nan, None, None
        comm = CommunicationLog()
        extra["error"] = f"{type(exc).__name__}: {exc}"
        used, times = 0, (0.0, 0.0, 0.0)
    if federated and cell.preprocessing.rounds:
        extra["preprocessing_bytes"] = {"up": cell.preprocessing.bytes_up, "down": cell.preprocessing.bytes_down}
    lc = variant.spec.local_components
    row = ResultRow(
        key=key, study=config.name, dataset=cell.dataset, partitioner=config.partition.name, alpha=cell.alpha,
        n_clients=len(cell.clients), seed=cell.seed, method=variant.method, label=variant.label,
        n_components=variant.spec.fixed_k() if isinstance(variant.spec.n_components, int) else -1,
        covariance_type=variant.spec.covariance_type, local_components=_local_label(lc),
        synthetic_size=float(variant.spec.synthetic_size) if variant.spec.method in ("fedgengmm", "hybrid") else None,
        max_rounds=variant.spec.max_rounds if variant.method in ("fedem", "hybrid") else None,
        contamination=cell.contamination, test_loglik=ll, auc_pr=pr, auroc=roc,
        rounds=comm.rounds + (cell.preprocessing.rounds if federated else 0),
        bytes_up=comm.bytes_up + (cell.preprocessing.bytes_up if federated else 0),
        bytes_down=comm.bytes_down + (cell.preprocessing.bytes_down if federated else 0),
        client_seconds=times[0], server_seconds=times[1], wall_seconds=times[2], n_clients_used=used,
        history=history, extra=extra,
    )  # fmt: skip
    return row, run


def upload_membership_auc(run: MethodRun, cell: DataCell, X_test: np.ndarray) -> float | None:
    """Mean AUC of a likelihood-threshold membership attack on the uploaded local models.

    Each upload scores its client's own (transformed) rows against as many test rows
    (:func:`fedgmm.privacy.audit.likelihood_attack`); 0.5 is chance. None when the run
    uploaded no local models.
    """
    from fedgmm.privacy.audit import likelihood_attack

    ids = run.extra.get("local_client_ids")
    if not run.local_models or not ids or len(ids) != len(run.local_models):
        return None
    rng = np.random.default_rng(np.random.SeedSequence([cell.seed, 0xA0D17]))
    aucs = []
    for cid, model in zip(ids, run.local_models, strict=True):
        rows = cell.clients[int(cid)]
        rows = cell.transform.apply(rows) if cell.transform else rows
        m = min(rows.shape[0], X_test.shape[0])
        if m < 2:
            continue
        members = rows[rng.choice(rows.shape[0], m, replace=False)]
        others = X_test[rng.choice(X_test.shape[0], m, replace=False)]
        aucs.append(likelihood_attack(model.state_, members, others, n_bootstrap=1, random_state=0).auc)
    return float(np.mean(aucs)) if aucs else None


def membership_audit(run: MethodRun, cell: DataCell, X_test: np.ndarray, *, attacked: bool = False) -> dict[str, float]:
    """Membership-attack read-outs of a federated run's releases, as fields of the row's ``extra``.

    With held-out rows (``audit_holdout``): :func:`fedgmm.privacy.audit.audit_run` on each
    upload (its client's rows against its held-out rows) and on the global model (all of
    them pooled), both attacks — likelihood threshold and density ratio against a reference
    fitted on test rows. Fields: ``membership_auc`` / ``membership_auc_ratio`` (mean over
    uploads), ``membership_auc_max``, ``membership_tpr`` (mean TPR at 1% FPR, likelihood),
    ``global_membership_auc`` / ``global_membership_auc_ratio``. Without held-out rows: the
    uploads against the test rows (:func:`upload_membership_auc`) and the global model's
    pooled training rows against the test rows (clean, honest cells only).
    """
    from fedgmm.privacy.audit import audit_run, fit_reference

    out: dict[str, float] = {}
    seed = np.random.SeedSequence([cell.seed, 0xA0D17, 2])
    if cell.held_out is None:
        leak = upload_membership_auc(run, cell, X_test)
        if leak is not None:
            out["membership_auc"] = leak
        if run.model is not None and cell.contamination == 0 and not attacked:
            pooled = np.vstack([_in_model_space(cell, X) for X in cell.clients if X.shape[0]])
            audits = audit_run(run.model.state_, None, [pooled], X_test, n_bootstrap=1, random_state=np.random.default_rng(seed))
            out["global_membership_auc"] = audits[-1].results[0].auc
        return out
    members = {i: _in_model_space(cell, X) for i, X in enumerate(cell.clients) if X.shape[0] >= 2 and cell.held_out[i].shape[0] >= 2}
    non_members = {i: _in_model_space(cell, cell.held_out[i]) for i in members}
    ids = run.extra.get("local_client_ids") or []
    uploads = ({int(c): m.state_ for c, m in zip(ids, run.local_models, strict=True) if int(c) in members}
               if len(ids) == len(run.local_models) else {})  # fmt: skip
    if not members or (run.model is None and not uploads):
        return out
    if cell.reference is None:
        rng = np.random.default_rng(seed)
        ref_rows = X_test[rng.permutation(X_test.shape[0])[:REFERENCE_ROWS]]
        cell.reference = fit_reference(ref_rows, random_state=cell.seed)
    audits = audit_run(
        run.model.state_ if run.model is not None else None, uploads, members, non_members, reference=cell.reference,
        n_bootstrap=1, random_state=np.random.default_rng(seed),
    )
    ups = [a for a in audits if a.artefact == "upload"]
    if ups:
        lik = [a.results[0] for a in ups]
        out["membership_auc"] = float(np.mean([r.auc for r in lik]))
        out["membership_auc_max"] = float(np.max([r.auc for r in lik]))
        out["membership_tpr"] = float(np.mean([r.tpr for r in lik]))
        out["membership_auc_ratio"] = float(np.mean([a.results[1].auc for a in ups]))
    for a in audits:
        if a.artefact == "global":
            out["global_membership_auc"] = a.results[0].auc
            out["global_membership_auc_ratio"] = a.results[1].auc
    return out


#: Test rows the audit's reference density is fitted on (a seeded subsample).
REFERENCE_ROWS = 4000


def _in_model_space(cell: DataCell, X: np.ndarray) -> np.ndarray:
    return cell.transform.apply(X) if cell.transform is not None else X


def failed_row(
    config: StudyConfig, cell_id: tuple[str, float | None, float, int], variant: Variant, key: str, exc: Exception
) -> ResultRow:
    """The row of a run that could not happen (its data cell could not be built)."""
    dataset, alpha, contamination, seed = cell_id
    return ResultRow(
        key=key, study=config.name, dataset=dataset, partitioner=config.partition.name, alpha=alpha,
        n_clients=config.partition.num_partitions, seed=seed, method=variant.method, label=variant.label,
        n_components=variant.spec.n_components if isinstance(variant.spec.n_components, int) else -1,
        covariance_type=variant.spec.covariance_type, local_components=_local_label(variant.spec.local_components),
        synthetic_size=float(variant.spec.synthetic_size) if variant.spec.method in ("fedgengmm", "hybrid") else None,
        max_rounds=variant.spec.max_rounds if variant.method in ("fedem", "hybrid") else None,
        contamination=contamination, test_loglik=math.nan, auc_pr=None, auroc=None, rounds=0, bytes_up=0,
        bytes_down=0, client_seconds=0.0, server_seconds=0.0, wall_seconds=0.0, n_clients_used=0,
        extra={"error": f"{type(exc).__name__}: {exc}"},
    )  # fmt: skip


# ----------------------------------------------------------------------------- driver
def _save_models(out_dir: Path, cell: DataCell, variant: Variant, run: MethodRun) -> None:
    """Keep a 2-D cell's models and client points for the density-contour plots."""
    folder = out_dir / "models" / f"{cell.dataset}-alpha{cell.alpha}-seed{cell.seed}"
    folder.mkdir(parents=True, exist_ok=True)
    if run.model is not None:
        save_mixture(folder / f"{variant.method}.npz", run.model.state_, extra={"label": variant.label})
    if variant.method == "union":
        for i, m in enumerate(run.local_models):
            save_mixture(folder / f"local-{i}.npz", m.state_, extra={"label": "local"})
    clients = [cell.transform.apply(X) if cell.transform else X for X in cell.clients]
    arrays: dict[str, Any] = {f"client_{i}": X for i, X in enumerate(clients)}
    np.savez(folder / "clients.npz", **arrays)


def run_study(
    config: StudyConfig,
    out_dir: Path,
    *,
    console: Console | None = None,
    show_progress: bool = True,
    stop_after: int | None = None,
    write_report: bool = True,
) -> StudyOutcome:
    """Run every cell of a study that is not already in ``out_dir/results.jsonl``.

    Rows are appended (and flushed) one run at a time, so an interrupted study loses
    at most the run in progress; re-running skips every row already written.

    Parameters
    ----------
    config : StudyConfig
    out_dir : Path
        Holds ``results.jsonl``, ``config.json``, ``report.md`` and the plots.
    console : rich Console, optional
    show_progress : bool
        Progress bars (cells, and clients within a federated round).
    stop_after : int, optional
        Stop after computing this many runs (for tests of resumption).
    write_report : bool
        Write the markdown report with plots at the end.
    """
    console = console or Console()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / RESULTS_FILE
    datasets: dict[str, Dataset] = {}
    cells = list(iter_cells(config))
    variants = [v for m in config.methods for v in method_variants(config, m)]
    wanted: set[str] = set()
    for cell_id in cells:
        if cell_id[0] not in datasets:
            datasets[cell_id[0]] = load_dataset(cell_id[0], **config.dataset_options.get(cell_id[0], {}))
        mode = regime_mode(config, datasets[cell_id[0]])
        wanted.update(cell_key(config, cell_id, v, mode) for v in variants)
    if results.exists() and (cut := repair_truncated_tail(results)):
        console.print(f"[yellow]{results}: removed an incomplete last line ({cut} bytes) left by an interrupted run")
    done = _set_aside_stale_rows(results, wanted, console) if results.exists() else set()
    for skipped in skipped_private_variants(config):
        console.print(f"[yellow]skipped {skipped}: the dispatch does not take epsilon for it in this version")
    (out_dir / "config.json").write_text(json.dumps(asdict(config), indent=2, default=str), encoding="utf-8")
    outcome = StudyOutcome(results)
    total = len(cells) * len(variants)
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=not show_progress, transient=False,
    )
    with progress:
        overall = progress.add_task(f"study {config.name}", total=total)
        clients_task = progress.add_task("clients", total=1, visible=False)

        def on_client(kind: str, n_done: int, n_total: int) -> None:
            progress.update(clients_task, description=f"  {kind}", completed=n_done, total=n_total, visible=True)

        for cell_id in cells:
            dataset, alpha, contamination, seed = cell_id
            if dataset not in datasets:
                datasets[dataset] = load_dataset(dataset, **config.dataset_options.get(dataset, {}))
            mode = regime_mode(config, datasets[dataset])
            todo = [(v, cell_key(config, cell_id, v, mode)) for v in variants]
            pending = [(v, k) for v, k in todo if k not in done]
            outcome.cached += len(todo) - len(pending)
            progress.advance(overall, len(todo) - len(pending))
            if not pending:
                continue
            try:
                cell = prepare_cell(datasets[dataset], config, alpha, contamination, seed)
            except ValueError as exc:  # e.g. a Dirichlet draw that cannot meet the minimum size
                for variant, key in pending:
                    append_rows(results, [failed_row(config, cell_id, variant, key, exc)])
                    done.add(key)
                outcome.computed += len(pending)
                outcome.failed += len(pending)
                progress.advance(overall, len(pending))
                console.print(f"[yellow]{dataset} α={alpha} seed={seed}: no data cell: {exc}")
                continue
            for variant, key in pending:
                if stop_after is not None and outcome.computed >= stop_after:
                    return outcome
                progress.update(overall, description=f"{dataset} α={alpha} seed={seed}: {variant.label}")
                start = time.perf_counter()
                row, run = run_variant(config, cell, variant, key, on_client if show_progress else None)
                row.extra["cell_seconds"] = time.perf_counter() - start
                append_rows(results, [row])
                done.add(key)
                outcome.computed += 1
                if "error" in row.extra:
                    outcome.failed += 1
                    console.print(f"[yellow]{variant.label} on {dataset} α={alpha} seed={seed} failed: {row.extra['error']}")
                elif run is not None and cell.clients and _is_2d(cell) and seed == config.seeds[0] and contamination == 0:
                    _save_models(out_dir, cell, variant, run)
                progress.update(clients_task, visible=False)
                progress.advance(overall)
    if write_report:
        from fedgmm.experiments.report import write_report as _write_report

        outcome.report_path = _write_report(results, out_dir, title=config.description or config.name, models_dir=out_dir / "models")
    return outcome


def _set_aside_stale_rows(results: Path, wanted: set[str], console: Console) -> set[str]:
    """Keep the rows of this grid in ``results``; move the others to ``results.stale.jsonl``.

    A row is stale when the config changed so that no cell of the grid has its key any
    more; it is kept beside the results (never deleted), out of the report. Rows of runs
    that failed (and have no later success) move to ``results.failed.jsonl`` and are not
    returned, so they run again. Returns the keys of the grid's successful rows.
    """
    rows = list(read_rows(results))
    done = completed_keys(r for r in rows if r.key in wanted)
    failed = [r for r in rows if r.key in wanted and r.key not in done]
    stale = [r for r in rows if r.key not in wanted]
    if failed:  # failed runs are retried: their rows move aside (kept, never deleted)
        append_rows(results.with_suffix(".failed.jsonl"), failed)
        console.print(f"{len(failed)} failed row(s) moved to {results.with_suffix('.failed.jsonl')}; retrying them")
    if stale:
        append_rows(results.with_suffix(".stale.jsonl"), stale)
    if stale or failed:
        keep = [r for r in rows if r.key in done]
        tmp = results.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        append_rows(tmp, keep)
        tmp.replace(results)
    if stale:
        console.print(f"[yellow]{len(stale)} row(s) of an earlier config moved to {results.with_suffix('.stale.jsonl')}")
    return done


def _is_2d(cell: DataCell) -> bool:
    d = cell.transform.n_features_out if cell.transform else cell.clients[0].shape[1]
    return d == 2

"""Membership-inference audit of released mixtures: likelihood threshold and DOMIAS density ratio."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from fedgmm._random import SeedLike, as_generator
from fedgmm.em.stats import score_samples
from fedgmm.gaussian_mixture import GaussianMixture
from fedgmm.mixture import MixtureState

#: False-positive rate at which the attack's true-positive rate is reported.
DEFAULT_FPR = 0.01
#: Bootstrap resamples for the confidence intervals.
DEFAULT_BOOTSTRAP = 200
#: The attacks :func:`audit_run` knows, in the order it runs them.
ATTACKS = ("likelihood", "density-ratio")


class _Scorer(Protocol):
    def score_samples(self, X: Any) -> np.ndarray: ...


Model = MixtureState | _Scorer


@dataclass(frozen=True)
class AttackResult:
    """How well one attack tells members from non-members.

    Attributes
    ----------
    attack : str
        ``"likelihood"`` or ``"density-ratio"``.
    auc : float
        ROC AUC of the attack score (members positive); 0.5 is chance.
    auc_ci : (float, float)
        Percentile bootstrap interval (members and non-members resampled separately).
    tpr : float
        True-positive rate at false-positive rate ``fpr``.
    tpr_ci : (float, float)
    fpr : float
    confidence : float
        Level of both intervals.
    n_members, n_non_members : int
    """

    attack: str
    auc: float
    auc_ci: tuple[float, float]
    tpr: float
    tpr_ci: tuple[float, float]
    fpr: float
    confidence: float
    n_members: int
    n_non_members: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields."""
        return asdict(self)


def log_density(model: Model, X: np.ndarray) -> np.ndarray:
    """``log p(x)`` per row, ``(n,)``, of a MixtureState or any fitted estimator with ``score_samples``."""
    X = np.asarray(X, dtype=np.float64)
    if isinstance(model, MixtureState):
        return score_samples(X, model)
    return np.asarray(model.score_samples(X), dtype=np.float64)


def tpr_at_fpr(y_true: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """Largest true-positive rate among ROC points with false-positive rate ``<= fpr``."""
    f, t, _ = roc_curve(y_true, scores)
    ok = f <= fpr
    return float(t[ok].max()) if np.any(ok) else 0.0


def evaluate_attack(
    member_scores: np.ndarray,
    non_member_scores: np.ndarray,
    *,
    attack: str = "custom",
    fpr: float = DEFAULT_FPR,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    confidence: float = 0.95,
    random_state: SeedLike = None,
) -> AttackResult:
    """AUC and TPR at ``fpr`` of an attack score (higher = "member"), with bootstrap intervals.

    Parameters
    ----------
    member_scores : ndarray of shape (m,)
    non_member_scores : ndarray of shape (m',)
    attack : str
        Name recorded in the result.
    fpr : float
    n_bootstrap : int
    confidence : float
    random_state : int, Generator or None
        Seeds the bootstrap.
    """
    a = np.asarray(member_scores, dtype=np.float64).ravel()
    b = np.asarray(non_member_scores, dtype=np.float64).ravel()
    if a.size < 2 or b.size < 2:
        raise ValueError("an attack needs at least 2 members and 2 non-members.")
    if not 0 < fpr < 1 or not 0 < confidence < 1 or n_bootstrap < 1:
        raise ValueError("fpr and confidence must be in (0, 1) and n_bootstrap >= 1.")
    # -inf log-densities (a row the model deems impossible) rank lowest, consistently.
    lo = np.nanmin(np.concatenate([a[np.isfinite(a)], b[np.isfinite(b)], [0.0]])) - 1.0
    a, b = np.where(np.isfinite(a), a, lo), np.where(np.isfinite(b), b, lo)
    y = np.r_[np.ones(a.size), np.zeros(b.size)]
    s = np.r_[a, b]
    auc = float(roc_auc_score(y, s))
    tpr = tpr_at_fpr(y, s, fpr)
    rng = as_generator(random_state)
    aucs, tprs = np.empty(n_bootstrap), np.empty(n_bootstrap)
    for i in range(n_bootstrap):
        sa = a[rng.integers(0, a.size, a.size)]
        sb = b[rng.integers(0, b.size, b.size)]
        si = np.r_[sa, sb]
        aucs[i] = roc_auc_score(y, si)
        tprs[i] = tpr_at_fpr(y, si, fpr)
    q = [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100]
    auc_ci = tuple(float(v) for v in np.percentile(aucs, q))
    tpr_ci = tuple(float(v) for v in np.percentile(tprs, q))
    return AttackResult(attack, auc, auc_ci, tpr, tpr_ci, fpr, confidence, a.size, b.size)  # type: ignore[arg-type]


def likelihood_attack(
    model: Model, members: np.ndarray, non_members: np.ndarray, **kwargs: Any
) -> AttackResult:
    """Likelihood-threshold attack: score ``log p_model(x)`` (Yeom et al. 2018).

    Parameters
    ----------
    model : MixtureState or fitted estimator with ``score_samples``
        The released artefact (an upload or the global model).
    members : ndarray of shape (m, d)
        Rows the artefact was fitted on (the client's own rows).
    non_members : ndarray of shape (m', d)
        Held-out rows of the same distribution.
    **kwargs
        Passed to :func:`evaluate_attack` (``fpr``, ``n_bootstrap``, ``random_state``...).
    """
    return evaluate_attack(
        log_density(model, members), log_density(model, non_members), attack="likelihood", **kwargs
    )


def fit_reference(
    reference: np.ndarray, *, n_components: int = 10, covariance_type: str = "full", reg_covar: float = 0.05,
    random_state: SeedLike = 0,
) -> GaussianMixture:
    """The attacker's reference density ``p_ref``: a GMM fitted on rows it holds from the same distribution."""
    return GaussianMixture(
        n_components=n_components, covariance_type=covariance_type, reg_covar=reg_covar, random_state=random_state
    ).fit(np.asarray(reference, dtype=np.float64))


def density_ratio_attack(
    model: Model,
    members: np.ndarray,
    non_members: np.ndarray,
    reference: Model | np.ndarray,
    **kwargs: Any,
) -> AttackResult:
    """DOMIAS-style attack (van Breugel et al. 2023): score ``log p_model(x) − log p_ref(x)``.

    Dividing by the population density removes "this row is simply typical", so the score
    isolates overfitting to the member rows: stronger than the plain threshold on
    well-regularised models.

    Parameters
    ----------
    model : MixtureState or fitted estimator
    members, non_members : ndarray of shape (m, d), (m', d)
    reference : MixtureState, fitted estimator, or ndarray of shape (r, d)
        ``p_ref``, or reference rows (disjoint from members and non-members) to fit it on
        with :func:`fit_reference`.
    **kwargs
        Passed to :func:`evaluate_attack`.
    """
    ref = fit_reference(reference) if isinstance(reference, np.ndarray) else reference
    sm = log_density(model, members) - log_density(ref, members)
    sn = log_density(model, non_members) - log_density(ref, non_members)
    return evaluate_attack(sm, sn, attack="density-ratio", **kwargs)


def audit_release(
    model: Model,
    members: np.ndarray,
    non_members: np.ndarray,
    *,
    reference: Model | np.ndarray | None = None,
    fpr: float = DEFAULT_FPR,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    confidence: float = 0.95,
    random_state: SeedLike = 0,
) -> list[AttackResult]:
    """Run every attack on one released artefact.

    Members and non-members are subsampled to the same size (seeded) so AUC is not skewed
    by class balance in the TPR@FPR read-out.

    Returns
    -------
    list of AttackResult
        The likelihood attack, then the density-ratio attack when ``reference`` is given.
    """
    rng = as_generator(random_state)
    m = min(len(members), len(non_members))
    members = np.asarray(members)[rng.permutation(len(members))[:m]]
    non_members = np.asarray(non_members)[rng.permutation(len(non_members))[:m]]
    kw: dict[str, Any] = {"fpr": fpr, "n_bootstrap": n_bootstrap, "confidence": confidence, "random_state": rng}
    out = [likelihood_attack(model, members, non_members, **kw)]
    if reference is not None:
        out.append(density_ratio_attack(model, members, non_members, reference, **kw))
    return out


@dataclass(frozen=True)
class ArtefactAudit:
    """The attacks on one released artefact of a run.

    Attributes
    ----------
    artefact : str
        ``"upload"`` (a client's local model, what the server received) or ``"global"``.
    client : int or None
        The uploading client's index; None for the global model.
    results : tuple of AttackResult
        One per attack, in :data:`ATTACKS` order (the density-ratio attack only with a reference).
    """

    artefact: str
    client: int | None
    results: tuple[AttackResult, ...]

    @property
    def name(self) -> str:
        """``"global model"`` or ``"upload of client c"``."""
        return "global model" if self.client is None else f"upload of client {self.client}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields (``results`` as a list of dicts)."""
        return {"artefact": self.artefact, "client": self.client, "name": self.name,
                "results": [r.to_dict() for r in self.results]}  # fmt: skip


def _n_features(model: Model) -> int | None:
    if isinstance(model, MixtureState):
        return model.n_features
    means = getattr(model, "means_", None)
    return None if means is None else int(np.asarray(means).shape[1])


def _rows(X: Any, what: str, d: int | None) -> np.ndarray:
    A = np.asarray(X, dtype=np.float64)
    if A.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array of rows, got shape {A.shape}.")
    if A.shape[0] < 2:
        raise ValueError(f"{what} has {A.shape[0]} row(s); an attack needs at least 2 members and 2 non-members.")
    if d is not None and A.shape[1] != d:
        raise ValueError(f"{what} has {A.shape[1]} features, the artefact {d}; pass rows in the model's coordinates.")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{what} holds NaN or infinite values.")
    return A


def audit_run(
    global_model: Model | None,
    uploads: Mapping[int, Model] | None,
    members: Sequence[np.ndarray] | Mapping[int, np.ndarray],
    non_members: Sequence[np.ndarray] | Mapping[int, np.ndarray] | np.ndarray,
    *,
    reference: Model | np.ndarray | None = None,
    fpr: float = DEFAULT_FPR,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    confidence: float = 0.95,
    random_state: SeedLike = 0,
) -> list[ArtefactAudit]:
    """Membership-inference audit of a run's released artefacts: every upload and the global model.

    Each upload is attacked with its own client's member rows against that client's
    non-member rows (held out, same distribution); the global model with all members
    pooled against all non-members pooled. Both sides are subsampled to the same size
    (:func:`audit_release`). The likelihood-threshold attack always runs; the DOMIAS-style
    density-ratio attack runs when a ``reference`` is given (one reference density, fitted
    once, serves every artefact).

    Parameters
    ----------
    global_model : MixtureState, fitted estimator or None
        The released global model (None: audit the uploads only).
    uploads : mapping of int to MixtureState or fitted estimator, or None
        Client index → the local model that client uploaded (e.g.
        ``dict(zip(est.local_client_ids_, est.local_models_))`` of a fitted ``FedGenGMM``).
    members : sequence or mapping of ndarray of shape (n_c, d)
        Client index → the rows that client fitted on.
    non_members : sequence or mapping of ndarray of shape (m_c, d), or one ndarray of shape (m, d)
        Client index → held-out rows of that client's distribution, or one held-out set
        shared by every artefact.
    reference : MixtureState, fitted estimator, ndarray of shape (r, d), or None
        The attacker's population density (or rows to fit it on with
        :func:`fit_reference`), disjoint from members and non-members.
    fpr, n_bootstrap, confidence
        See :func:`evaluate_attack`.
    random_state : int or Generator
        Seeds the subsampling and the bootstrap of every artefact (the same seed, the same
        intervals).

    Returns
    -------
    list of ArtefactAudit
        The uploads in client order, then the global model.

    Raises
    ------
    ValueError
        Nothing to audit, an upload without member rows, too few rows, or rows whose
        width differs from the artefact's.
    """
    uploads = dict(uploads or {})
    if global_model is None and not uploads:
        raise ValueError("nothing to audit: give a global model, uploads, or both.")
    mem = dict(members) if isinstance(members, Mapping) else dict(enumerate(members))
    shared = isinstance(non_members, np.ndarray)
    non: dict[int, Any] = {} if shared else (
        dict(non_members) if isinstance(non_members, Mapping) else dict(enumerate(non_members)))  # type: ignore[arg-type]
    if not mem:
        raise ValueError("members is empty: give each client's member rows.")
    for c in uploads:
        if c not in mem:
            raise ValueError(f"the upload of client {c} has no member rows; members has clients {sorted(mem)}.")
        if not shared and c not in non:
            raise ValueError(f"the upload of client {c} has no non-member rows; non_members has clients {sorted(non)}.")
    if reference is not None and isinstance(reference, np.ndarray):
        any_model = global_model if global_model is not None else next(iter(uploads.values()))
        reference = fit_reference(_rows(reference, "the reference rows", _n_features(any_model)))
    rng = as_generator(random_state)
    kw: dict[str, Any] = {"reference": reference, "fpr": fpr, "n_bootstrap": n_bootstrap, "confidence": confidence}
    out = []
    for c in sorted(uploads):
        d = _n_features(uploads[c])
        m = _rows(mem[c], f"client {c}'s member rows", d)
        n = _rows(non_members if shared else non[c], f"client {c}'s non-member rows", d)
        out.append(ArtefactAudit("upload", int(c), tuple(audit_release(uploads[c], m, n, random_state=rng, **kw))))
    if global_model is not None:
        d = _n_features(global_model)
        m = _rows(np.vstack([np.asarray(v, dtype=np.float64) for v in mem.values()]), "the pooled member rows", d)
        pooled = non_members if shared else np.vstack([np.asarray(v, dtype=np.float64) for v in non.values()])
        n = _rows(pooled, "the pooled non-member rows", d)
        out.append(ArtefactAudit("global", None, tuple(audit_release(global_model, m, n, random_state=rng, **kw))))
    return out


def holdout_split(
    clients: Sequence[np.ndarray], fraction: float, *, random_state: SeedLike = 0
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Split each client's rows into members (fitted on), non-members and reference rows.

    ``fraction`` of each client's rows (seeded) is held out of the fit; half of those are
    the client's non-members, the other half go to the attacker's reference set (pooled
    by the caller), so members, non-members and reference are disjoint and of one
    distribution per client.

    Parameters
    ----------
    clients : sequence of ndarray of shape (n_c, d)
    fraction : float
        In (0, 1).
    random_state : int or Generator

    Returns
    -------
    members, non_members, reference : lists of ndarray, one per client

    Raises
    ------
    ValueError
        ``fraction`` out of range, or a client too small to keep 2 rows on every side.
    """
    if isinstance(fraction, bool) or not 0 < float(fraction) < 1:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction!r}.")
    rng = as_generator(random_state)
    members, non_members, reference = [], [], []
    for i, X in enumerate(clients):
        X = np.asarray(X, dtype=np.float64)
        n_out = round(float(fraction) * X.shape[0])
        if n_out < 4 or X.shape[0] - n_out < 2:
            raise ValueError(
                f"client {i} has {X.shape[0]} rows: holding out {fraction:g} of them leaves too few members or "
                "non-members (at least 2 of each, and 2 reference rows); give it more rows or change the fraction."
            )
        order = rng.permutation(X.shape[0])
        members.append(X[order[n_out:]])
        non_members.append(X[order[: n_out // 2]])
        reference.append(X[order[n_out // 2 : n_out]])
    return members, non_members, reference

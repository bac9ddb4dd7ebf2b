"""Membership-inference audit of released mixtures: likelihood threshold and DOMIAS density ratio."""

from __future__ import annotations

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
    kw: dict[str, Any] = {"fpr": fpr, "n_bootstrap": n_bootstrap, "random_state": rng}
    out = [likelihood_attack(model, members, non_members, **kw)]
    if reference is not None:
        out.append(density_ratio_attack(model, members, non_members, reference, **kw))
    return out

"""Sample-free aggregation: reduce the clients' union mixture to K components from its parameters only."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse
from sklearn.cluster import kmeans_plusplus
from threadpoolctl import threadpool_limits

from fedgmm.em.stats import MIN_FLOPS_PER_THREAD, get_num_threads
from fedgmm.federated.union import full_covariances
from fedgmm.mixture import MixtureState
from fedgmm.types import CovarianceType

ReductionMethod = Literal["mm", "hem"]
#: ``"mm"``: split-and-conquer MM on the composite transportation divergence with the KL
#: cost (Zhang & Chen, JMLR 23, 2022) — hard assignments, moment matching.
#: ``"hem"``: hierarchical EM over components with virtual samples (Vasconcelos & Lippman,
#: NIPS 1998) — soft assignments tempered by each component's virtual-sample count.
REDUCTION_METHODS: tuple[str, ...] = ("mm", "hem")


@dataclass(frozen=True)
class ReductionResult:
    """Outcome of :func:`reduce_mixture`.

    Attributes
    ----------
    state : MixtureState
        The reduced mixture, ``n_components`` components.
    objective : float
        Final objective of the kept restart (lower is better): the composite transportation
        divergence ``Σ_i w_i min_j KL(φ_i ‖ ψ_j)`` for ``"mm"``, minus the virtual-sample
        lower bound per virtual sample for ``"hem"`` (both up to a constant of the union).
    objectives : tuple of float
        Final objective of every restart, in order.
    n_iter : int
        Iterations of the kept restart.
    converged : bool
    """

    state: MixtureState
    objective: float
    objectives: tuple[float, ...]
    n_iter: int
    converged: bool


def deregularized_covariances(covariances: np.ndarray, reg_covar: float | np.ndarray) -> np.ndarray:
    """``max(Σ_i − reg_covar·I, 0)`` per component (eigenvalues clipped), shape ``(N, d, d)``.

    The local M-step returned ``S_i + reg_covar·I``; reducing ``S_i`` and regularising the
    result once gives the reduced model the regularisation a centralized fit has (as
    :func:`~fedgmm.federated.union.deregularized_factors` does for sampling).
    """
    reg = np.asarray(reg_covar, dtype=np.float64)  # a scalar, or one value per component (N,)
    if np.all(reg <= 0):
        return covariances
    d = covariances.shape[1]
    diag = np.arange(d)
    out = np.array(covariances, dtype=np.float64)  # one copy, edited in place (N·d² floats)
    out[:, diag, diag] -= reg[..., None]
    eps = 1e-12 * float(np.max(reg))
    out[:, diag, diag] += eps
    try:  # the usual case, an honest M-step's output: S_i is already positive semi-definite
        np.linalg.cholesky(out)
        out[:, diag, diag] -= eps
        return out
    except np.linalg.LinAlgError:
        out[:, diag, diag] -= eps
        eigval, eigvec = np.linalg.eigh(out)
        return np.einsum("nij,nj,nkj->nik", eigvec, np.clip(eigval, 0.0, None), eigvec)


def _typed(cov: np.ndarray, weights: np.ndarray, covariance_type: CovarianceType) -> np.ndarray:
    """Reduce full ``(K, d, d)`` covariances to ``covariance_type`` (the KL-optimal projection)."""
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return np.einsum("k,kij->ij", weights / weights.sum(), cov)
    if covariance_type == "diag":
        return np.einsum("kii->ki", cov).copy()
    return np.einsum("kii->k", cov) / cov.shape[1]


def _as_full(cov: np.ndarray, covariance_type: CovarianceType, k: int, d: int) -> np.ndarray:
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if covariance_type == "diag":
        return cov[:, :, None] * np.eye(d)
    return cov[:, None, None] * np.eye(d)


class _Union:
    """The union's components about their weighted mean, second moments as upper triangles.

    An MM iteration is then one GEMM of ``N × d(d+1)/2 × K'`` for the KL costs of the
    ``K'`` reduced components that changed, and sparse sums over the union components that
    moved; a HEM iteration two dense GEMMs of ``N × d(d+1)/2 × K``.
    """

    def __init__(self, weights: np.ndarray, means: np.ndarray, covs: np.ndarray) -> None:
        self.w = weights / weights.sum()
        self.shift = self.w @ means
        self.mu = means - self.shift
        self.n, self.d = means.shape
        self.iu, self.ju = np.triu_indices(self.d)
        # Second moments about the shift, Σ_i + μ̃_i μ̃_iᵀ, upper triangle (N, d(d+1)/2).
        flat = self.iu * self.d + self.ju  # a take along one axis is cheaper than a 2-D gather
        self.m2 = np.take(covs.reshape(self.n, -1), flat, axis=1)
        self.m2 += np.take(self.mu, self.iu, axis=1) * np.take(self.mu, self.ju, axis=1)
        # tr(P M) = Σ_{i≤j} c_ij P_ij M_ij with c = 1 on the diagonal, 2 off it.
        self.tri_weight = np.where(self.iu == self.ju, 1.0, 2.0)
        self._m2_single: np.ndarray | None = None

    @property
    def m2_single(self) -> np.ndarray:
        """:attr:`m2` in float32 (made on first use): the hard assignments' cost GEMM at twice the speed."""
        if self._m2_single is None:
            self._m2_single = self.m2.astype(np.float32)
        return self._m2_single

    def group_sums(
        self, labels: np.ndarray, k: int, rows: np.ndarray | None = None, sign: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(Σ w_i, Σ w_i μ̃_i, Σ w_i m2_i)`` over the components of each group ``0 … k−1``.

        ``rows`` (and a ``±1`` ``sign`` per row) restricts the sums to those components:
        the change of the sums when they move. Cost ``O(|rows| d²)``.
        """
        if rows is None:  # all components: no gathered copy of the (N, d(d+1)/2) moments
            w, mu, m2 = self.w, self.mu, self.m2
        else:
            w = self.w[rows] if sign is None else self.w[rows] * sign
            mu, m2 = self.mu[rows], self.m2[rows]
        wr = sparse.csr_matrix((w, (labels, np.arange(w.size))), shape=(k, w.size))
        return np.asarray(wr.sum(axis=1)).ravel(), np.asarray(wr @ mu), np.asarray(wr @ m2)

    def from_sums(
        self, mass: np.ndarray, smu: np.ndarray, sm2: np.ndarray, reg_covar: float, covariance_type: CovarianceType
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weights, means (about the shift) and typed covariances from group sums."""
        safe = np.maximum(mass, np.finfo(np.float64).tiny)
        mu = smu / safe[:, None]
        tri = sm2 / safe[:, None]
        m2 = np.empty((mass.shape[0], self.d, self.d))
        m2[:, self.iu, self.ju] = tri
        m2[:, self.ju, self.iu] = tri
        cov = m2 - mu[:, :, None] * mu[:, None, :] + reg_covar * np.eye(self.d)
        return mass / mass.sum(), mu, _typed(cov, mass, covariance_type)

    def moment_match(
        self, resp: np.ndarray, reg_covar: float, covariance_type: CovarianceType
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weights, means (about the shift) and typed covariances of ``Σ_i w_i h_ij φ_i`` per j (soft ``resp``, ``(N, K)``)."""
        wr = resp * self.w[:, None]
        return self.from_sums(wr.sum(axis=0), wr.T @ self.mu, wr.T @ self.m2, reg_covar, covariance_type)

    def kl_costs(self, mu: np.ndarray, cov_full: np.ndarray, single: bool = False) -> np.ndarray:
        """``2·KL(φ_i ‖ ψ_j) + d + log det Σ_i`` for every pair, shape ``(N, K)``.

        ``single``: the ``N × d(d+1)/2 × K`` trace term in float32 (relative error ~1e-6
        of ``tr(P_j M_i)``): enough to pick ``argmin_j`` for the MM's hard assignments, where
        it halves the cost; the moment matching stays in float64.

        ``2 KL = tr(P_j Σ_i) + (μ_i − μ_j)ᵀ P_j (μ_i − μ_j) + log det Σ_j − log det Σ_i − d``
        with ``P_j = Σ_j⁻¹``; expanded as ``tr(P_j (Σ_i + μ_i μ_iᵀ)) − 2 μ_iᵀ P_j μ_j +
        μ_jᵀ P_j μ_j + log det Σ_j``. The terms in ``i`` only are left out (singular ``Σ_i``,
        e.g. a deregularised one-point component, are then fine).
        """
        chol = np.linalg.cholesky(cov_full)
        eye = np.broadcast_to(np.eye(self.d), cov_full.shape)
        inv_chol = np.linalg.solve(chol, eye)  # L_j⁻¹, so P_j = L_j⁻ᵀ L_j⁻¹
        prec = np.einsum("kji,kjl->kil", inv_chol, inv_chol)
        logdet = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        pm = np.einsum("kij,kj->ki", prec, mu)
        tri = (prec[:, self.iu, self.ju] * self.tri_weight).T
        if single:
            costs = (self.m2_single @ tri.astype(np.float32)).astype(np.float64)
        else:
            costs = self.m2 @ tri
        costs -= 2.0 * (self.mu @ pm.T)
        costs += (np.einsum("ki,ki->k", pm, mu) + logdet)[None, :]
        return costs


def _initial_labels(union: _Union, k: int, seed: int) -> np.ndarray:
    """Weighted k-means++ seeds over the union's means; each component joins its nearest seed."""
    _, idx = kmeans_plusplus(union.mu, k, sample_weight=union.w, random_state=seed)
    # One seed at a time: the same sums as over an (N, k, d) difference, without it.
    dist = np.empty((union.n, k))
    for j, i in enumerate(idx):
        dist[:, j] = np.square(union.mu - union.mu[i]).sum(axis=1)
    labels = dist.argmin(axis=1)
    labels[idx] = np.arange(k)  # a seed's own component keeps its group non-empty
    return labels


def _fill_empty(labels: np.ndarray, costs: np.ndarray, union: _Union, k: int) -> np.ndarray:
    """Give every empty group the component that currently costs the most (weighted)."""
    counts = np.bincount(labels, minlength=k)
    if np.all(counts > 0):
        return labels
    labels = labels.copy()
    contrib = union.w * costs[np.arange(labels.shape[0]), labels]
    for j in np.flatnonzero(counts == 0):
        movable = np.bincount(labels, minlength=k)[labels] > 1
        i = int(np.argmax(np.where(movable, contrib, -np.inf)))
        labels[i] = j
        contrib[i] = -np.inf
    return labels


def _run_mm(
    union: _Union, k: int, labels: np.ndarray, reg_covar: float, covariance_type: CovarianceType, max_iter: int,
    tol: float,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], float, int, bool]:
    """Zhang & Chen's MM from ``labels``: assign each component to its least-KL group, moment-match.

    Only what changed is recomputed: the group sums move with the components that changed
    group, and the KL costs are refreshed for the groups whose members changed (all of
    them for a tied covariance, which every group shares).
    """
    sums = union.group_sums(labels, k)
    params = union.from_sums(*sums, reg_covar, covariance_type)
    costs = union.kl_costs(params[1], _as_full(params[2], covariance_type, k, union.d), single=True)
    objective = np.inf
    converged = False
    n_iter = 0
    for it in range(1, max_iter + 1):
        n_iter = it
        new_labels = _fill_empty(costs.argmin(axis=1), costs, union, k)
        new_obj = 0.5 * float(union.w @ costs[np.arange(union.n), new_labels])
        improved, objective = objective - new_obj, new_obj
        moved = np.flatnonzero(new_labels != labels)
        if moved.size == 0:
            converged = True
            break
        delta = union.group_sums(
            np.r_[labels[moved], new_labels[moved]], k, np.r_[moved, moved], np.r_[-np.ones(moved.size), np.ones(moved.size)]
        )
        sums = (sums[0] + delta[0], sums[1] + delta[1], sums[2] + delta[2])
        touched = np.unique(np.r_[labels[moved], new_labels[moved]]) if covariance_type != "tied" else np.arange(k)
        labels = new_labels
        params = union.from_sums(*sums, reg_covar, covariance_type)
        if 0 <= improved <= tol * max(1.0, abs(new_obj)):
            converged = True
            break
        sub = params[2] if covariance_type == "tied" else params[2][touched]
        costs[:, touched] = union.kl_costs(
            params[1][touched], _as_full(sub, covariance_type, touched.size, union.d), single=True
        )
    # The kept parameters from sums computed afresh (no drift from the incremental updates).
    return union.from_sums(*union.group_sums(labels, k), reg_covar, covariance_type), objective, n_iter, converged


def _run_hem(
    union: _Union, k: int, labels: np.ndarray, virtual: np.ndarray, reg_covar: float,
    covariance_type: CovarianceType, max_iter: int, tol: float,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], float, int, bool]:
    """Vasconcelos & Lippman's hierarchical EM from ``labels`` (soft, tempered by the virtual counts)."""
    params = union.from_sums(*union.group_sums(labels, k), reg_covar, covariance_type)
    objective = np.inf
    converged = False
    n_iter = 0
    for it in range(1, max_iter + 1):
        n_iter = it
        weights, mu, cov = params
        costs = union.kl_costs(mu, _as_full(cov, covariance_type, k, union.d))
        # log h_ij = log π_j − N_i·KL(φ_i‖ψ_j) + const_i, N_i virtual samples.
        with np.errstate(divide="ignore"):
            logits = np.log(weights)[None, :] - 0.5 * virtual[:, None] * costs
        mx = logits.max(axis=1, keepdims=True)
        h = np.exp(logits - mx)
        total = h.sum(axis=1, keepdims=True)
        # Per virtual sample: −(1/M) Σ_i log Σ_j π_j exp(−N_i KL_ij).
        new_obj = -float(np.sum(mx[:, 0] + np.log(total[:, 0])) / virtual.sum())
        done = abs(objective - new_obj) <= tol * max(1.0, abs(new_obj))
        params = union.moment_match(h / total, reg_covar, covariance_type)
        objective = new_obj
        if done:
            converged = True
            break
    return params, objective, n_iter, converged


def _restart_threads(n: int, n_tri: int, k: int, n_init: int) -> int:
    """Threads for the restarts: at most :func:`~fedgmm.em.stats.get_num_threads` and
    ``n_init``, one per :data:`~fedgmm.em.stats.MIN_FLOPS_PER_THREAD` of one cost GEMM
    (``N × d(d+1)/2 × K``), so small reductions stay serial."""
    return max(1, min(get_num_threads(), n_init, int(n * n_tri * k // MIN_FLOPS_PER_THREAD)))


def reduce_mixture(
    union: MixtureState,
    n_components: int,
    *,
    covariance_type: CovarianceType | None = None,
    method: ReductionMethod = "mm",
    n_init: int = 5,
    max_iter: int = 100,
    tol: float = 1e-6,
    reg_covar: float = 1e-6,
    local_reg_covar: float | np.ndarray = 0.0,
    virtual_samples: float | np.ndarray | None = None,
    seed: int | np.random.Generator = 0,
) -> ReductionResult:
    """Reduce a mixture of N components to ``n_components`` from its parameters only.

    Deterministic for a given ``seed``; its cost is ``O(n_init · max_iter · N · K · d²)``,
    independent of how many rows the clients hold or claim. The restarts run in up to
    :func:`~fedgmm.em.stats.get_num_threads` Python threads when one cost GEMM is large
    enough (:func:`_restart_threads`); the result does not depend on the thread count.

    Parameters
    ----------
    union : MixtureState
        The size-weighted union of the clients' local models (any covariance type).
    n_components : int
        K of the result. A union of at most K components is returned as it is (its
        covariances only re-typed, de- and re-regularised).
    covariance_type : {"full", "tied", "diag", "spherical"}, optional
        Type of the result; the union's by default (full for a tied union of several clients).
    method : {"mm", "hem"}, default="mm"
        ``"mm"``: minimise the composite transportation divergence
        ``Σ_i w_i min_j KL(φ_i ‖ ψ_j)`` by majorisation-minimisation: assign every union
        component to the reduced component it diverges least from, then moment-match each
        group (its KL barycentre) — Zhang & Chen (JMLR 23, 2022), eqs. (10)–(12).
        ``"hem"``: hierarchical EM (Vasconcelos & Lippman, NIPS 1998) with
        ``N_i = virtual_samples · w_i`` virtual samples per component: soft assignments
        ``h_ij ∝ π_j exp(−N_i KL(φ_i ‖ ψ_j))`` and a moment-matching M-step. With large
        ``N_i`` it approaches ``"mm"``.
    n_init : int, default=5
        Restarts from weighted k-means++ seeds over the union's means; the lowest final
        objective wins.
    max_iter : int, default=100
    tol : float, default=1e-6
        Relative change of the objective that stops a restart (``"mm"`` also stops when no
        assignment changes).
    reg_covar : float, default=1e-6
        Added once to every reduced covariance (the global fit's regularisation).
    local_reg_covar : float or ndarray of shape (N,), default=0.0
        The clients' ``reg_covar`` (or one per union component), taken off the union's covariances first (eigenvalues
        clipped at 0), so the result is regularised once.
    virtual_samples : float or ndarray of shape (N,), optional
        ``"hem"`` only: total virtual samples ``M`` (so ``N_i = M w_i``), or ``N_i`` per
        component. Defaults to ``N``, one virtual point per component on average. Pass the
        clients' total ``Σ n_c`` to give each component as many points as it summarises.
    seed : int or numpy.random.Generator, default=0
        Seeds the k-means++ restarts.

    Returns
    -------
    ReductionResult

    Raises
    ------
    ValueError
        On an unknown method, ``n_components < 1`` or ``n_init < 1``.
    """
    if method not in REDUCTION_METHODS:
        raise ValueError(f"method must be one of {list(REDUCTION_METHODS)}, got {method!r}.")
    if n_components < 1 or n_init < 1 or max_iter < 1:
        raise ValueError(
            f"n_components, n_init and max_iter must be >= 1, got {n_components}, {n_init}, {max_iter}."
        )
    ctype: CovarianceType = covariance_type or (
        "full" if union.covariance_type == "tied" else union.covariance_type
    )
    full = union.covariances if union.covariance_type == "full" else full_covariances(union)
    covs = deregularized_covariances(full, local_reg_covar)
    data = _Union(np.asarray(union.weights), np.asarray(union.means), covs)
    if union.n_components <= n_components:
        weights, mu, cov = data.from_sums(*data.group_sums(np.arange(data.n), data.n), reg_covar, ctype)
        state = MixtureState.from_covariances(weights, mu + data.shift, cov, ctype)
        return ReductionResult(state, 0.0, (0.0,), 0, True)
    if virtual_samples is None:
        virtual = np.full(data.n, 1.0)
    else:
        v = np.asarray(virtual_samples, dtype=np.float64)
        virtual = v * data.w if v.ndim == 0 else v
        if virtual.shape != (data.n,) or np.any(virtual <= 0):
            raise ValueError("virtual_samples must be a positive total or one positive count per component.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    # Every restart's k-means++ seed drawn up front, in order: the restarts are then
    # independent and may run in threads (numpy, BLAS and scipy's sparse products release
    # the GIL); their results are gathered in start order, so nothing depends on timing.
    start_seeds = [int(rng.integers(0, 2**31 - 1)) for _ in range(n_init)]
    if method == "mm":
        data.m2_single  # noqa: B018 - made once here, not raced for by the threads

    def restart(start_seed: int) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], float, int, bool]:
        labels = _initial_labels(data, n_components, start_seed)
        if method == "mm":
            return _run_mm(data, n_components, labels, reg_covar, ctype, max_iter, tol)
        return _run_hem(data, n_components, labels, virtual, reg_covar, ctype, max_iter, tol)

    threads = _restart_threads(data.n, data.iu.size, n_components, n_init)
    if threads > 1:
        # BLAS in one thread under ours: a multi-threaded BLAS inside each restart only
        # oversubscribes the cores (see fedgmm.em.stats._single_threaded_blas).
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(
            threads, thread_name_prefix="fedgmm-reduce"
        ) as pool:
            runs = list(pool.map(restart, start_seeds))
    else:
        runs = [restart(s) for s in start_seeds]
    best: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], float, int, bool] | None = None
    objectives = []
    for run in runs:
        objectives.append(run[1])
        if best is None or run[1] < best[1]:
            best = run
    assert best is not None
    (weights, mu, cov), objective, n_iter, converged = best
    state = MixtureState.from_covariances(weights, mu + data.shift, cov, ctype)
    return ReductionResult(state, objective, tuple(objectives), n_iter, converged)

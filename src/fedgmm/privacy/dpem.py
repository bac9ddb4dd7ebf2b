"""DP-EM (Park et al., 2017): Gaussian noise on the E-step statistics of clipped rows, a noise-aware M-step."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fedgmm._random import SeedLike, as_generator
from fedgmm.em.stats import SufficientStatistics, log_responsibilities
from fedgmm.mixture import MixtureState, check_covariance_type
from fedgmm.privacy.accounting import (
    Accountant,
    BudgetExceededError,
    GaussianRelease,
    PrivacyLedger,
    calibrate_noise,
    epsilon_spent,
)
from fedgmm.privacy.clipping import DEFAULT_CLIP_QUANTILE, Sensitivity, chi_bound, clip_rows
from fedgmm.types import CovarianceType

#: Default residual clipping radius (about each component's mean), in units of ``sqrt(d)``
#: in whitened coordinates.
DEFAULT_RESIDUAL_FACTOR = 0.75
#: Noisy counts are floored at this many rows before dividing by them.
COUNT_FLOOR = 1.0
#: Covariance eigenvalues (variances) are floored at this fraction of the prior variance.
EIGEN_FLOOR = 1e-2


@dataclass(frozen=True)
class BudgetSplit:
    """Relative noise multipliers of the released statistics (a larger value spends less budget).

    Each statistic ``s`` gets noise multiplier ``scale · ratio_s`` where ``scale`` is calibrated
    so that everything released composes to the target (ε, δ). Under zCDP a release with
    multiplier ``z`` costs ``1 / (2 z²)``, so the share of the budget statistic ``s`` gets is
    ``∝ count_s / ratio_s²``.

    Attributes
    ----------
    count : float
        ``N_k`` per iteration.
    first : float
        ``Σ r x`` per iteration.
    second : float
        Per-component second moments per iteration (not released for ``tied``).
    scatter : float
        The responsibility-free scatter ``Σ x xᵀ``, released once: the tied covariance, and
        the prior scale every covariance is shrunk toward.
    """

    count: float = 1.0
    first: float = 1.0
    second: float = 1.0
    scatter: float = 1.0

    def __post_init__(self) -> None:
        for name in ("count", "first", "second", "scatter"):
            if not getattr(self, name) > 0:
                raise ValueError(f"BudgetSplit.{name} must be positive, got {getattr(self, name)}.")


#: Default budget split: counts are cheap to protect (sensitivity 1 against N_k in the
#: hundreds), so they get 3× the noise multiplier; the second moments, which set the
#: covariances, get the most budget.
DEFAULT_SPLIT = BudgetSplit(count=3.0, first=1.0, second=0.8, scatter=1.0)


@dataclass(frozen=True)
class NoiseScales:
    """Standard deviations of the Gaussian noise added to each statistic (``σ = z · Δ``)."""

    count: float
    first: float
    second: float
    scatter: float


def releases_of(n_iter: int, covariance_type: CovarianceType, split: BudgetSplit, scale: float) -> list[GaussianRelease]:
    """The Gaussian releases of :func:`fit_dp_local`, with noise multipliers ``scale · ratio``.

    Once: ``n`` (ratio ``count``), ``Σ x`` (``first``) and ``Σ x xᵀ`` (``scatter``); then per
    iteration ``N_k`` (``count``), ``Σ r ρ`` (``first``) and the second moments (``second``).
    """
    return [
        GaussianRelease(scale * split.count, 1 + n_iter),
        GaussianRelease(scale * split.first, 1 + n_iter),
        GaussianRelease(scale * split.scatter, 1),
        *([GaussianRelease(scale * split.second, n_iter)] if n_iter else []),
    ]


def noise_scales(sens: Sensitivity, split: BudgetSplit, scale: float) -> NoiseScales:
    """σ per statistic for a calibrated ``scale``."""
    return NoiseScales(
        count=scale * split.count * sens.count,
        first=scale * split.first * sens.first,
        second=scale * split.second * sens.second,
        scatter=scale * split.scatter * sens.second,
    )


def _symmetric_noise(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Noise on the upper triangle (diagonal included) of ``(..., d, d)`` matrices, mirrored."""
    z = rng.normal(0.0, sigma, size=shape)
    upper = np.triu(z)
    return upper + np.swapaxes(np.triu(z, 1), -1, -2)


def add_noise(
    stats: SufficientStatistics, noise: NoiseScales, rng: np.random.Generator, *, second: bool = True
) -> SufficientStatistics:
    """Gaussian mechanism on ``(N_k, Σ r x, second moments)`` of one E-step.

    Parameters
    ----------
    stats : SufficientStatistics
        Statistics of clipped rows about a data-independent shift (0).
    noise : NoiseScales
    rng : numpy.random.Generator
    second : bool
        Noise the second moments too (with ``noise.second``; ``noise.scatter`` for tied).
        ``False`` leaves them as they are — only for a tied ``sxx`` already released.

    Returns
    -------
    SufficientStatistics
        Noisy statistics; ``log_likelihood`` is 0 and ``n_samples`` the rounded noisy total
        count (neither leaks the true value).
    """
    nk = stats.nk + rng.normal(0.0, noise.count, size=stats.nk.shape)
    sx = stats.sx + rng.normal(0.0, noise.first, size=stats.sx.shape)
    sxx = stats.sxx
    if second:
        sigma = noise.scatter if stats.covariance_type == "tied" else noise.second
        if stats.covariance_type in ("full", "tied"):
            sxx = sxx + _symmetric_noise(sxx.shape, sigma, rng)
        else:
            sxx = sxx + rng.normal(0.0, sigma, size=sxx.shape)
    return SufficientStatistics(
        nk=nk,
        sx=sx,
        sxx=sxx,
        n_samples=max(0, round(float(nk.sum()))),
        log_likelihood=0.0,
        shift=stats.shift,
        covariance_type=stats.covariance_type,
    )


@dataclass(frozen=True)
class Prior:
    """A conjugate-style prior that keeps noisy components sane (all data-independent or DP).

    ``μ_k = (S_k + κ m) / (N_k + κ)`` and ``Σ_k = (C_k + ν Ψ) / (N_k + ν)`` with ``C_k`` the
    component's centred scatter, then symmetrised and eigenvalue-floored at ``floor · mean(diag Ψ)``.

    Attributes
    ----------
    scale : ndarray of shape (d, d) or (K, d, d)
        Ψ: the covariance a component shrinks toward (one per component, or one for all;
        tied uses their mean, and the mean ν).
    mean_strength : float
        κ (pseudo-rows pulling means toward ``mean``).
    cov_strength : float or ndarray of shape (K,)
        ν (pseudo-rows pulling covariances toward Ψ; one per component, or one for all).
    mean : ndarray of shape (d,)
        m (0 for centred data).
    floor : float
        Eigenvalue floor as a fraction of Ψ's mean variance.
    count_floor : float
        Noisy ``N_k`` are floored here.
    """

    scale: np.ndarray
    mean_strength: float = 1.0
    cov_strength: float | np.ndarray = 10.0
    mean: np.ndarray | None = None
    floor: float = EIGEN_FLOOR
    count_floor: float = COUNT_FLOOR


def _psd_floor(cov: np.ndarray, floor: float) -> np.ndarray:
    """Symmetrise ``(..., d, d)`` and raise every eigenvalue to at least ``floor``."""
    cov = 0.5 * (cov + np.swapaxes(cov, -1, -2))
    w, v = np.linalg.eigh(cov)
    w = np.maximum(w, floor)
    out = (v * w[..., None, :]) @ np.swapaxes(v, -1, -2)
    return 0.5 * (out + np.swapaxes(out, -1, -2))


def noise_aware_m_step(stats: SufficientStatistics, prior: Prior, *, reg_covar: float = 0.0) -> MixtureState:
    """M-step on noisy statistics that always returns a valid mixture.

    Counts floored at ``prior.count_floor``; weights renormalised; means and covariances the
    MAP-style shrinkage of :class:`Prior`; covariances symmetric with eigenvalues at least
    ``prior.floor · mean(diag Ψ)`` (then ``+ reg_covar``).

    Parameters
    ----------
    stats : SufficientStatistics
        Noisy (or exact) statistics about ``stats.shift``.
    prior : Prior
    reg_covar : float
        Added to every variance after the projection.

    Returns
    -------
    MixtureState
    """
    d = stats.n_features
    ctype = stats.covariance_type
    k = stats.n_components
    psi = np.broadcast_to(np.asarray(prior.scale, dtype=np.float64), (k, d, d))
    m = np.zeros(d) if prior.mean is None else np.asarray(prior.mean, dtype=np.float64) - stats.shift
    floor = prior.floor * float(np.mean(np.einsum("kii->ki", psi))) + reg_covar
    nk = np.maximum(np.nan_to_num(stats.nk, nan=0.0), prior.count_floor)
    kappa = prior.mean_strength
    nu = np.broadcast_to(np.asarray(prior.cov_strength, dtype=np.float64), (k,))
    mu = (stats.sx + kappa * m) / (nk + kappa)[:, None]
    if ctype == "full":
        scatter = stats.sxx - nk[:, None, None] * mu[:, :, None] * mu[:, None, :]
        cov = (scatter + nu[:, None, None] * psi) / (nk + nu)[:, None, None]
        cov = _psd_floor(cov, floor) + reg_covar * np.eye(d)
    elif ctype == "tied":
        scatter = stats.sxx - (nk[:, None] * mu).T @ mu
        cov = _psd_floor((scatter + nu.mean() * psi.mean(axis=0)) / (nk.sum() + nu.mean()), floor)
        cov = cov + reg_covar * np.eye(d)
    elif ctype == "diag":
        scatter = stats.sxx - nk[:, None] * mu**2
        cov = np.maximum((scatter + nu[:, None] * np.einsum("kii->ki", psi)) / (nk + nu)[:, None], floor) + reg_covar
    else:
        scatter = stats.sxx - nk * np.sum(mu**2, axis=1)
        cov = np.maximum((scatter + nu * np.einsum("kii->k", psi)) / ((nk + nu) * d), floor) + reg_covar
    weights = nk / nk.sum()
    return MixtureState.from_covariances(weights, mu + stats.shift, cov, ctype)


def prior_initial_state(
    n_components: int,
    n_features: int,
    covariance_type: CovarianceType,
    bound: float,
    rng: np.random.Generator,
    *,
    spread: float = 1.0,
) -> MixtureState:
    """A data-independent start: means ``~ N(0, spread²·B²/d · I)`` clipped into the ball of radius B,
    equal weights, covariances ``B²/d · I`` (the variance of a row filling the ball)."""
    var = bound**2 / n_features
    means, _ = clip_rows(rng.normal(0.0, spread * np.sqrt(var), size=(n_components, n_features)), bound)
    cov = {
        "full": np.broadcast_to(var * np.eye(n_features), (n_components, n_features, n_features)).copy(),
        "tied": var * np.eye(n_features),
        "diag": np.full((n_components, n_features), var),
        "spherical": np.full(n_components, var),
    }[covariance_type]
    return MixtureState.from_covariances(np.full(n_components, 1.0 / n_components), means, cov, covariance_type)


@dataclass(frozen=True)
class DPFitResult:
    """A DP-EM local fit.

    Attributes
    ----------
    state : MixtureState
        The released mixture, in the caller's coordinates.
    epsilon, delta : float
        What the accountant says the whole release spent (never above the target).
    n_iter : int
    noise : NoiseScales
        σ of each statistic, in the whitened, clipped coordinates.
    bound : float
        Clipping radius B in those coordinates.
    n_clipped : int
        Rows that were shortened (not released; for the client's own log).
    noisy_count : float
        DP estimate of the client's row count (``Σ_k N_k`` of the last noisy release); send
        this, not the true count, as the client's weight in the union.
    """

    state: MixtureState
    epsilon: float
    delta: float
    n_iter: int
    noise: NoiseScales
    bound: float
    n_clipped: int
    noisy_count: float


def _affine_state(state: MixtureState, scale: np.ndarray) -> MixtureState:
    """The mixture of ``x ↦ x · scale`` (per-feature scaling)."""
    ctype = state.covariance_type
    cov = state.covariances
    if ctype in ("full", "tied"):
        cov = cov * np.outer(scale, scale)
    elif ctype == "diag":
        cov = cov * scale**2
    elif not np.allclose(scale, scale[0]):
        raise ValueError("spherical covariances need one common feature scale.")
    else:
        cov = cov * scale[0] ** 2
    return MixtureState.from_covariances(state.weights, state.means * scale, cov, ctype)


def centred_statistics(
    X: np.ndarray, state: MixtureState, residual_bound: float, *, second_bound: float | None = None,
    covariance_type: CovarianceType | None = None,
) -> SufficientStatistics:
    """E-step statistics about each component's own current mean, residuals clipped per component.

    With responsibilities ``r_nk`` from the engine (:func:`fedgmm.em.log_responsibilities`)
    and ``ρ_nk = clip(x_n − μ_k, residual_bound)``: ``N_k = Σ r_nk``, ``S_k = Σ r_nk ρ_nk``
    and second moments ``Σ r_nk ρ'_nk ρ'_nkᵀ`` with ``ρ' = clip(x_n − μ_k, second_bound)``
    (default ``residual_bound``), reduced per covariance type (tied sums over k).
    The means ``μ_k`` are public (the previous noisy release), so one row moves ``S`` by at
    most ``B_r`` and the second moments by at most ``B_2²`` (``‖r‖₂ ≤ 1``) — a residual bound
    well inside the row bound divides the second-moment noise by ``(B / B_2)²``. The engine's
    statistics share one shift for all components, hence this per-component variant.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    state : MixtureState
        The public current model (responsibilities and centres).
    residual_bound : float
        B_r, for the first moments.
    second_bound : float, optional
        B_2, for the second moments.
    covariance_type : {"full", "tied", "diag", "spherical"}, optional
        Shape of the second moments (default the state's).

    Returns
    -------
    SufficientStatistics
        About shift 0, with ``sx`` and ``sxx`` the *residual* sums (add ``μ_k`` back after the M-step).
    """
    log_resp, _ = log_responsibilities(X, state)
    r = np.exp(log_resp)
    raw = X[:, None, :] - state.means[None, :, :]
    norms = np.linalg.norm(raw, axis=2)
    res = raw * np.minimum(1.0, residual_bound / np.maximum(norms, 1e-300))[:, :, None]
    b2 = residual_bound if second_bound is None else second_bound
    res2 = raw * np.minimum(1.0, b2 / np.maximum(norms, 1e-300))[:, :, None]
    nk = r.sum(axis=0)
    sx = np.einsum("nk,nkd->kd", r, res)
    ctype = state.covariance_type if covariance_type is None else covariance_type
    if ctype == "full":
        sxx = np.einsum("nk,nkd,nke->kde", r, res2, res2)
    elif ctype == "tied":
        sxx = np.einsum("nk,nkd,nke->de", r, res2, res2)
    elif ctype == "diag":
        sxx = np.einsum("nk,nkd->kd", r, res2**2)
    else:
        sxx = np.einsum("nk,nk->k", r, norms_clipped_sq(norms, b2))
    return SufficientStatistics(nk, sx, sxx, X.shape[0], 0.0, np.zeros(X.shape[1]), ctype)


def norms_clipped_sq(norms: np.ndarray, bound: float) -> np.ndarray:
    """``min(‖ρ‖, B)²`` elementwise."""
    return np.minimum(norms, bound) ** 2


@dataclass(frozen=True)
class LocalBudget:
    """How one local DP-EM fit spends its budget, as shares of a zCDP-style total.

    A Gaussian release with noise multiplier ``z`` costs ``1 / (2 z²)`` in zCDP, so a release
    given share ``w`` gets multiplier ``∝ 1 / sqrt(w)``; one common scale is then calibrated by
    ``dp-accounting`` (PLD) so that the whole composition meets the target (ε, δ).
    Only the shares' ratios matter.

    Attributes
    ----------
    count : float
        ``N_k``, per iteration (sensitivity 1 against ``N_k`` in the hundreds: cheap).
    early : float
        ``Σ r ρ`` of each steering iteration (all but the last).
    early_second : float
        The per-component spherical second moment ``Σ r ‖ρ‖²`` of each steering iteration
        (K numbers: cheap for the accuracy they buy).
    final_first : float
        ``Σ r ρ`` of the last iteration (the released means).
    final_second : float
        The second moments of the last iteration (the released covariances: most budget).
    """

    count: float = 0.005
    early: float = 0.03
    early_second: float = 0.01
    final_first: float = 0.15
    final_second: float = 0.8

    def __post_init__(self) -> None:
        for name in ("count", "early", "early_second", "final_first", "final_second"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LocalBudget.{name} must be positive, got {getattr(self, name)}.")


#: Default allocation of a local fit's budget: 80 % (in zCDP terms) to the final second
#: moments. Measured on issue 10's regime at ε = 8 (FedGenGMM, local K = 4, 3 iterations, ν = 5,
#: a random N(0, I) start — the axis start came after): 10.97 nats/sample from centralized
#: against 11.91 with 60 % to them.
DEFAULT_LOCAL_BUDGET = LocalBudget()
#: Default DP-EM iterations of a local fit, two spherical steering ones and the final one
#: (each one is paid for; no data-dependent stop). Measured at ε = 8: 3 → 12.95, 6 → 13.41 nats
#: (random start, noise-calibrated ν); with the final defaults 3 → 10.51, 6 → 10.97
#: (a scratch study of the same local fits with its own union + refit, not in the repo);
#: without noise 10 iterations would gain ~0.7.
DEFAULT_DP_ITERATIONS = 3
#: Default ν of the conjugate prior (pseudo-rows of Ψ = I). Measured at ε = 8 (random start): ν = 1 → 10.91,
#: 5 → 11.91, 20 → 11.82 and the noise-calibrated ``σ₂ sqrt(d)`` (≈ 90) → 12.95 nats: a strong
#: prior toward the whitened identity blurs the thin clusters more than the noise does.
DEFAULT_COV_STRENGTH = 1.0
#: Default residual clipping radii, as fractions of the row bound B: first moments, second moments.
#: A tighter second-moment radius cuts its noise by (B / B_2)² but the clipped residuals shrink
#: the covariances: 0.35 · B lost 6.3 nats/sample more than 1.0 · B without noise (scratch study).
#: Measured on issue 10's regime (FedGenGMM, ``benchmarks/privacy_dpem.py``-style, seeds 0 and 1,
#: gap to centralized in nats/sample): at ε = 8 with local K = 4, B_2 = 1.0 · B → 10.79,
#: 0.7 → 10.19, 0.55 → 10.13, 0.45 → 9.83; with local K = 8, 1.0 → 10.81 and 0.7 → 9.12
#: (K = 12: 9.08, K = 16: 9.41); without noise, K = 8 and 0.7 → 6.85 against 7.39 for K = 4 and
#: 1.0. The halved second-moment noise is what makes more local components affordable.
DEFAULT_FIRST_FRACTION = 1.0
DEFAULT_SECOND_FRACTION = 0.7


def local_releases(n_iter: int, budget: LocalBudget, scale: float) -> list[GaussianRelease]:
    """The Gaussian releases of :func:`fit_dp_local` with noise multipliers ``scale / sqrt(share)``:
    ``N_k`` every iteration; ``Σ r ρ`` and a spherical ``Σ r ‖ρ‖²`` per steering iteration;
    ``Σ r ρ`` and the second moments once in the last."""
    def z(share: float) -> float:
        return scale / math.sqrt(share)

    out = [GaussianRelease(z(budget.count), n_iter), GaussianRelease(z(budget.final_first), 1),
           GaussianRelease(z(budget.final_second), 1)]
    if n_iter > 1:
        out += [GaussianRelease(z(budget.early), n_iter - 1), GaussianRelease(z(budget.early_second), n_iter - 1)]
    return out


def local_noise_scale(
    epsilon: float, delta: float, n_iter: int = DEFAULT_DP_ITERATIONS, budget: LocalBudget | None = None,
    accountant: Accountant = "pld",
) -> float:
    """The common noise scale of :func:`fit_dp_local`'s releases (:func:`local_releases`) for ``(ε, δ)``.

    Calibrated by ``dp-accounting`` (cached): public, so a server can recompute it.
    """
    shape = local_releases(n_iter, budget or DEFAULT_LOCAL_BUDGET, 1.0)
    return calibrate_noise(
        epsilon, delta, ratios=tuple(r.noise_multiplier for r in shape),
        counts=tuple(r.count for r in shape), accountant=accountant,
    )


def noisy_count_noise(
    epsilon: float, delta: float, n_components: int, *, n_iter: int = DEFAULT_DP_ITERATIONS,
    budget: LocalBudget | None = None, accountant: Accountant = "pld",
) -> float:
    """σ of the noise on :attr:`DPFitResult.noisy_count` of a fit with ``n_components`` components.

    ``noisy_count = Σ_k N_k`` of the last release, each ``N_k`` with independent Gaussian noise
    of σ ``scale / sqrt(budget.count)`` (sensitivity 1), so the sum's σ is ``sqrt(K)`` times
    that. Computed from public constants only (ε, δ, K, iterations, the budget shares): what a
    server needs to tell honest count noise from a false claim, without trusting a client's σ.
    """
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}.")
    budget = budget or DEFAULT_LOCAL_BUDGET
    scale = local_noise_scale(epsilon, delta, n_iter, budget, accountant)
    return math.sqrt(n_components) * scale / math.sqrt(budget.count)


def public_start(
    n_components: int, n_features: int, covariance_type: CovarianceType, variance: float, *, spread: float = 1.0,
) -> MixtureState:
    """A data-independent start in whitened PCA coordinates: means on the leading axes.

    Component ``j`` sits at ``± spread · e_{⌊j/2⌋}`` (the sign alternating, a further ring of
    radius ``2 · spread`` once the ``2d`` axis points are used): the leading principal axes
    carry most of the between-cluster spread, and the start is the same for every client and
    costs no budget. Equal weights, covariances ``variance · I``.
    """
    means = np.zeros((n_components, n_features))
    for j in range(n_components):
        ring, slot = divmod(j, 2 * n_features)
        means[j, slot // 2] = (1.0 if slot % 2 == 0 else -1.0) * spread * (1 + ring)
    return MixtureState.from_covariances(
        np.full(n_components, 1.0 / n_components), means,
        _isotropic(n_components, n_features, covariance_type, variance), covariance_type,
    )


def _isotropic(k: int, d: int, covariance_type: CovarianceType, variance: float) -> np.ndarray:
    return {
        "full": lambda: np.broadcast_to(variance * np.eye(d), (k, d, d)).copy(),
        "tied": lambda: variance * np.eye(d),
        "diag": lambda: np.full((k, d), variance),
        "spherical": lambda: np.full(k, variance),
    }[covariance_type]()


def project_to_ball(means: np.ndarray, cov: np.ndarray, covariance_type: CovarianceType, bound: float) -> tuple[np.ndarray, np.ndarray]:
    """Project released parameters onto what rows clipped to radius ``bound`` can produce.

    A mean of rows in the ball lies in the ball, and their variance along any direction is at
    most ``bound²``: means are clipped to norm ``bound``, covariance eigenvalues (variances)
    capped at ``bound²``. Post-processing of released values (no budget); it stops a
    component whose noisy count is near zero from carrying a mean far outside the data.

    Parameters
    ----------
    means : ndarray of shape (K, d)
    cov : ndarray
        Shape by ``covariance_type``.
    covariance_type : {"full", "tied", "diag", "spherical"}
    bound : float

    Returns
    -------
    means, cov
    """
    means, _ = clip_rows(means, bound)
    cap = bound**2
    if covariance_type in ("full", "tied"):
        w, v = np.linalg.eigh(0.5 * (cov + np.swapaxes(cov, -1, -2)))
        cov = (v * np.minimum(w, cap)[..., None, :]) @ np.swapaxes(v, -1, -2)
        cov = 0.5 * (cov + np.swapaxes(cov, -1, -2))
    else:
        cov = np.minimum(cov, cap)
    return means, cov


#: A component whose noisy count is below this many noise standard deviations of the count
#: carries no usable statistics (:func:`reseed_weak_components`).
WEAK_COUNT_SIGMAS = 2.0
#: A re-seeded pair sits at ``μ ± sqrt(SPLIT_SHARE · λ) v`` along the split component's
#: principal axis ``(λ, v)``; its variance along ``v`` drops to ``(1 − SPLIT_SHARE) λ`` (for
#: full and diag the pair keeps the component's first two moments).
SPLIT_SHARE = 0.5


def weak_threshold(count_noise: float, sigmas: float | None = None) -> float:
    """``max(1, sigmas · count_noise)``: below it a noisy ``N_k`` cannot be told from an empty component's.

    ``count_noise`` is the public σ of the noise on each (summed) ``N_k``; ``sigmas``
    defaults to :data:`WEAK_COUNT_SIGMAS`. A component under the threshold has statistics
    that are mostly noise.
    """
    return max(COUNT_FLOOR, (WEAK_COUNT_SIGMAS if sigmas is None else sigmas) * float(count_noise))


def _principal_axis(cov: np.ndarray, covariance_type: CovarianceType, k: int, d: int) -> tuple[float, np.ndarray]:
    """Largest variance ``λ`` of component ``k`` and its direction (spherical: the leading axis ``e_0``)."""
    if covariance_type in ("full", "tied"):
        w, v = np.linalg.eigh(cov[k] if covariance_type == "full" else cov)
        return float(w[-1]), v[:, -1]
    if covariance_type == "diag":
        j = int(np.argmax(cov[k]))
        return float(cov[k, j]), np.eye(d)[j]
    return float(cov[k]), np.eye(d)[0]


def reseed_weak_components(
    weights: np.ndarray,
    means: np.ndarray,
    cov: np.ndarray,
    counts: np.ndarray,
    covariance_type: CovarianceType,
    threshold: float,
    donor_count: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Re-seed components whose noisy count is below ``threshold`` by splitting the heaviest one.

    Under noise, a component that lost its rows cannot win them back: its weight sits at
    the count floor and its mean and covariance are noise. Each weak component (weakest
    first) instead takes half of the currently heaviest component whose count is at least
    ``donor_count`` (never less than ``2 · threshold``: both halves above it). The pair sits at
    ``μ ± sqrt(SPLIT_SHARE · λ) v`` along that component's principal axis ``(λ, v)``
    (:func:`_principal_axis`) with the variance along ``v`` reduced to ``(1 − SPLIT_SHARE) λ``
    (full, diag) or the total variance kept (spherical); tied covariances stay as they are.
    Post-processing of released values: no budget, no rows.

    Parameters
    ----------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, d)
    cov : ndarray
        Shape by ``covariance_type``.
    counts : ndarray of shape (K,)
        The noisy counts the weights came from.
    covariance_type : {"full", "tied", "diag", "spherical"}
    threshold : float
        Counts below it are weak (:func:`weak_threshold` gives the usual one).
    donor_count : float, optional
        Fewest (noisy) rows a component needs to be split (at least ``2 · threshold``).

    Returns
    -------
    weights, means, cov, reseeded
        New arrays (weights summing to 1) and the indices that were re-seeded.
    """
    weights = np.array(weights, dtype=np.float64)
    means = np.array(means, dtype=np.float64)
    cov = np.array(cov, dtype=np.float64)
    counts = np.nan_to_num(np.array(counts, dtype=np.float64), nan=-np.inf)
    k_all, d = means.shape
    weak = [int(k) for k in np.flatnonzero(counts < threshold)]
    weak.sort(key=lambda k: counts[k])
    least = max(2.0 * threshold, 0.0 if donor_count is None else float(donor_count))
    reseeded: list[int] = []
    for k in weak:
        donors = [j for j in range(k_all) if j != k and j not in weak[len(reseeded):] and counts[j] >= least]
        if not donors:
            break
        h = max(donors, key=lambda j: counts[j])
        lam, v = _principal_axis(cov, covariance_type, h, d)
        step = math.sqrt(SPLIT_SHARE * max(lam, 0.0)) * v
        means[k], means[h] = means[h] + step, means[h] - step
        if covariance_type == "full":
            cov[h] = cov[h] - SPLIT_SHARE * lam * np.outer(v, v)
            cov[k] = cov[h]
        elif covariance_type == "diag":
            cov[h] = cov[h] - SPLIT_SHARE * lam * v**2
            cov[k] = cov[h]
        elif covariance_type == "spherical":
            cov[h] = cov[h] * (1.0 - SPLIT_SHARE / d)
            cov[k] = cov[h]
        weights[h] = weights[k] = 0.5 * weights[h]
        counts[h] = counts[k] = 0.5 * counts[h]
        reseeded.append(k)
    return weights / weights.sum(), means, cov, reseeded


def _convert_covariances(cov: np.ndarray, source: CovarianceType, target: CovarianceType, k: int, d: int) -> np.ndarray:
    """Covariances of type ``source`` as ``target`` (exact for a coarser source; else an average)."""
    if source == target:
        return cov
    full = {
        "full": lambda: cov,
        "tied": lambda: np.broadcast_to(cov, (k, d, d)).copy(),
        "diag": lambda: cov[:, :, None] * np.eye(d),
        "spherical": lambda: cov[:, None, None] * np.eye(d),
    }[source]()
    return {
        "full": lambda: full,
        "tied": lambda: full.mean(axis=0),
        "diag": lambda: np.diagonal(full, axis1=1, axis2=2).copy(),
        "spherical": lambda: np.trace(full, axis1=1, axis2=2) / d,
    }[target]()


def fit_dp_local(
    X: np.ndarray,
    *,
    n_components: int,
    epsilon: float,
    delta: float,
    covariance_type: CovarianceType = "full",
    noise_covariance_type: CovarianceType | None = None,
    max_iter: int = DEFAULT_DP_ITERATIONS,
    feature_scale: np.ndarray | None = None,
    clip_quantile: float = DEFAULT_CLIP_QUANTILE,
    first_fraction: float = DEFAULT_FIRST_FRACTION,
    second_fraction: float = DEFAULT_SECOND_FRACTION,
    bound: float | None = None,
    budget: LocalBudget | None = None,
    prior_variance: float = 1.0,
    mean_strength: float = 1.0,
    cov_strength: float = DEFAULT_COV_STRENGTH,
    init_spread: float = 1.0,
    reg_covar: float = 0.0,
    accountant: Accountant = "pld",
    noise: bool = True,
    random_state: SeedLike = None,
) -> DPFitResult:
    """(ε, δ)-DP EM fit of one client's rows (record level, add/remove one row).

    1. Rows are divided by the public ``feature_scale`` (whitening: unit variance per axis)
       and clipped to the data-independent radius ``B`` (:func:`chi_bound`: the
       ``clip_quantile`` quantile of ``‖x‖`` for a standard normal row in ``d`` dimensions),
       or to an explicit public ``bound``. Residuals about each component's public mean are
       clipped to ``B_1 = first_fraction · B`` (first moments) and ``B_2 = second_fraction · B``
       (second moments): the second moments' sensitivity is ``B_2²``.
    2. A data-independent start (:func:`public_start`): K means at ``± init_spread`` on the
       leading principal axes, spherical covariances ``prior_variance`` — nothing is spent on
       initialisation.
    3. ``max_iter − 1`` steering iterations of spherical EM: responsibilities under the current
       released model, noisy ``N_k``, ``Σ r ρ`` and ``Σ r ‖ρ‖²`` (K numbers), the noise-aware
       M-step. Then one final iteration: responsibilities under the steered model, noisy
       ``N_k``, ``Σ r ρ`` and second moments of ``covariance_type`` (most of the budget),
       :func:`noise_aware_m_step` with the conjugate :class:`Prior` ``Ψ = prior_variance · I``
       (the whitened geometry); every M-step's output is projected onto what rows in the ball
       can produce (:func:`project_to_ball`).
    4. One noise scale is calibrated by ``dp-accounting`` for the whole composition
       (:func:`local_releases`, shares from ``budget``); the spent ε is the accountant's.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The client's rows, in the federation's preprocessed coordinates (centred).
    n_components : int
        K of the local model (small: every component pays noise on its statistics).
    epsilon, delta : float
        The client's budget for this release.
    covariance_type : {"full", "tied", "diag", "spherical"}
        Of the released model.
    noise_covariance_type : {"full", "tied", "diag", "spherical"}, optional
        Shape of the noised second moments (default ``covariance_type``); a coarser one (e.g.
        ``"tied"``: one ``d × d`` matrix from all rows instead of K) is released as
        ``covariance_type`` by broadcasting (post-processing).
    max_iter : int
        EM iterations, >= 1 (each one is paid for; no early stop, as that would depend on the data).
    feature_scale : ndarray of shape (d,), optional
        Public per-feature standard deviations (from the preprocessing transform); default 1.
    clip_quantile : float
        B as a quantile of the chi distribution with d degrees of freedom.
    first_fraction, second_fraction : float
        B_1 and B_2 as fractions of B, in (0, 1].
    bound : float, optional
        An explicit public B in whitened coordinates (overrides ``clip_quantile``).
    budget : LocalBudget, optional
        Shares of the budget (default :data:`DEFAULT_LOCAL_BUDGET`).
    prior_variance : float
        Ψ = prior_variance · I, the covariance every component shrinks toward (whitened).
    mean_strength : float
        κ of the :class:`Prior`.
    cov_strength : float
        ν of the :class:`Prior` (pseudo-rows of Ψ; :data:`DEFAULT_COV_STRENGTH`). Negative
        eigenvalues the noise leaves are then floored (:func:`noise_aware_m_step`).
    init_spread : float
        Distance of the data-independent start's means from the origin (whitened units).
    reg_covar : float
        Added to the variances of the released model (whitened coordinates).
    accountant : {"pld", "rdp"}
    noise : bool
        False releases the exact clipped statistics — **not private**, only for measuring
        what clipping and the start cost alone (the result reports ε = inf).
    random_state : int, Generator or None
        Seeds the start and the noise.

    Returns
    -------
    DPFitResult
    """
    check_covariance_type(covariance_type)
    if n_components < 1 or max_iter < 1:
        raise ValueError(f"n_components and max_iter must be >= 1, got {n_components} and {max_iter}.")
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1:
        raise ValueError(f"X must be a non-empty 2-D array, got shape {X.shape}.")
    d = X.shape[1]
    scale_vec = np.ones(d) if feature_scale is None else np.asarray(feature_scale, dtype=np.float64)
    if scale_vec.shape != (d,) or np.any(scale_vec <= 0) or not np.all(np.isfinite(scale_vec)):
        raise ValueError(f"feature_scale must be {d} positive finite numbers.")
    if covariance_type == "spherical" and not np.allclose(scale_vec, scale_vec[0]):
        raise ValueError("spherical local models need one common feature scale; use 'diag'.")
    if not prior_variance > 0:
        raise ValueError(f"prior_variance must be positive, got {prior_variance}.")
    for name, frac in (("first_fraction", first_fraction), ("second_fraction", second_fraction)):
        if not 0.0 < frac <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {frac}.")
    rng = as_generator(random_state)
    budget = budget or DEFAULT_LOCAL_BUDGET
    B = float(bound) if bound is not None else chi_bound(d, clip_quantile)
    B_1, B_2 = first_fraction * B, second_fraction * B
    Xc, n_clipped = clip_rows(X / scale_vec, B)

    if noise:
        scale = local_noise_scale(epsilon, delta, max_iter, budget, accountant)
        spent = epsilon_spent(local_releases(max_iter, budget, scale), delta, accountant=accountant)
        if spent > epsilon:  # pragma: no cover - calibrate_noise guarantees it
            raise BudgetExceededError(f"calibrated releases spend epsilon = {spent} > {epsilon}.")
    else:
        scale, spent = 0.0, math.inf

    def sigmas(share_first: float, share_second: float) -> NoiseScales:
        z2 = scale / math.sqrt(share_second)
        return NoiseScales(
            count=scale / math.sqrt(budget.count), first=scale / math.sqrt(share_first) * B_1,
            second=z2 * B_2**2, scatter=z2 * B_2**2,
        )

    final, steer = sigmas(budget.final_first, budget.final_second), sigmas(budget.early, budget.early_second)
    if not cov_strength >= 0:
        raise ValueError(f"cov_strength must be >= 0, got {cov_strength}.")
    prior = Prior(scale=prior_variance * np.eye(d), mean_strength=mean_strength, cov_strength=cov_strength)
    state = public_start(n_components, d, "spherical", prior_variance, spread=init_spread)
    for _ in range(max_iter - 1):
        stats = centred_statistics(Xc, state, B_1, second_bound=B_2)
        noisy = add_noise(stats, steer, rng) if noise else stats
        step = noise_aware_m_step(noisy, prior)
        means, covs = project_to_ball(step.means + state.means, step.covariances, "spherical", B)
        state = MixtureState.from_covariances(step.weights, means, covs, "spherical")
    ntype = covariance_type if noise_covariance_type is None else noise_covariance_type
    check_covariance_type(ntype)
    stats = centred_statistics(Xc, state, B_1, second_bound=B_2, covariance_type=ntype)
    noisy = add_noise(stats, final, rng) if noise else stats
    noisy_count = max(float(np.sum(noisy.nk)), 1.0)
    step = noise_aware_m_step(noisy, prior)
    covs = _convert_covariances(step.covariances, ntype, covariance_type, n_components, d)
    means, covs = project_to_ball(step.means + state.means, covs, covariance_type, B)
    if reg_covar:
        covs = covs + (reg_covar * np.eye(d) if covariance_type in ("full", "tied") else reg_covar)
    state = MixtureState.from_covariances(step.weights, means, covs, covariance_type)
    out = _affine_state(state, scale_vec) if feature_scale is not None else state
    return DPFitResult(out, spent, delta, max_iter, final, B, n_clipped, noisy_count)


@dataclass
class RoundPrivacy:
    """Local DP for federated EM: one client's per-round noisy statistics and their composition.

    The per-round noise multiplier is calibrated so that ``max_rounds`` releases of
    ``(N_k, Σ r x, second moments)`` compose to ``(epsilon, delta)``; the round limit is part
    of the budget, and a release past it raises :class:`BudgetExceededError`.

    Parameters
    ----------
    epsilon, delta : float
    max_rounds : int
    covariance_type : {"full", "tied", "diag", "spherical"}
    bound : float
        Clipping radius B (rows must be clipped with :func:`clip_rows` before the E-step).
    split : BudgetSplit, optional
    accountant : {"pld", "rdp"}

    Attributes
    ----------
    noise : NoiseScales
    ledger : PrivacyLedger
    """

    epsilon: float
    delta: float
    max_rounds: int
    covariance_type: CovarianceType
    bound: float
    split: BudgetSplit = field(default_factory=BudgetSplit)
    accountant: Accountant = "pld"

    def __post_init__(self) -> None:
        check_covariance_type(self.covariance_type)
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {self.max_rounds}.")
        rc = _round_releases(self.covariance_type, self.split, 1.0)
        # A hair of margin: the ledger composes round by round, which the PLD accountant
        # discretises slightly differently from the one-shot composition calibrated here.
        self._scale = calibrate_noise(
            self.epsilon * (1.0 - 1e-4),
            self.delta,
            ratios=tuple(r.noise_multiplier for r in rc),
            counts=tuple(r.count * self.max_rounds for r in rc),
            accountant=self.accountant,
        )
        self.noise = noise_scales(Sensitivity(self.bound), self.split, self._scale)
        if self.covariance_type == "tied":
            self.noise = NoiseScales(self.noise.count, self.noise.first, self.noise.second, self.noise.second)
        self.ledger = PrivacyLedger(self.epsilon, self.delta, self.accountant)

    @property
    def rounds_done(self) -> int:
        """Rounds released so far."""
        return sum(r.count for r in self.ledger.releases) // max(1, len(_round_releases(self.covariance_type, self.split, 1.0)))

    def release(self, stats: SufficientStatistics, rng: np.random.Generator) -> SufficientStatistics:
        """Noise one round's statistics (of clipped rows, shift 0) and record the spend.

        Raises
        ------
        BudgetExceededError
            Past ``max_rounds`` (or any release that would exceed the budget).
        """
        if self.rounds_done >= self.max_rounds:
            raise BudgetExceededError(
                f"the privacy budget covers {self.max_rounds} rounds; this client will not release more."
            )
        self.ledger.record(_round_releases(self.covariance_type, self.split, self._scale))
        return add_noise(stats, self.noise, rng)

    def spent(self) -> tuple[float, float]:
        """``(ε, δ)`` spent so far, by the accountant."""
        return self.ledger.spent(), self.delta


def _round_releases(covariance_type: CovarianceType, split: BudgetSplit, scale: float) -> list[GaussianRelease]:
    # Per round: N, Σ r x and the second moments (for tied, Σ x xᵀ is re-released each round
    # here, since the server may need it every round; its ratio is split.second).
    return [
        GaussianRelease(scale * split.count, 1),
        GaussianRelease(scale * split.first, 1),
        GaussianRelease(scale * split.second, 1),
    ]

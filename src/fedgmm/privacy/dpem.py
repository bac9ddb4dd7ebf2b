"""DP-EM (Park et al., 2017): Gaussian noise on the E-step statistics of clipped rows, a noise-aware M-step."""

from __future__ import annotations

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
from fedgmm.privacy.clipping import DEFAULT_CLIP_FACTOR, Sensitivity, clip_rows, norm_bound
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
    scale : ndarray of shape (d, d)
        Ψ: the covariance a component shrinks toward.
    mean_strength : float
        κ (pseudo-rows pulling means toward ``mean``).
    cov_strength : float
        ν (pseudo-rows pulling covariances toward Ψ).
    mean : ndarray of shape (d,)
        m (0 for centred data).
    floor : float
        Eigenvalue floor as a fraction of Ψ's mean variance.
    count_floor : float
        Noisy ``N_k`` are floored here.
    """

    scale: np.ndarray
    mean_strength: float = 1.0
    cov_strength: float = 10.0
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
    psi = np.asarray(prior.scale, dtype=np.float64)
    m = np.zeros(d) if prior.mean is None else np.asarray(prior.mean, dtype=np.float64) - stats.shift
    floor = prior.floor * float(np.mean(np.diag(psi))) + reg_covar
    nk = np.maximum(np.nan_to_num(stats.nk, nan=0.0), prior.count_floor)
    kappa, nu = prior.mean_strength, prior.cov_strength
    mu = (stats.sx + kappa * m) / (nk + kappa)[:, None]
    if ctype == "full":
        scatter = stats.sxx - nk[:, None, None] * mu[:, :, None] * mu[:, None, :]
        cov = (scatter + nu * psi) / (nk + nu)[:, None, None]
        cov = _psd_floor(cov, floor) + reg_covar * np.eye(d)
    elif ctype == "tied":
        scatter = stats.sxx - (nk[:, None] * mu).T @ mu
        cov = _psd_floor((scatter + nu * psi) / (nk.sum() + nu), floor) + reg_covar * np.eye(d)
    elif ctype == "diag":
        scatter = stats.sxx - nk[:, None] * mu**2
        cov = np.maximum((scatter + nu * np.diag(psi)) / (nk + nu)[:, None], floor) + reg_covar
    else:
        scatter = stats.sxx - nk * np.sum(mu**2, axis=1)
        cov = np.maximum((scatter + nu * np.trace(psi)) / ((nk + nu) * d), floor) + reg_covar
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
    X: np.ndarray, state: MixtureState, residual_bound: float
) -> SufficientStatistics:
    """E-step statistics about each component's own current mean, residuals clipped per component.

    With responsibilities ``r_nk`` from the engine (:func:`fedgmm.em.log_responsibilities`)
    and ``ρ_nk = clip(x_n − μ_k, residual_bound)``: ``N_k = Σ r_nk``, ``S_k = Σ r_nk ρ_nk``
    and second moments ``Σ r_nk ρ_nk ρ_nkᵀ`` (reduced per covariance type; tied sums over k).
    The means ``μ_k`` are public (the previous noisy release), so one row moves ``S`` by at
    most ``B_r`` and the second moments by at most ``B_r²`` (``‖r‖₂ ≤ 1``) — a residual bound
    well inside the row bound divides the second-moment noise by ``(B / B_r)²``. The engine's
    statistics share one shift for all components, hence this per-component variant.

    Returns
    -------
    SufficientStatistics
        About shift 0, with ``sx`` and ``sxx`` the *residual* sums (add ``μ_k`` back after the M-step).
    """
    log_resp, _ = log_responsibilities(X, state)
    r = np.exp(log_resp)
    res = X[:, None, :] - state.means[None, :, :]
    norms = np.linalg.norm(res, axis=2)
    res *= np.minimum(1.0, residual_bound / np.maximum(norms, 1e-300))[:, :, None]
    nk = r.sum(axis=0)
    sx = np.einsum("nk,nkd->kd", r, res)
    ctype = state.covariance_type
    if ctype == "full":
        sxx = np.einsum("nk,nkd,nke->kde", r, res, res)
    elif ctype == "tied":
        sxx = np.einsum("nk,nkd,nke->de", r, res, res)
    elif ctype == "diag":
        sxx = np.einsum("nk,nkd->kd", r, res**2)
    else:
        sxx = np.einsum("nk,nk->k", r, norms_clipped_sq(norms, residual_bound))
    return SufficientStatistics(nk, sx, sxx, X.shape[0], 0.0, np.zeros(X.shape[1]), ctype)


def norms_clipped_sq(norms: np.ndarray, bound: float) -> np.ndarray:
    """``min(‖ρ‖, B)²`` elementwise."""
    return np.minimum(norms, bound) ** 2


def fit_dp_local(
    X: np.ndarray,
    *,
    n_components: int,
    epsilon: float,
    delta: float,
    covariance_type: CovarianceType = "full",
    max_iter: int = 3,
    feature_scale: np.ndarray | None = None,
    clip_factor: float = DEFAULT_CLIP_FACTOR,
    residual_factor: float = DEFAULT_RESIDUAL_FACTOR,
    bound: float | None = None,
    split: BudgetSplit | None = None,
    mean_strength: float = 1.0,
    cov_strength: float = 2.0,
    reg_covar: float = 0.0,
    accountant: Accountant = "pld",
    random_state: SeedLike = None,
) -> DPFitResult:
    """(ε, δ)-DP EM fit of one client's rows (record level, add/remove one row).

    1. Rows are divided by the public ``feature_scale`` (whitening) and clipped to the
       data-independent radius ``B = clip_factor · sqrt(d)`` (or ``bound``).
    2. A one-off release of ``(n, Σ x, Σ x xᵀ)`` (sensitivities 1, B, B²) gives the client's
       noisy mean and covariance; the start draws K means from that Gaussian (post-processing)
       and every covariance shrinks toward it (Ψ of the :class:`Prior`).
    3. ``max_iter`` iterations of: responsibilities under the current model, statistics about
       each component's current mean with residuals clipped to ``B_r = residual_factor · sqrt(d)``
       (:func:`centred_statistics`), Gaussian noise on ``(N_k, Σ r ρ, Σ r ρ ρᵀ)``
       (sensitivities 1, B_r, B_r²), :func:`noise_aware_m_step`.
    4. One noise scale is calibrated by ``dp-accounting`` for the whole composition
       (``3 + 3 × max_iter`` Gaussian releases, relative multipliers from ``split``); the
       spent ε is the accountant's.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The client's rows, in the federation's preprocessed coordinates (centred).
    n_components : int
        K of the local model (small: every component pays noise on its statistics).
    epsilon, delta : float
        The client's budget for this release.
    covariance_type : {"full", "tied", "diag", "spherical"}
    max_iter : int
        EM iterations (each one is paid for; no early stop, as that would depend on the data).
    feature_scale : ndarray of shape (d,), optional
        Public per-feature standard deviations (from the preprocessing transform); default 1.
    clip_factor, residual_factor : float
        B and B_r in units of ``sqrt(d)`` in whitened coordinates.
    bound : float, optional
        An explicit public B in whitened coordinates (overrides ``clip_factor``).
    split : BudgetSplit, optional
        Relative noise multipliers (default :data:`DEFAULT_SPLIT`).
    mean_strength, cov_strength : float
        κ and ν of the :class:`Prior`.
    reg_covar : float
        Added to the variances of the released model (whitened coordinates).
    accountant : {"pld", "rdp"}
    random_state : int, Generator or None
        Seeds the start and the noise.

    Returns
    -------
    DPFitResult
    """
    check_covariance_type(covariance_type)
    if n_components < 1 or max_iter < 0:
        raise ValueError(f"n_components must be >= 1 and max_iter >= 0, got {n_components} and {max_iter}.")
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1:
        raise ValueError(f"X must be a non-empty 2-D array, got shape {X.shape}.")
    d = X.shape[1]
    scale_vec = np.ones(d) if feature_scale is None else np.asarray(feature_scale, dtype=np.float64)
    if scale_vec.shape != (d,) or np.any(scale_vec <= 0) or not np.all(np.isfinite(scale_vec)):
        raise ValueError(f"feature_scale must be {d} positive finite numbers.")
    if covariance_type == "spherical" and not np.allclose(scale_vec, scale_vec[0]):
        raise ValueError("spherical local models need one common feature scale; use 'diag'.")
    rng = as_generator(random_state)
    split = split or DEFAULT_SPLIT
    B = float(bound) if bound is not None else norm_bound(d, factor=clip_factor)
    B_r = min(B, norm_bound(d, factor=residual_factor))
    Xc, n_clipped = clip_rows(X / scale_vec, B)

    releases = releases_of(max_iter, covariance_type, split, 1.0)
    scale = calibrate_noise(
        epsilon, delta, ratios=tuple(r.noise_multiplier for r in releases),
        counts=tuple(r.count for r in releases), accountant=accountant,
    )
    spent = epsilon_spent(releases_of(max_iter, covariance_type, split, scale), delta, accountant=accountant)
    if spent > epsilon:  # pragma: no cover - calibrate_noise guarantees it
        raise BudgetExceededError(f"calibrated releases spend epsilon = {spent} > {epsilon}.")
    first = noise_scales(Sensitivity(B), split, scale)
    noise = noise_scales(Sensitivity(B_r), split, scale)

    # One-off release: (n, Σx, Σxxᵀ) of the clipped rows.
    n_hat = max(float(Xc.shape[0] + rng.normal(0.0, first.count)), 1.0)
    mean = (Xc.sum(axis=0) + rng.normal(0.0, first.first, size=d)) / n_hat
    second = Xc.T @ Xc + _symmetric_noise((d, d), first.scatter, rng)
    floor = EIGEN_FLOOR * B**2 / d
    psi = _psd_floor(second / n_hat - np.outer(mean, mean), floor)
    prior = Prior(scale=psi, mean_strength=mean_strength, cov_strength=cov_strength)
    state = _start(n_components, covariance_type, mean, psi, rng)
    noisy_count = n_hat
    for _ in range(max_iter):
        stats = centred_statistics(Xc, state, B_r)
        noisy = add_noise(stats, noise, rng)
        noisy_count = max(float(np.sum(noisy.nk)), 1.0)
        step = noise_aware_m_step(noisy, prior, reg_covar=reg_covar)
        state = MixtureState.from_covariances(
            step.weights, step.means + state.means, step.covariances, covariance_type
        )
    out = _affine_state(state, scale_vec) if feature_scale is not None else state
    return DPFitResult(out, spent, delta, max_iter, noise, B, n_clipped, noisy_count)


def _start(
    k: int, covariance_type: CovarianceType, mean: np.ndarray, cov: np.ndarray, rng: np.random.Generator
) -> MixtureState:
    """K means drawn from ``N(mean, cov)`` (released values only), equal weights, covariances ``cov``."""
    d = mean.shape[0]
    w, v = np.linalg.eigh(cov)
    means = mean + (rng.normal(size=(k, d)) * np.sqrt(np.maximum(w, 0.0))) @ v.T
    covs = {
        "full": lambda: np.broadcast_to(cov, (k, d, d)).copy(),
        "tied": lambda: cov,
        "diag": lambda: np.broadcast_to(np.diag(cov), (k, d)).copy(),
        "spherical": lambda: np.full(k, np.trace(cov) / d),
    }[covariance_type]()
    return MixtureState.from_covariances(np.full(k, 1.0 / k), means, covs, covariance_type)


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

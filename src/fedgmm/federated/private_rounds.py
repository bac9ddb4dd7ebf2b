"""Local DP for federated EM: the per-client budget plan, the client's ledger, noisy rounds, the server's step.

Each client clips its rows (whitened by the preprocessing transform's public per-axis scale,
to ``B = 1.5·sqrt(d)``; or to a stated public ``clip_bound``), computes the E-step
statistics about each component's current mean with residuals clipped to ``B_r = B / 2``
(:func:`fedgmm.privacy.dpem.centred_statistics`: sensitivities 1, ``B_r``, ``B_r²``) and
adds Gaussian noise. One plan (:func:`round_plan`) fixes every noise multiplier before
any row is seen: the private initialisation upload (a DP-EM local fit,
:func:`fedgmm.federated.private.fit_private_local_model`) and ``max_rounds`` rounds,
all composed by ``dp-accounting``'s PLD accountant to at most the target ``(ε, δ)``.
The client keeps its ledger in its store (the in-process transport's per-client dict,
Flower's ``context.state``) and refuses any release the ledger says would exceed the
budget — a round past ``max_rounds`` included — with an ``excluded`` reply that says so.

The server sums the noisy statistics after noise-aware bounds checks
(:func:`combine_noisy_statistics`: an honest client's statistics lie within the clipping
bounds plus 7 noise standard deviations) and runs :func:`noisy_m_step`
(:func:`fedgmm.privacy.dpem.noise_aware_m_step`: counts floored, means shrunk toward the
previous round's, covariances toward a mix of the previous round's and a data-independent
scale with a strength that follows the noise, then PSD-floored), so every round's
mixture is valid. Components whose noisy count is within a few noise σ of zero carry only
noise: the server drops them from the initialisation uploads before its k-means++
(:func:`drop_weak_components`), and before every round but the last re-seeds such a
component by splitting the heaviest one (:func:`fedgmm.privacy.dpem.reseed_weak_components`)
— without it a component that lost its rows keeps the count floor's weight for good (the
two-blob check collapsed to one component on half the noise seeds). Both are
post-processing of released values.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedgmm.em.stats import SufficientStatistics
from fedgmm.exceptions import PayloadError
from fedgmm.federated.local import LocalFitSettings, check_client_data
from fedgmm.federated.messages import (
    CONFIG,
    STATS,
    STATUS_EXCLUDED,
    STATUS_OK,
    LocalModelReply,
    encode_local_model,
    read_header,
)
from fedgmm.federated.private import (
    INIT_LOCAL_COMPONENTS,
    INIT_SECOND_FRACTION,
    NOISE_SEED,
    fit_private_local_model,
    guarantee,
    noise_generator,
    privacy_record,
)
from fedgmm.federated.robust.counts import cap_counts
from fedgmm.federated.robust.records import ClientDecision, client_id_list, merge_decisions
from fedgmm.federated.robust.statistics import scale_statistics
from fedgmm.federated.union import full_covariances
from fedgmm.mixture import MixtureState, covariance_shape
from fedgmm.privacy.accounting import GaussianRelease, calibrate_noise, epsilon_spent
from fedgmm.privacy.clipping import Sensitivity, clip_rows
from fedgmm.privacy.dpem import (
    DEFAULT_DP_ITERATIONS,
    DEFAULT_LOCAL_BUDGET,
    DEFAULT_SPLIT,
    EIGEN_FLOOR,
    NoiseScales,
    Prior,
    add_noise,
    centred_statistics,
    local_releases,
    noise_aware_m_step,
    noise_scales,
    project_to_ball,
    reseed_weak_components,
    weak_threshold,
)
from fedgmm.types import CovarianceType

#: Noise multiplier of the initialisation upload's releases relative to a round's (the init
#: gets less budget per release than a round: 12 releases of a 3-iteration DP-EM fit).
INIT_NOISE_RATIO = 1.5
#: Residual clipping radius ``B_r`` as a fraction of the row bound ``B`` (0.75 / 1.5: the
#: DP-EM local fit's defaults, :data:`fedgmm.privacy.dpem.DEFAULT_RESIDUAL_FACTOR`).
RESIDUAL_RATIO = 0.5
#: The plan composes to at most ``(1 − margin) ε``, so that the ledger's round-by-round
#: PLD composition (discretised differently) stays within ``ε``.
CALIBRATION_MARGIN = 1e-3
#: Relative tolerance of the plan's noise scale (bisection over the PLD accountant).
PLAN_RTOL = 3e-3
#: An honest client's noisy statistic lies within its clipping bound plus this many noise
#: standard deviations (a false rejection per entry has probability ~3e-12).
NOISE_BOUND_SIGMAS = 7.0
#: Prior strengths of the server's noise-aware M-step (pseudo-rows; κ toward the previous
#: mean, at least ν toward the prior covariance, see :data:`PRIOR_PREVIOUS_SHARE`).
PRIOR_MEAN_STRENGTH = 1.0
PRIOR_COV_STRENGTH = 2.0
#: Share of the broadcast mixture's own covariance in the prior scale Ψ_k of the server's
#: noise-aware M-step (the rest: the data-independent ``ψ I``). The noisy second moments are
#: then shrunk toward the previous round's estimate — released already, so no budget — and
#: the rounds average their noise instead of each being pulled toward ``ψ I``. Measured on
#: the Fashion-MNIST benchmark (K = 20 full, ε = 8, 3 seeds): 0 → 13.46 nats from
#: centralized, 0.5 → 12.86, 0.75 → 12.46; 1 (no ``ψ I`` part) was unstable (18-29).
PRIOR_PREVIOUS_SHARE = 0.75
#: ν of the noise-aware M-step is at least this many noise spectral-norm units over Ψ's
#: scale (2: ``scatter + ν Ψ`` is positive definite with high probability).
NOISE_PRIOR_FACTOR = 2.0
#: The DP-EM local fit's clipping factor (``B = 1.5·sqrt(d)`` in whitened coordinates).
CLIP_FACTOR = 1.5
#: Store keys of a client's federated-EM privacy state.
STORE_PLAN = "dp-fedem:plan"
STORE_LEDGER = "dp-fedem:ledger"
STORE_ROUNDS = "dp-fedem:rounds"
STORE_INIT = "dp-fedem:init"
STORE_BOUND = "dp-fedem:bound"
#: Tag of a private round's noise stream (:func:`fedgmm.federated.private.noise_generator`).
ROUND_NOISE_TAG = 0xD9E
#: Request field marking a DP federated EM request (its value is the target epsilon).
TOTAL_EPSILON = "dp-total-epsilon"
#: Where the rounds' noise is added: ``"local"`` (each client's statistics carry the
#: calibrated noise: the guarantee holds against a server that sees every reply) or
#: ``"distributed"`` (each client adds ``1/sqrt(C)`` of it so that the sum of C replies
#: carries it: the guarantee holds only for the sum, under secure aggregation with all C
#: clients contributing — in-process runs have no secure aggregation, so there it models
#: the utility of central DP, not its protection).
NOISE_MODES = ("local", "distributed")


@dataclass(frozen=True)
class RoundPlan:
    """Every noise multiplier of one client's private federated EM run (public, data-independent).

    Attributes
    ----------
    epsilon, delta : float
        The client's target for the whole run.
    max_rounds : int
        Rounds the budget covers.
    covariance_type : {"full", "tied", "diag", "spherical"}
    private_init : bool
        Whether the budget includes the initialisation upload (a DP-EM local fit).
    round_scale : float
        A round releases ``N_k``, ``Σ r ρ`` and the second moments with noise multipliers
        ``round_scale × (3, 1, 0.8)`` (:data:`fedgmm.privacy.dpem.DEFAULT_SPLIT`).
    init_epsilon : float
        The ε the initialisation upload's DP-EM fit is asked for (0 without it).
    noise_mode : {"local", "distributed"}
        See :data:`NOISE_MODES`.
    """

    epsilon: float
    delta: float
    max_rounds: int
    covariance_type: CovarianceType
    private_init: bool
    round_scale: float
    init_epsilon: float = 0.0
    noise_mode: str = "local"

    def round_releases(self) -> list[GaussianRelease]:
        """The Gaussian releases of one round."""
        s = self.round_scale
        return [GaussianRelease(s * r) for r in (DEFAULT_SPLIT.count, DEFAULT_SPLIT.first, DEFAULT_SPLIT.second)]

    def init_releases(self) -> list[GaussianRelease]:
        """The releases of the initialisation upload: what the DP-EM fit calibrates for ``init_epsilon``.

        :func:`~fedgmm.privacy.dpem.fit_dp_local` makes the same (cached) calibration call.
        """
        if not self.private_init:
            return []
        unit = _init_releases(1.0)
        scale = calibrate_noise(self.init_epsilon, self.delta, ratios=tuple(r.noise_multiplier for r in unit),
                                counts=tuple(r.count for r in unit))  # fmt: skip
        return _init_releases(scale)

    def init_count_noise(self) -> float:
        """σ of each noisy ``N_k`` of the initialisation upload (sensitivity 1; 0 without it).

        :func:`~fedgmm.privacy.dpem.local_releases` lists the counts' release first.
        """
        releases = self.init_releases()
        return releases[0].noise_multiplier if releases else 0.0

    def all_releases(self) -> list[GaussianRelease]:
        """Everything the plan lets the client release (the upload, then ``max_rounds`` rounds)."""
        return _merged(self.init_releases() + self.round_releases() * self.max_rounds)

    def noise(self, bound: float, n_clients: int = 1) -> NoiseScales:
        """σ of one client's round statistics for residual bound ``bound``.

        ``"distributed"``: ``1 / sqrt(n_clients)`` of the calibrated σ, so that the sum of
        ``n_clients`` replies carries it.
        """
        n = noise_scales(Sensitivity(bound), DEFAULT_SPLIT, self.round_scale)
        f = 1.0 / math.sqrt(max(1, n_clients)) if self.noise_mode == "distributed" else 1.0
        return NoiseScales(f * n.count, f * n.first, f * n.second, f * n.second)


def round_plan(
    epsilon: float, delta: float, max_rounds: int, covariance_type: str, private_init: bool, noise_mode: str = "local"
) -> RoundPlan:
    """The server's budget plan of a private federated EM run: one noise scale for every release.

    The initialisation upload's releases get noise multipliers :data:`INIT_NOISE_RATIO`
    times a round's; the common scale is the smallest for which the upload and
    ``max_rounds`` rounds compose, by ``dp-accounting``'s PLD accountant, to at most
    ``(1 − CALIBRATION_MARGIN) ε`` (bracketed by the RDP accountant's calibration, which is
    looser and quick); the plan is then checked against ``ε`` with the releases exactly as
    the clients record them. Each client checks the plan again before its first release.

    Raises
    ------
    ValueError
        For a bad ``epsilon``, ``delta``, ``max_rounds`` or ``noise_mode``.
    """
    if not (isinstance(max_rounds, int | np.integer) and max_rounds >= 1):
        raise ValueError(f"a private federated EM run needs max_rounds >= 1, got {max_rounds!r}.")
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"dp_noise must be one of {list(NOISE_MODES)}, got {noise_mode!r}.")
    plan = _plan(float(epsilon), float(delta), int(max_rounds), str(covariance_type), bool(private_init))
    return replace(plan, noise_mode=noise_mode)


@functools.lru_cache(maxsize=64)
def _plan(epsilon: float, delta: float, max_rounds: int, covariance_type: str, private_init: bool) -> RoundPlan:
    init_unit = _init_releases(1.0) if private_init else []
    ratios = (DEFAULT_SPLIT.count, DEFAULT_SPLIT.first, DEFAULT_SPLIT.second,
              *(r.noise_multiplier * INIT_NOISE_RATIO for r in init_unit))  # fmt: skip
    counts = (max_rounds, max_rounds, max_rounds, *(r.count for r in init_unit))
    target = epsilon * (1.0 - CALIBRATION_MARGIN)

    def spent(scale: float) -> float:
        return epsilon_spent(_merged([GaussianRelease(scale * r, c) for r, c in zip(ratios, counts, strict=True)]), delta)

    hi = calibrate_noise(target, delta, ratios=ratios, counts=counts, accountant="rdp")
    lo = 0.75 * hi  # RDP's ε is looser than PLD's: its calibrated scale is an upper end
    if spent(lo) <= target:
        hi = lo = calibrate_noise(target, delta, ratios=ratios, counts=counts)
    while hi - lo > PLAN_RTOL * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if spent(mid) <= target else (mid, hi)
    init_eps = 0.0
    if private_init:
        init_eps = epsilon_spent(_init_releases(hi * INIT_NOISE_RATIO), delta)
    plan = RoundPlan(epsilon, delta, max_rounds, covariance_type, private_init, hi, init_eps)  # type: ignore[arg-type]
    step = 1e-3 * hi
    while epsilon_spent(plan.all_releases(), delta) > epsilon:
        plan = replace(plan, round_scale=plan.round_scale + step)
        step *= 2.0
    return plan


def _init_releases(scale: float) -> list[GaussianRelease]:
    """The releases of the initialisation upload's DP-EM fit (:func:`fit_private_local_model`'s defaults)."""
    return local_releases(DEFAULT_DP_ITERATIONS, DEFAULT_LOCAL_BUDGET, scale)


def drop_weak_components(state: MixtureState, count: float, threshold: float) -> MixtureState:
    """An initialisation upload without the components whose noisy count is below ``threshold``.

    A DP-EM upload's component ``k`` stands for ``w_k · count`` noisy rows; below a few noise
    σ (:func:`~fedgmm.privacy.dpem.weak_threshold` of :meth:`RoundPlan.init_count_noise`)
    its mean and covariance are noise, often far outside the data, and the server's
    k-means++ (which seeds far-out means first) would make them global components. They
    are dropped before the union (the heaviest component always stays); weights
    renormalised. Post-processing of released values: no budget.
    """
    nk = np.asarray(state.weights) * float(count)
    keep = np.flatnonzero(nk >= threshold)
    if keep.size == state.n_components:
        return state
    if keep.size == 0:
        keep = np.array([int(np.argmax(nk))])
    cov = np.asarray(state.covariances)
    cov = cov if state.covariance_type == "tied" else cov[keep]
    w = np.asarray(state.weights)[keep]
    return MixtureState.from_covariances(w / w.sum(), np.asarray(state.means)[keep], cov, state.covariance_type)


def row_bound(n_features: int, clip_bound: float | None, feature_scale: tuple[float, ...]) -> float:
    """``B``: ``1.5·sqrt(d)`` in whitened coordinates, else the public ``clip_bound``."""
    if feature_scale:
        return CLIP_FACTOR * math.sqrt(n_features)
    if clip_bound is None:
        raise ValueError("a private federated EM round needs a feature scale (preprocessing) or a clip_bound.")
    return float(clip_bound)


def whiten_state(state: MixtureState, scale: np.ndarray) -> MixtureState:
    """The mixture of ``x ↦ x / scale`` (per-feature; spherical needs one common scale)."""
    return scale_state(state, 1.0 / scale)


def scale_state(state: MixtureState, scale: np.ndarray) -> MixtureState:
    """The mixture of ``x ↦ x · scale`` (per-feature ``scale`` of shape ``(d,)``)."""
    ctype = state.covariance_type
    cov = np.asarray(state.covariances)
    if ctype in ("full", "tied"):
        cov = cov * np.outer(scale, scale)
    elif ctype == "diag":
        cov = cov * scale**2
    elif not np.allclose(scale, scale[0]):
        raise ValueError(
            "covariance_type='spherical' with epsilon needs one common feature scale: use 'diag', or a "
            "clip_bound without preprocessing."
        )
    else:
        cov = cov * float(scale[0]) ** 2
    return MixtureState.from_covariances(state.weights, state.means * scale, cov, ctype)


def fedem_guarantee(
    epsilon: float, delta: float, max_rounds: int, noise_mode: str = "local", dp_noise_seed: int | None = None
) -> dict[str, Any]:
    """The guarantee record of a private federated EM run (what each client's budget covers)."""
    out = {
        **guarantee(epsilon, delta, dp_noise_seed), "noise": noise_mode, "max_rounds": int(max_rounds),
        "covers": "initialisation upload (kmeans++ init) and every round's statistics",
    }
    if noise_mode == "distributed":
        out["valid_only_under"] = (
            "secure aggregation with every addressed client contributing: the rounds' epsilon holds for the sum; "
            "a single reply is much less protected (in-process runs have no secure aggregation)"
        )
    return out


def fedem_privacy_record(
    epsilon: float | None, delta: float, max_rounds: int, spent: Mapping[int, tuple[float, float]],
    noise_mode: str = "local", dp_noise_seed: int | None = None,
) -> dict[str, Any] | None:
    """:func:`fedem_guarantee` plus what each client reported spent (JSON-ready); None when DP is off."""
    record = privacy_record(epsilon, delta, spent)
    if record is None or epsilon is None:
        return None
    return {**fedem_guarantee(epsilon, delta, max_rounds, noise_mode, dp_noise_seed), "spent": record["spent"]}


# ---------------------------------------------------------------------------- requests
def round_config(
    plan: RoundPlan, *, seed: int, clip_bound: float | None, feature_scale: tuple[float, ...], n_clients: int = 1,
    dp_noise_seed: int | None = None,
) -> dict[str, Any]:
    """The request fields of a private round (and of the private initialisation upload).

    ``n_clients``: how many replies the distributed noise is split over; ``dp_noise_seed``:
    the reproducible noise seed (None: each client's secret seeds its noise).
    """
    out: dict[str, Any] = {
        TOTAL_EPSILON: float(plan.epsilon), "dp-delta": float(plan.delta), "dp-max-rounds": int(plan.max_rounds),
        "dp-private-init": bool(plan.private_init), "dp-round-scale": float(plan.round_scale),
        "dp-init-epsilon": float(plan.init_epsilon), "dp-noise": plan.noise_mode, "seed": int(seed),
    }
    if plan.noise_mode == "distributed":
        out["dp-clients"] = int(n_clients)
    if dp_noise_seed is not None:
        out[NOISE_SEED] = int(dp_noise_seed)
    if feature_scale:
        out["dp-feature-scale"] = [float(v) for v in feature_scale]
    elif clip_bound is not None:
        out["dp-clip-bound"] = float(clip_bound)
    return out


def plan_from_config(cfg: Mapping[str, Any], covariance_type: str) -> RoundPlan:
    """The plan a private request carries (the client checks it against its budget before any release)."""
    try:
        plan = RoundPlan(
            float(cfg[TOTAL_EPSILON]), float(cfg["dp-delta"]), int(cfg["dp-max-rounds"]), covariance_type,  # type: ignore[arg-type]
            bool(cfg["dp-private-init"]), float(cfg["dp-round-scale"]), float(cfg["dp-init-epsilon"]),
            str(cfg.get("dp-noise", "local")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BudgetRefused(f"privacy budget refused: the request's plan is incomplete or malformed ({exc}).") from None
    if not (plan.epsilon > 0 and 0 < plan.delta < 1 and plan.max_rounds >= 1 and plan.round_scale > 0
            and (plan.init_epsilon > 0 or not plan.private_init) and plan.noise_mode in NOISE_MODES):  # fmt: skip
        raise BudgetRefused(f"privacy budget refused: the request's plan is not valid ({plan}).")
    return plan


# ---------------------------------------------------------------------------- client
class BudgetRefused(Exception):
    """A client will not make a release: the reason goes into its ``excluded`` reply."""


def _plan_key(plan: RoundPlan) -> str:
    return (f"epsilon={plan.epsilon!r} delta={plan.delta!r} max_rounds={plan.max_rounds} {plan.covariance_type} "
            f"init={int(plan.private_init)} round_scale={plan.round_scale!r} init_epsilon={plan.init_epsilon!r} "
            f"noise={plan.noise_mode}")  # fmt: skip


def _merged(releases: list[GaussianRelease]) -> list[GaussianRelease]:
    """Releases with equal noise multipliers merged into one self-composition (the same privacy loss)."""
    counts: dict[float, int] = {}
    for r in releases:
        counts[r.noise_multiplier] = counts.get(r.noise_multiplier, 0) + r.count
    return [GaussianRelease(z, c) for z, c in counts.items()]


def charge(store: MutableMapping[str, Any], plan: RoundPlan, kind: str) -> tuple[float, int]:
    """Record one release of ``kind`` (``"init"`` or ``"round"``) in the client's ledger, or refuse it.

    At first contact the client checks, with the PLD accountant, that everything the
    plan lets it release (the upload and ``max_rounds`` rounds) composes to at most its
    ``ε``, and fixes the plan. Every later release must belong to that plan: a request
    with another plan, a second or late initialisation, or a round past ``max_rounds``
    is refused, and nothing is recorded. What has been released is a part of the plan,
    so its ε is at most the plan's.

    Returns
    -------
    (float, int)
        ε spent after this release — the smaller of two accountant upper bounds: PLD of the
        whole plan and RDP of the releases so far (PLD of exactly those at the last round)
        — and the round number (0 for the upload).

    Raises
    ------
    BudgetRefused
        With the reason.
    """
    key = _plan_key(plan)
    fixed = store.get(STORE_PLAN)
    if fixed is None:
        bound = epsilon_spent(plan.all_releases(), plan.delta)
        if bound > plan.epsilon:
            raise BudgetRefused(
                f"privacy budget refused: the plan's releases compose to epsilon = {bound:.4g} > "
                f"{plan.epsilon:g} (delta = {plan.delta:g}); nothing was released."
            )
        store[STORE_PLAN], store[STORE_BOUND] = key, float(bound)
    elif fixed != key:
        raise BudgetRefused(
            f"privacy budget refused: this client's budget was fixed at first contact ({fixed}); the request "
            f"asks for ({key})."
        )
    rounds = int(store.get(STORE_ROUNDS, 0))
    if kind == "init":
        if not plan.private_init or bool(store.get(STORE_INIT, False)) or rounds:
            raise BudgetRefused("privacy budget refused: the plan covers one initialisation upload, before the rounds.")
        extra = plan.init_releases()
    else:
        if rounds >= plan.max_rounds:
            raise BudgetRefused(
                f"privacy budget exhausted: the budget (epsilon={plan.epsilon:g}, delta={plan.delta:g}) covers "
                f"{plan.max_rounds} rounds and this client has released {rounds}; it will not release more."
            )
        extra = plan.round_releases()
    held = np.asarray(store.get(STORE_LEDGER, np.zeros((0, 2))), dtype=np.float64).reshape(-1, 2)
    ledger = _merged([*(GaussianRelease(float(z), int(c)) for z, c in held), *extra])
    store[STORE_LEDGER] = np.array([[r.noise_multiplier, r.count] for r in ledger], dtype=np.float64)
    if kind == "init":
        store[STORE_INIT] = True
    else:
        store[STORE_ROUNDS] = rounds + 1
    bound = float(store[STORE_BOUND])
    done = (rounds + 1 == plan.max_rounds) if kind == "round" else False
    if done and (bool(store.get(STORE_INIT, False)) or not plan.private_init):
        spent = bound  # the whole plan has been released: its PLD value, exactly
    else:
        spent = min(bound, epsilon_spent(ledger, plan.delta, accountant="rdp"))
    return spent, (rounds + 1 if kind == "round" else 0)


def noisy_round(
    X: np.ndarray,
    state: MixtureState,
    cfg: Mapping[str, Any],
    client_id: int,
    store: MutableMapping[str, Any],
) -> RecordDict:
    """Client side of a private round: clip, centred statistics, charge the ledger, add noise, reply.

    Parameters
    ----------
    X : ndarray of shape (n_c, d)
        The client's rows in the federation's (preprocessed) coordinates.
    state : MixtureState
        The broadcast mixture, same coordinates.
    cfg : mapping
        The request's fields (:func:`round_config`).
    client_id : int
    store : mutable mapping
        The client's state between requests; holds the ledger and the noise secret.

    Returns
    -------
    RecordDict
        :func:`encode_noisy_statistics`, or an ``excluded`` reply with the reason (no
        usable data, or the budget refuses the round — nothing is released then).
    """

    problem = check_client_data(X)
    if problem:
        return encode_noisy_statistics(client_id, None, problem)
    d = X.shape[1]
    fs = tuple(float(v) for v in cfg.get("dp-feature-scale", []))
    clip = cfg.get("dp-clip-bound")
    scale = np.asarray(fs) if fs else np.ones(d)
    if scale.shape != (d,):
        return encode_noisy_statistics(client_id, None, f"dp-feature-scale has {scale.size} entries, the data {d} features.")
    B = row_bound(d, None if clip is None else float(clip), fs)
    B_r = RESIDUAL_RATIO * B
    try:
        plan = plan_from_config(cfg, state.covariance_type)
        white = whiten_state(state, scale)
        spent, n_round = charge(store, plan, "round")
    except (BudgetRefused, ValueError) as exc:
        return encode_noisy_statistics(client_id, None, str(exc))
    Xc, _ = clip_rows(np.asarray(X, dtype=np.float64) / scale, B)
    noise_seed = cfg.get(NOISE_SEED)
    rng = noise_generator(store, None if noise_seed is None else int(noise_seed), int(cfg["seed"]), client_id, n_round,
                          ROUND_NOISE_TAG)  # fmt: skip
    share = int(cfg.get("dp-clients", 1)) if plan.noise_mode == "distributed" else 1
    noisy = add_noise(centred_statistics(Xc, white, B_r), plan.noise(B_r, max(1, share)), rng)
    return encode_noisy_statistics(client_id, noisy, "", privacy=(spent, plan.delta), n_round=n_round)


def private_init_upload(
    X: np.ndarray, settings: LocalFitSettings, cfg: Mapping[str, Any], client_id: int, store: MutableMapping[str, Any]
) -> RecordDict:
    """Client side of the private initialisation upload: a DP-EM local fit charged to the run's ledger.

    The fit's ε is the plan's share (:attr:`RoundPlan.init_epsilon`, whatever the request's
    ``dp-epsilon`` says), and the plan must pass :func:`charge` first: a refused charge
    releases nothing.

    Returns
    -------
    RecordDict
        :func:`fedgmm.federated.messages.encode_local_model` of the DP upload, carrying the
        ε spent so far; or ``excluded`` with the reason.
    """
    problem = check_client_data(X)
    if not problem:
        try:
            plan = plan_from_config(cfg, settings.covariance_type)
            spent, _ = charge(store, plan, "init")
        except BudgetRefused as exc:
            problem = str(exc)
    if problem:
        return encode_local_model(LocalModelReply(client_id, STATUS_EXCLUDED, 0, None, problem))
    reply = fit_private_local_model(X, replace(settings, epsilon=plan.init_epsilon), client_id=client_id,
                                    seed=int(cfg["seed"]), store=store, local_components=INIT_LOCAL_COMPONENTS,
                                    second_fraction=INIT_SECOND_FRACTION)  # fmt: skip
    if reply.status != STATUS_OK or reply.privacy is None:
        return encode_local_model(reply)
    # The ledger charged plan.init_releases(); a fit that spent anything else is not sent.
    charged = epsilon_spent(plan.init_releases(), plan.delta)
    if not math.isclose(reply.privacy[0], charged, rel_tol=1e-9):
        return encode_local_model(LocalModelReply(
            client_id, STATUS_EXCLUDED, 0, None,
            f"private initialisation withheld: the DP-EM fit spent epsilon={reply.privacy[0]:.6g}, the ledger "
            f"charged {charged:.6g} (the fit's releases differ from the plan's).",
        ))
    return encode_local_model(replace(reply, privacy=(float(spent), float(plan.delta))))


# ---------------------------------------------------------------------------- wire
def encode_noisy_statistics(
    client_id: int,
    stats: SufficientStatistics | None,
    reason: str = "",
    *,
    privacy: tuple[float, float] | None = None,
    n_round: int = 0,
) -> RecordDict:
    """A private round's reply: noisy residual statistics (whitened coordinates), no log-likelihood.

    ``n-samples`` is the rounded noisy count; the spent ``(ε, δ)`` so far rides along.
    """
    cfg: dict[str, Any] = {"client-id": int(client_id), "reason": reason}
    content = RecordDict()
    if stats is None:
        cfg.update({"status": STATUS_EXCLUDED, "n-samples": 0})
    else:
        cfg.update({"status": STATUS_OK, "n-samples": max(1, int(stats.n_samples)), "covariance-type": stats.covariance_type,
                    "dp-round": int(n_round)})  # fmt: skip
        if privacy is not None:
            cfg["dp-epsilon"], cfg["dp-delta"] = float(privacy[0]), float(privacy[1])
        content[STATS] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in
                                      (("nk", stats.nk), ("sx", stats.sx), ("sxx", stats.sxx))})  # fmt: skip
    content[CONFIG] = ConfigRecord(cfg)
    return content


@dataclass(frozen=True)
class NoisyStatisticsReply:
    """A client's private round: noisy statistics (None when it excluded itself) and what it has spent."""

    client_id: int
    status: str
    stats: SufficientStatistics | None
    reason: str = ""
    privacy: tuple[float, float] | None = None


def decode_noisy_statistics(
    content: RecordDict, *, covariance_type: str, n_components: int, n_features: int
) -> NoisyStatisticsReply:
    """Server side: read a private round's reply (shapes, type, finiteness; the values are noisy).

    Raises
    ------
    PayloadError
        Another covariance type, wrong shapes, non-numeric or non-finite arrays, a
        missing or implausible spent budget.
    """
    head = read_header(content)
    cfg = head.config
    if head.status == STATUS_EXCLUDED:
        return NoisyStatisticsReply(head.client_id, head.status, None, head.reason)
    if cfg.get("covariance-type") != covariance_type:
        raise PayloadError("statistics of another covariance type.")
    n = cfg.get("n-samples")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10**12:
        raise PayloadError(f"n-samples must be an int in [1, 1e12], got {n!r}.")
    eps, delta = cfg.get("dp-epsilon"), cfg.get("dp-delta")
    if not (isinstance(eps, float) and isinstance(delta, float) and math.isfinite(eps) and eps > 0 and 0 < delta < 1):
        raise PayloadError(f"a private reply must carry its spent dp-epsilon > 0 and dp-delta in (0, 1), got {eps!r}, {delta!r}.")
    if STATS not in content.array_records:
        raise PayloadError("payload has no 'stats' array record.")
    record = content.array_records[STATS]
    expected = {"nk": (n_components,), "sx": (n_components, n_features),
                "sxx": covariance_shape(covariance_type, n_components, n_features)}  # fmt: skip
    arrays: dict[str, np.ndarray] = {}
    for key, shape in expected.items():
        if key not in record:
            raise PayloadError(f"payload's 'stats' record lacks {key!r}.")
        try:
            arr = record[key].numpy()
        except Exception as exc:
            raise PayloadError(f"payload array {key!r} cannot be read: {exc}") from exc
        if arr.dtype.kind not in "fiu" or arr.shape != shape:
            raise PayloadError(f"statistic {key!r} has dtype {arr.dtype} and shape {arr.shape}, expected numbers of shape {shape}.")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise PayloadError(f"payload array {key!r} contains NaN or infinity.")
        arrays[key] = arr
    stats = SufficientStatistics(arrays["nk"], arrays["sx"], arrays["sxx"], int(n), 0.0, np.zeros(n_features),
                                 covariance_type)  # type: ignore[arg-type]
    return NoisyStatisticsReply(head.client_id, STATUS_OK, stats, head.reason, (float(eps), float(delta)))


# ---------------------------------------------------------------------------- server
def _diagonal(stats: SufficientStatistics) -> np.ndarray:
    sxx = stats.sxx
    return {"full": lambda: np.einsum("kii->ki", sxx), "tied": lambda: np.diag(sxx)[None, :],
            "diag": lambda: sxx, "spherical": lambda: sxx[:, None]}[stats.covariance_type]()  # fmt: skip


def noisy_problem(stats: SufficientStatistics, noise: Any, bound: float, sigmas: float = NOISE_BOUND_SIGMAS) -> str | None:
    """Why noisy statistics cannot come from an honest client, or None.

    Residuals are clipped to ``bound``, so an honest client's ``N_k ∈ [0, n]``, every
    ``|Σ r ρ|`` entry ``≤ N_k·B_r`` and every second-moment diagonal entry in
    ``[0, N_k·B_r²]`` (tied: the sum over k), before noise of known σ; each bound is
    widened by ``sigmas`` noise standard deviations.
    """
    t = sigmas
    nk = stats.nk
    if np.any(nk < -t * noise.count):
        return f"a noisy count {float(nk.min()):.4g} is below -{t:g} noise standard deviations"
    upper_n = np.maximum(nk, 0.0) + t * noise.count
    if np.any(np.abs(stats.sx) > upper_n[:, None] * bound + t * noise.first):
        return f"a noisy Σ r ρ entry exceeds the clipping bound plus {t:g} noise standard deviations"
    diag = _diagonal(stats)
    cap = upper_n.sum() if stats.covariance_type == "tied" else upper_n
    cap = np.reshape(cap, (-1, 1)) * bound**2 + t * noise.second
    if np.any(diag < -t * noise.second) or np.any(diag > cap):
        return f"a noisy second moment lies outside [0, N_k B_r²] widened by {t:g} noise standard deviations"
    return None


@dataclass(frozen=True)
class NoisyCombined:
    """The robust sum of a private round (None when no client is left) and the decisions."""

    total: SufficientStatistics | None
    decisions: tuple[ClientDecision, ...]


def combine_noisy_statistics(
    stats: list[SufficientStatistics],
    client_ids: list[int],
    *,
    noise: Any,
    bound: float,
    robust: bool,
    max_client_weight: float | None,
    max_count_ratio: float | None,
) -> NoisyCombined:
    """Sum a private round's statistics: noise-aware bounds checks and count caps when ``robust``.

    The exact checks of :func:`fedgmm.federated.robust.check_statistics` (non-negative
    counts, Cauchy–Schwarz, PSD, the log-likelihood range) would reject honest noisy
    clients, so a private round checks :func:`noisy_problem` instead and caps the noisy
    counts (:func:`fedgmm.federated.robust.cap_counts`) knowing their noise: a reply's
    ``n_samples`` is ``Σ_k N_k`` (floored at 1), whose noise has σ ``sqrt(K) · noise.count``.
    """
    ids = client_id_list(len(stats), client_ids)
    if not stats:
        return NoisyCombined(None, ())
    first = stats[0]
    zero = SufficientStatistics.zeros(first.n_components, first.n_features, first.covariance_type, first.shift)
    if not robust:
        return NoisyCombined(sum(stats, zero), ())
    decisions = []
    kept: list[int] = []
    for i, s in enumerate(stats):
        why = noisy_problem(s, noise, bound)
        if why is None:
            kept.append(i)
        else:
            decisions.append(ClientDecision(ids[i], "rejected", why))
    if not kept:
        return NoisyCombined(None, merge_decisions(ids, decisions))
    caps = cap_counts([stats[i].n_samples for i in kept], [ids[i] for i in kept],
                      max_ratio=max_count_ratio, max_client_weight=max_client_weight,
                      count_noise=math.sqrt(first.n_components) * float(noise.count))  # fmt: skip
    scaled = [stats[i] if f == 1.0 else scale_statistics(stats[i], float(f)) for i, f in zip(kept, caps.factors, strict=True)]
    return NoisyCombined(sum(scaled, zero), merge_decisions(ids, decisions, caps.decisions))


def noisy_m_step(
    total: SufficientStatistics,
    white: MixtureState,
    scale: np.ndarray,
    bound: float,
    reg_covar: float,
    second_noise: float = 0.0,
    *,
    count_noise: float = 0.0,
    reseed: bool = False,
) -> MixtureState:
    """The server's M-step on a private round's summed residual statistics: always a valid mixture.

    Parameters
    ----------
    total : SufficientStatistics
        Summed noisy residual statistics (whitened coordinates, about each component's mean).
    white : MixtureState
        The broadcast mixture in whitened coordinates (the residuals' reference means).
    scale : ndarray of shape (d,)
        Per-feature scale back to the federation's coordinates.
    bound : float
        Row bound ``B`` (sets the data-independent ``ψ = B² / (1.5² d)``: 1 when whitened).
        Component k's prior covariance is ``Ψ_k = s Σ_k + (1 − s) ψ I`` with ``Σ_k`` the
        broadcast covariance and ``s`` :data:`PRIOR_PREVIOUS_SHARE`.
    reg_covar : float
        Added to the variances (whitened coordinates).
    second_noise : float
        σ of the noise on each entry of the *summed* second moments (public: the plan's).
        The prior's strength ν is raised to the noise's size — ``2 σ sqrt(d)`` (the spectral
        norm of a symmetric Gaussian noise matrix; ``2 σ`` for diag/spherical; the 2 is
        :data:`NOISE_PRIOR_FACTOR`) over ``Ψ_k``'s smallest variance — so that ``scatter + ν Ψ`` is positive definite with high probability: noise
        eigenvalues are shrunk toward Ψ instead of floored into spurious thin directions.
    count_noise : float
        σ of the noise on each summed ``N_k`` (public: the plan's).
    reseed : bool
        Re-seed weak components — noisy count below
        :func:`~fedgmm.privacy.dpem.weak_threshold` of ``count_noise``, i.e. statistics that
        are mostly noise — by splitting the heaviest one
        (:func:`~fedgmm.privacy.dpem.reseed_weak_components`), so that the next rounds can
        give them rows; a component that lost its rows under noise otherwise keeps the
        count floor's weight for good. For every round but the last (whose mixture is the
        released model). Post-processing: no budget.
    """
    d = total.n_features
    psi = (bound / CLIP_FACTOR) ** 2 / d
    spread = NOISE_PRIOR_FACTOR * second_noise * (math.sqrt(d) if total.covariance_type in ("full", "tied") else 1.0)
    nu = max(PRIOR_COV_STRENGTH, spread / psi)
    # Ψ_k: part the broadcast (previous round's) covariance — already released — part the
    # data-independent ψ I; ν_k sized against Ψ_k's smallest variance, as above.
    scales = PRIOR_PREVIOUS_SHARE * full_covariances(white) + (1.0 - PRIOR_PREVIOUS_SHARE) * psi * np.eye(d)
    strengths = np.maximum(PRIOR_COV_STRENGTH, spread / np.linalg.eigvalsh(scales)[:, 0])
    # The eigenvalue floor stays EIGEN_FLOOR · ψ (Prior.floor is relative to Ψ's mean variance).
    floor = EIGEN_FLOOR * psi / float(np.mean(np.einsum("kii->ki", scales)))
    prior = Prior(scale=scales, mean_strength=PRIOR_MEAN_STRENGTH, cov_strength=strengths, floor=floor)
    step = noise_aware_m_step(total, prior, reg_covar=reg_covar)
    # Post-processing (no budget): rows lie in the ball of radius B, so must the means; a
    # component whose noisy count is near zero would otherwise carry a mean far outside it.
    weights, means, covariances = step.weights, step.means + white.means, step.covariances
    if reseed:
        # A split pays off only if each half keeps more rows than the prior's ν pseudo-rows
        # (the noise's size): otherwise both halves' covariances would be mostly noise.
        threshold = weak_threshold(count_noise)
        weights, means, covariances, _ = reseed_weak_components(
            weights, means, covariances, total.nk, white.covariance_type, threshold,
            donor_count=2.0 * max(threshold, nu),
        )
    means, covariances = project_to_ball(means, covariances, white.covariance_type, bound)
    out = MixtureState.from_covariances(weights, means, covariances, white.covariance_type)
    return scale_state(out, scale)

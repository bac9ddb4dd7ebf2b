"""The DP client step of FedGenGMM: a DP-EM local fit (:mod:`fedgmm.privacy.dpem`) and its upload."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, MutableMapping
from dataclasses import replace
from typing import Any

import numpy as np

from fedgmm.federated.local import LocalFitSettings, check_client_data
from fedgmm.federated.messages import STATUS_EXCLUDED, STATUS_OK, LocalModelReply

#: Local K of FedGenGMM's DP local fit (every component pays noise on its statistics), capped
#: at the asked-for K. A data-independent choice: no budget is spent on selecting it. Measured for
#: issue 10 at ε = 8 (FedGenGMM's gap to centralized, nats/sample; ν = 5, random start): K = 4 → 11.9,
#: 8 → 12.0; with the second-moment radius 0.7 · B (:data:`~fedgmm.privacy.dpem.DEFAULT_SECOND_FRACTION`,
#: half the covariance noise), K = 4 → 10.19, 8 → 9.12, 12 → 9.08, 16 → 9.41 (seeds 0 and 1).
DP_LOCAL_COMPONENTS = 8
#: Local K and second-moment radius of federated EM's private initialisation upload (the same
#: client step, kept at the values it was measured with).
INIT_LOCAL_COMPONENTS = 4
INIT_SECOND_FRACTION = 1.0
#: What every DP run records as its guarantee (with its epsilon and delta).
GUARANTEE = {
    "accountant": "pld (dp-accounting)",
    "mechanism": "gaussian",
    "neighbours": "add/remove one row",
    "scope": "per client",
}
#: ``noise_source`` of a run whose noise is seeded by each client's secret (the default).
CLIENT_SECRET = "client-secret"
#: ``noise_source`` of a run with ``dp_noise_seed`` set: its noise can be regenerated.
REPRODUCIBLE_SEED = "reproducible-seed (known to the server: no protection against it)"
#: Store key of the client's secret noise entropy (128 bits from the OS, as hex).
STORE_NOISE_SECRET = "dp:noise-secret"
#: Request field of the reproducible noise seed (absent: the clients use their secrets).
NOISE_SEED = "dp-noise-seed"
#: Tag of the DP local fit's noise stream (round 0).
LOCAL_FIT_TAG = 0xD9F


def noise_source(dp_noise_seed: int | None) -> str:
    """What a run's privacy record says its noise was drawn from."""
    return CLIENT_SECRET if dp_noise_seed is None else REPRODUCIBLE_SEED


def noise_generator(
    store: MutableMapping[str, Any] | None, dp_noise_seed: int | None, seed: int, client_id: int, n_round: int, tag: int
) -> np.random.Generator:
    """The Generator of one DP release's noise: the server must not be able to regenerate it.

    Seeded by ``SeedSequence([secret, seed, client_id, n_round, tag])``: ``secret`` is 128
    bits the client draws from the OS (:func:`secrets.randbits`) on its first DP release and
    keeps in ``store`` for the run (None: a fresh secret, kept nowhere); with
    ``dp_noise_seed`` set, that seed replaces the secret — reproducible, and known to
    whoever knows the seed (the server included).
    """
    if dp_noise_seed is not None:
        entropy = int(dp_noise_seed)
    elif store is None:
        entropy = secrets.randbits(128)
    else:
        if STORE_NOISE_SECRET not in store:
            store[STORE_NOISE_SECRET] = format(secrets.randbits(128), "032x")
        entropy = int(str(store[STORE_NOISE_SECRET]), 16)
    return np.random.default_rng(np.random.SeedSequence([entropy, int(seed), int(client_id), int(n_round), int(tag)]))


def guarantee(epsilon: float, delta: float, dp_noise_seed: int | None = None) -> dict[str, Any]:
    """The guarantee record of a run at target ``(epsilon, delta)`` (model metadata, summaries)."""
    return {"epsilon": float(epsilon), "delta": float(delta), **GUARANTEE, "noise_source": noise_source(dp_noise_seed)}


def privacy_record(
    epsilon: float | None, delta: float, spent: Mapping[int, tuple[float, float]], dp_noise_seed: int | None = None
) -> dict[str, Any] | None:
    """The guarantee plus what each client spent (by client id, as str keys), JSON-ready; None if off."""
    if epsilon is None:
        return None
    return {**guarantee(epsilon, delta, dp_noise_seed), "spent": {str(c): [float(e), float(d)] for c, (e, d) in sorted(spent.items())}}


def private_config(settings: LocalFitSettings) -> dict[str, Any]:
    """The request fields of a DP local fit (empty when DP is off)."""
    if settings.epsilon is None:
        return {}
    out: dict[str, Any] = {"dp-epsilon": float(settings.epsilon), "dp-delta": float(settings.delta)}
    if settings.clip_bound is not None:
        out["dp-clip-bound"] = float(settings.clip_bound)
    if settings.feature_scale:
        out["dp-feature-scale"] = [float(v) for v in settings.feature_scale]
    if settings.dp_noise_seed is not None:
        out[NOISE_SEED] = int(settings.dp_noise_seed)
    return out


def private_settings_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`private_config`: :class:`LocalFitSettings` keyword arguments."""
    if "dp-epsilon" not in cfg:
        return {}
    bound = cfg.get("dp-clip-bound")
    noise_seed = cfg.get(NOISE_SEED)
    return {
        "epsilon": float(cfg["dp-epsilon"]),
        "delta": float(cfg["dp-delta"]),
        "clip_bound": None if bound is None else float(bound),
        "feature_scale": tuple(float(v) for v in cfg.get("dp-feature-scale", [])),
        "dp_noise_seed": None if noise_seed is None else int(noise_seed),
    }


def dp_local_settings(local: LocalFitSettings, variances: np.ndarray | None) -> LocalFitSettings:
    """``local`` with the data-independent clipping scale of a DP run.

    Parameters
    ----------
    local : LocalFitSettings
    variances : ndarray of shape (p,) or None
        Per-axis variances of the federation's preprocessed coordinates (the transform's).

    Raises
    ------
    ValueError
        DP is on, but neither a preprocessing transform nor ``clip_bound`` bounds the rows.
    """
    if local.epsilon is None:
        return local
    if variances is None:
        if local.clip_bound is None:
            raise ValueError(
                "epsilon is set but nothing bounds a row's norm independently of the data: enable federated "
                "preprocessing (standardize or pca), whose per-axis scale sets the clipping bound, or pass "
                "clip_bound (a public bound on the rows' Euclidean norm)."
            )
        return local
    var = np.asarray(variances, dtype=np.float64)
    positive = var[np.isfinite(var) & (var > 0)]
    floor = 1e-6 * float(positive.max()) if positive.size else 1.0
    scale = np.sqrt(np.where(np.isfinite(var) & (var > floor), var, floor))
    return replace(local, feature_scale=tuple(float(v) for v in scale))


def upload_count_noise(settings: LocalFitSettings, *, local_components: int = DP_LOCAL_COMPONENTS) -> float | None:
    """σ of the DP noise on an honest upload's count, as the server computes it (None: DP off).

    :func:`fit_private_local_model` sends ``max(1, round(noisy_count))`` of a DP-EM fit with
    K = ``min(k_max, local_components)``; the noise's σ
    (:func:`~fedgmm.privacy.dpem.noisy_count_noise`) follows from the request's ``(ε, δ)``,
    that K and the DP-EM constants — all public, so no client-sent σ is needed or trusted.
    With per-client K ranges the largest K is taken (the largest σ: no honest client is
    held to a tighter cap than its own noise).

    Parameters
    ----------
    settings : LocalFitSettings
        What the server asked the clients for (``epsilon`` the target of this upload).
    local_components : int
        The K cap the client step uses (:data:`DP_LOCAL_COMPONENTS`, or
        :data:`INIT_LOCAL_COMPONENTS` for federated EM's initialisation upload).
    """
    if settings.epsilon is None:
        return None
    from fedgmm.privacy.dpem import noisy_count_noise

    k_max = max(hi for _, hi in settings.per_client) if settings.per_client else settings.k_max
    return noisy_count_noise(float(settings.epsilon), float(settings.delta), max(1, min(int(k_max), local_components)))


def fit_private_local_model(
    X: np.ndarray, settings: LocalFitSettings, *, client_id: int, seed: int, store: MutableMapping[str, Any] | None = None,
    local_components: int = DP_LOCAL_COMPONENTS, second_fraction: float | None = None,
) -> LocalModelReply:
    """FedGenGMM's client step under record-level (ε, δ)-DP.

    The local model is :func:`~fedgmm.privacy.dpem.fit_dp_local` with its defaults
    (K = ``min(k_max, local_components)``, a data-independent start, two spherical steering
    iterations and one final release that gets most of the budget; rows divided by the public
    ``feature_scale`` and clipped to :func:`~fedgmm.privacy.clipping.chi_bound` of d, or
    clipped to ``clip_bound``); the upload's count is the DP noisy count, and it carries the
    spent ``(ε, δ)``. The true row count, K caps and clipping counts are never sent. The
    noise comes from :func:`noise_generator` (the client's secret kept in ``store``, or
    ``settings.dp_noise_seed``). ``local_components`` and ``second_fraction`` (the
    second-moment residual radius as a fraction of B; None: the DP-EM default) are public
    constants of the caller (federated EM's initialisation passes its own).

    Returns
    -------
    LocalModelReply
        ``privacy = (epsilon, delta)`` spent, ``reg_covar = 0``; or ``excluded`` with the reason.
    """
    from fedgmm.privacy.dpem import DEFAULT_SECOND_FRACTION, fit_dp_local

    epsilon = settings.epsilon
    assert epsilon is not None
    X = np.asarray(X)
    problem = check_client_data(X)
    if not problem:
        try:
            settings = settings.for_client(client_id)
        except ValueError as exc:
            problem = str(exc)
    if problem:
        return LocalModelReply(client_id, STATUS_EXCLUDED, 0, None, problem)
    scale = np.asarray(settings.feature_scale) if settings.feature_scale else None
    try:
        res = fit_dp_local(
            X.astype(np.float64, copy=False), n_components=min(settings.k_max, local_components),
            epsilon=epsilon, delta=settings.delta, covariance_type=settings.covariance_type,
            feature_scale=scale, bound=settings.clip_bound if scale is None else None,
            random_state=noise_generator(store, settings.dp_noise_seed, seed, client_id, 0, LOCAL_FIT_TAG),
            second_fraction=DEFAULT_SECOND_FRACTION if second_fraction is None else float(second_fraction),
        )
    except ValueError as exc:
        return LocalModelReply(client_id, STATUS_EXCLUDED, 0, None, f"DP local fit failed: {exc}")
    count = max(1, round(res.noisy_count))
    reason = f"DP-EM local fit: epsilon={res.epsilon:.4g}, delta={res.delta:.3g}; count is the noisy count."
    return LocalModelReply(
        client_id, STATUS_OK, count, res.state, reason, reg_covar=0.0, privacy=(float(res.epsilon), float(res.delta))
    )

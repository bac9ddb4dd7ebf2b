"""The client: one handler that answers every server request from the client's own data."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import numpy as np
from flwr.app import RecordDict

from fedgmm.federated.local import (
    DEFAULT_AUTO_REG_FACTOR,
    LocalFitSettings,
    data_moments,
    em_statistics,
    fit_local_model,
)
from fedgmm.federated.messages import (
    LocalModelReply,
    decode_request,
    encode_ack,
    encode_local_model,
    encode_moments,
    encode_statistics,
    state_from_arrays,
)
from fedgmm.federated.private import (
    fit_private_local_model,
    private_config,
    private_settings_fields,
)
from fedgmm.federated.private_rounds import TOTAL_EPSILON, noisy_round, private_init_upload

FIT_LOCAL = "fit-local"
EM_STATISTICS = "em-statistics"
MOMENTS = "moments"
DOWNLOAD = "download"
KINDS = (FIT_LOCAL, EM_STATISTICS, MOMENTS, DOWNLOAD)


def local_fit_settings(cfg: dict[str, Any]) -> LocalFitSettings:
    """The :class:`LocalFitSettings` carried by a ``fit-local`` request."""
    return LocalFitSettings(
        covariance_type=cfg["covariance-type"],
        k_min=int(cfg["local-k-min"]),
        k_max=int(cfg["local-k-max"]),
        reg_covar=float(cfg["reg-covar"]),
        max_iter=int(cfg["max-iter"]),
        tol=float(cfg["tol"]),
        n_init=int(cfg["n-init"]),
        min_samples_per_component=int(cfg["min-samples-per-component"]),
        reg_covar_mode=str(cfg.get("reg-covar-mode", "absolute")),
        reg_covar_factor=float(cfg.get("reg-covar-factor", DEFAULT_AUTO_REG_FACTOR)),
        per_client=tuple(
            (int(lo), int(hi))
            for lo, hi in zip(cfg.get("local-k-min-per-client", []), cfg.get("local-k-max-per-client", []), strict=True)
        ),
        **private_settings_fields(cfg),
    )


def local_fit_config(settings: LocalFitSettings, seed: int) -> dict[str, Any]:
    """Inverse of :func:`local_fit_settings`: the request fields of a local fit."""
    out: dict[str, Any] = {
        "covariance-type": settings.covariance_type,
        "local-k-min": settings.k_min,
        "local-k-max": settings.k_max,
        "reg-covar": float(settings.reg_covar),
        "max-iter": settings.max_iter,
        "tol": float(settings.tol),
        "n-init": settings.n_init,
        "min-samples-per-component": settings.min_samples_per_component,
        "reg-covar-mode": settings.reg_covar_mode,
        "reg-covar-factor": float(settings.reg_covar_factor),
        "seed": int(seed),
    }
    if settings.per_client:
        out["local-k-min-per-client"] = [int(lo) for lo, _ in settings.per_client]
        out["local-k-max-per-client"] = [int(hi) for _, hi in settings.per_client]
    out.update(private_config(settings))
    return out


def _apply_transform(X: np.ndarray, cfg: dict[str, Any], arrays: dict[str, np.ndarray], store: MutableMapping[str, Any]) -> np.ndarray:
    """Apply the federated preprocessing transform ``(X − mean) @ W`` if the request names one.

    The transform arrays come with the first request that uses them and are kept in the
    client's ``store`` for later requests, which only carry its id.
    """
    transform_id = cfg.get("transform-id", "")
    if not transform_id:
        return X
    if "transform-mean" in arrays:
        store[f"transform:{transform_id}"] = (arrays["transform-mean"], arrays["transform-matrix"])
    try:
        mean, matrix = store[f"transform:{transform_id}"]
    except KeyError:
        raise ValueError(f"request names transform {transform_id!r}, which this client has not received.") from None
    if X.ndim != 2 or X.shape[0] == 0:
        return X
    if X.shape[1] != mean.shape[0]:
        raise ValueError(f"client data has {X.shape[1]} features, the transform expects {mean.shape[0]}.")
    return np.asarray((X - mean) @ matrix)


def handle_request(
    request: RecordDict, X: np.ndarray, client_id: int, store: MutableMapping[str, Any] | None = None
) -> RecordDict:
    """Answer one server request from the client's data ``X`` (shape ``(n_c, d)``).

    Parameters
    ----------
    request : RecordDict
        Built by :func:`fedgmm.federated.messages.encode_request`.
    X : ndarray of shape (n_c, d)
        The client's raw data; it never leaves this function, only statistics do.
    client_id : int
        The client's partition/data id (replies carry it so the server orders them).
    store : mutable mapping, optional
        State kept between requests of one run (Flower's ``context.state`` analogue);
        holds the preprocessing transform, the secret that seeds a DP release's noise
        (:func:`fedgmm.federated.private.noise_generator`) and, in a private federated EM
        run, the client's privacy ledger (:mod:`fedgmm.federated.private_rounds`).

    Returns
    -------
    RecordDict
        The reply; unusable data gives an ``excluded`` reply with the reason.

    Raises
    ------
    ValueError
        For a request this client cannot understand (an unknown kind).
    """
    store = {} if store is None else store
    kind, cfg, arrays = decode_request(request)
    X = np.asarray(X)
    if kind not in KINDS:
        raise ValueError(f"unknown request kind {kind!r}; expected one of {list(KINDS)}.")
    if kind == MOMENTS:
        return encode_moments(data_moments(X, client_id))
    X = _apply_transform(X, cfg, arrays, store)
    if kind == FIT_LOCAL and TOTAL_EPSILON in cfg:
        return private_init_upload(X, local_fit_settings(cfg), cfg, client_id, store)
    if kind == FIT_LOCAL:
        fit_settings = local_fit_settings(cfg)
        reply: LocalModelReply
        if fit_settings.epsilon is not None:
            reply = fit_private_local_model(X, fit_settings, client_id=client_id, seed=int(cfg["seed"]), store=store)
        else:
            reply = fit_local_model(X, fit_settings, client_id=client_id, seed=int(cfg["seed"]))
        return encode_local_model(reply)
    if kind == EM_STATISTICS:
        state = state_from_arrays(arrays, cfg["covariance-type"])
        if TOTAL_EPSILON in cfg:
            return noisy_round(X, state, cfg, client_id, store)
        stats, reason = em_statistics(X, state, np.asarray(arrays["shift"], dtype=np.float64))
        return encode_statistics(client_id, stats, reason)
    # DOWNLOAD: keep the global model; acknowledge with the client id only.
    store["global-model"] = state_from_arrays(arrays, cfg["covariance-type"])
    return encode_ack(client_id)


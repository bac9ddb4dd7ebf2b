"""Messages between server and clients as Flower ``RecordDict``s, their byte size, and payload checks.

Every message of every algorithm is built and read here, so the in-process runner and the
Flower app exchange exactly the same records, and the bytes counted in one are the bytes
counted in the other. Arrays travel as Flower ``Array``s (``numpy.save`` bytes, loaded with
``allow_pickle=False``); scalars travel in a ``ConfigRecord``. Anything a client sends is
decoded by a ``decode_*`` function that checks it before it can reach the model: a
malformed or hostile payload raises :class:`~fedgmm.exceptions.PayloadError` and is
recorded, never merged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedgmm.em.stats import SufficientStatistics
from fedgmm.exceptions import DegenerateCovarianceError, PayloadError
from fedgmm.mixture import MixtureState, covariance_shape
from fedgmm.types import COVARIANCE_TYPES

#: Largest sample count a client may claim (beyond it the claim is treated as hostile).
MAX_CLIENT_SAMPLES = 10**12
#: Largest number of components a local model may carry.
MAX_COMPONENTS = 10_000
#: Largest feature count accepted in a payload.
MAX_FEATURES = 100_000

CONFIG = "config"
MODEL = "model"
STATS = "stats"
MOMENTS = "moments"

STATUS_OK = "ok"
STATUS_EXCLUDED = "excluded"


def payload_nbytes(content: RecordDict) -> int:
    """Bytes of ``content`` as Flower 1.42 transmits it (the sum of its deflated objects).

    Flower splits a message's ``RecordDict`` into content-addressed objects (records,
    arrays, array chunks) and sends each one's ``deflate()`` bytes; this adds them up. It
    leaves out Flower's per-message envelope (ids, TTL, timestamps) and HTTP framing.
    """
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    return int(sum(len(obj.deflate()) for obj in get_all_nested_objects(content).values()))


# ---------------------------------------------------------------------------- helpers
def _array_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(np.ascontiguousarray(a)) for name, a in arrays.items()})


def _config(content: RecordDict) -> ConfigRecord:
    if CONFIG not in content.config_records:
        raise PayloadError("payload has no 'config' record.")
    return content.config_records[CONFIG]


def _get(cfg: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str = "payload") -> Any:
    if key not in cfg:
        raise PayloadError(f"{what} lacks the field {key!r}.")
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise PayloadError(f"{what} field {key!r} has type {type(value).__name__}, expected {kind}.")
    return value


def _arrays(content: RecordDict, name: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    if name not in content.array_records:
        raise PayloadError(f"payload has no {name!r} array record.")
    record = content.array_records[name]
    missing = [k for k in keys if k not in record]
    if missing:
        raise PayloadError(f"payload's {name!r} record lacks {missing}.")
    out: dict[str, np.ndarray] = {}
    for key in keys:
        try:
            arr = record[key].numpy()
        except Exception as exc:  # a corrupt .npy body, an object dtype refused by allow_pickle=False
            raise PayloadError(f"payload array {key!r} cannot be read: {exc}") from exc
        if arr.dtype.kind not in "fiu":
            raise PayloadError(f"payload array {key!r} has dtype {arr.dtype}; only numeric arrays are accepted.")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise PayloadError(f"payload array {key!r} contains NaN or infinity.")
        out[key] = arr
    return out


def _check_count(value: int, name: str, low: int = 0, high: int = MAX_CLIENT_SAMPLES) -> int:
    if not low <= value <= high:
        raise PayloadError(f"{name}={value} is outside the plausible range [{low}, {high}].")
    return int(value)


@dataclass(frozen=True)
class ReplyHeader:
    """The fields every client reply starts with (read by :func:`read_header`)."""

    config: ConfigRecord
    client_id: int
    status: str
    reason: str


def read_header(content: RecordDict) -> ReplyHeader:
    """Read and check a reply's ``client-id``, ``status`` and ``reason`` (cut to 2000 characters).

    Raises
    ------
    PayloadError
        No config record, a missing or mistyped field, an implausible client id, or a
        status other than ``"ok"`` and ``"excluded"``.
    """
    cfg = _config(content)
    client_id = _check_count(_get(cfg, "client-id", int), "client-id", 0, 2**31)
    status = _get(cfg, "status", str)
    reason = _get(cfg, "reason", str)[:2000]
    if status not in (STATUS_OK, STATUS_EXCLUDED):
        raise PayloadError(f"unknown status {status!r}.")
    return ReplyHeader(cfg, client_id, status, reason)


#: The diagonal entries of each covariance type's second-moment array, ``(K, d)`` or ``(d,)``.
_SECOND_MOMENT_DIAGONAL: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "full": lambda sxx: np.einsum("kii->ki", sxx),
    "tied": lambda sxx: np.diag(sxx),
    "diag": lambda sxx: sxx,
    "spherical": lambda sxx: sxx,
}


# ---------------------------------------------------------------------------- requests
def encode_request(kind: str, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> RecordDict:
    """A server→client request: the task ``kind``, its settings and optional arrays.

    Parameters
    ----------
    kind : str
        Task name the client dispatches on (``"fit-local"``, ``"em-statistics"``, …).
    settings : mapping of str to int, float, str, bool or a list of them
    arrays : mapping of str to ndarray, optional
        E.g. the current global mixture and the statistics' reference point.
    """
    content = RecordDict({CONFIG: ConfigRecord({"kind": kind, **dict(settings)})})
    if arrays:
        content[MODEL] = _array_record(arrays)
    return content


def decode_request(content: RecordDict) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`encode_request` (on the client; the server is trusted there)."""
    cfg = dict(_config(content))
    kind = _get(cfg, "kind", str, "request")
    arrays: dict[str, np.ndarray] = {}
    if MODEL in content.array_records:
        arrays = {k: v.numpy() for k, v in content.array_records[MODEL].items()}
    return kind, cfg, arrays


def state_arrays(state: MixtureState, prefix: str = "") -> dict[str, np.ndarray]:
    """The arrays of a mixture, keyed ``weights``/``means``/``covariances`` (optionally prefixed)."""
    return {prefix + k: v for k, v in state.to_arrays().items()}


def state_from_arrays(
    arrays: Mapping[str, np.ndarray], covariance_type: str, prefix: str = ""
) -> MixtureState:
    """A validated mixture from request/reply arrays; :class:`PayloadError` when invalid."""
    if covariance_type not in COVARIANCE_TYPES:
        raise PayloadError(f"unknown covariance type {covariance_type!r}.")
    try:
        return MixtureState.from_arrays(
            {k: arrays[prefix + k] for k in ("weights", "means", "covariances")},
            covariance_type,  # type: ignore[arg-type]
        )
    except KeyError as exc:
        raise PayloadError(f"mixture arrays lack {exc}.") from exc
    except (ValueError, DegenerateCovarianceError) as exc:
        raise PayloadError(f"invalid mixture parameters: {exc}") from exc


# ---------------------------------------------------------------------------- replies
@dataclass(frozen=True)
class LocalModelReply:
    """A client's one-shot upload: its local mixture and sample count, or why it has none.

    Attributes
    ----------
    client_id : int
    status : {"ok", "excluded"}
    n_samples : int
        ``n_c``.
    state : MixtureState or None
        The local model ``θ_c`` (None when excluded).
    reason : str
        Why the client is excluded, or what it changed (e.g. a smaller K); empty if nothing.
    bic : dict of int to float
        BIC per candidate K when K was chosen by BIC.
    reg_covar : float or None
        The ``reg_covar`` the client's fit added (None: not reported; the server assumes
        the one it asked for).
    privacy : (float, float) or None
        The ``(epsilon, delta)`` a DP local fit spent (None: not private).
    """

    client_id: int
    status: str
    n_samples: int
    state: MixtureState | None
    reason: str = ""
    bic: Mapping[int, float] | None = None
    reg_covar: float | None = None
    privacy: tuple[float, float] | None = None


def encode_local_model(reply: LocalModelReply) -> RecordDict:
    """Client side: the upload of FedGenGMM (and of the k-means++ / hybrid initialisations)."""
    cfg: dict[str, Any] = {
        "client-id": int(reply.client_id),
        "status": reply.status,
        "n-samples": int(reply.n_samples),
        "reason": reply.reason,
    }
    content = RecordDict()
    if reply.state is not None:
        cfg["covariance-type"] = reply.state.covariance_type
        content[MODEL] = _array_record(state_arrays(reply.state))
    if reply.reg_covar is not None:
        cfg["reg-covar"] = float(reply.reg_covar)
    if reply.privacy is not None:
        cfg["dp-epsilon"], cfg["dp-delta"] = (float(v) for v in reply.privacy)
    if reply.bic:
        cfg["bic-k"] = [int(k) for k in reply.bic]
        cfg["bic-value"] = [float(v) for v in reply.bic.values()]
    content[CONFIG] = ConfigRecord(cfg)
    return content


def decode_local_model(
    content: RecordDict, *, covariance_type: str, n_features: int | None = None
) -> LocalModelReply:
    """Server side: read and check a local-model upload.

    Parameters
    ----------
    content : RecordDict
    covariance_type : str
        The type the server asked for; anything else is rejected.
    n_features : int, optional
        Expected d; a model of another dimension is rejected.

    Raises
    ------
    PayloadError
        Missing fields, wrong types, non-finite or mis-shaped arrays, weights off the
        simplex, covariances that are not symmetric positive definite, absurd counts.
    """
    head = read_header(content)
    cfg, client_id, reason = head.config, head.client_id, head.reason
    n_samples = _check_count(_get(cfg, "n-samples", int), "n-samples")
    if head.status == STATUS_EXCLUDED:
        return LocalModelReply(client_id, head.status, n_samples, None, reason)
    got_type = _get(cfg, "covariance-type", str)
    if got_type != covariance_type:
        raise PayloadError(f"local model has covariance type {got_type!r}, the server asked for {covariance_type!r}.")
    arrays = _arrays(content, MODEL, ("weights", "means", "covariances"))
    means = arrays["means"]
    if means.ndim != 2:
        raise PayloadError(f"means must be 2-D, got shape {means.shape}.")
    k, d = means.shape
    _check_count(k, "n_components", 1, MAX_COMPONENTS)
    _check_count(d, "n_features", 1, MAX_FEATURES)
    if n_features is not None and d != n_features:
        raise PayloadError(f"local model has {d} features, the federation has {n_features}.")
    if n_samples < 1:
        raise PayloadError("a local model must come with n-samples >= 1.")
    expected = covariance_shape(covariance_type, k, d)
    if arrays["weights"].shape != (k,) or arrays["covariances"].shape != expected:
        raise PayloadError(
            f"array shapes disagree: weights {arrays['weights'].shape}, means {means.shape}, "
            f"covariances {arrays['covariances'].shape} (expected {expected})."
        )
    state = state_from_arrays(arrays, covariance_type)
    bic = None
    if "bic-k" in cfg:
        ks, vals = cfg["bic-k"], cfg.get("bic-value", [])
        if not (isinstance(ks, list) and isinstance(vals, list)):
            raise PayloadError("bic-k and bic-value must be lists.")
        if len(ks) != len(vals):
            raise PayloadError(f"bic-k and bic-value must be lists of equal length, got {len(ks)} and {len(vals)}.")
        if len(ks) > 1000:
            raise PayloadError(f"bic-k and bic-value hold {len(ks)} entries; at most 1000 are accepted.")
        try:
            bic = {int(a): float(b) for a, b in zip(ks, vals, strict=True)}  # type: ignore[call-overload, arg-type]
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"bic-k/bic-value are not numbers: {exc}") from exc
    reg = None
    if "reg-covar" in cfg:
        reg = _get(cfg, "reg-covar", float)
        if not (np.isfinite(reg) and reg >= 0):
            raise PayloadError(f"reg-covar must be a finite number >= 0, got {reg!r}.")
    privacy = None
    if "dp-epsilon" in cfg:
        privacy = (_get(cfg, "dp-epsilon", float), _get(cfg, "dp-delta", float))
        if not (np.isfinite(privacy[0]) and privacy[0] > 0 and 0 < privacy[1] < 1):
            raise PayloadError(f"dp-epsilon/dp-delta must be > 0 and in (0, 1), got {privacy!r}.")
    return LocalModelReply(client_id, STATUS_OK, n_samples, state, reason, bic, reg_covar=reg, privacy=privacy)


def encode_statistics(client_id: int, stats: SufficientStatistics | None, reason: str = "") -> RecordDict:
    """Client side: federated EM's E-step reply (or an exclusion with its reason)."""
    cfg: dict[str, Any] = {"client-id": int(client_id), "reason": reason}
    content = RecordDict()
    if stats is None:
        cfg.update({"status": STATUS_EXCLUDED, "n-samples": 0})
    else:
        cfg.update(
            {
                "status": STATUS_OK,
                "n-samples": int(stats.n_samples),
                "log-likelihood": float(stats.log_likelihood),
                "covariance-type": stats.covariance_type,
            }
        )
        content[STATS] = _array_record({"nk": stats.nk, "sx": stats.sx, "sxx": stats.sxx, "shift": stats.shift})
    content[CONFIG] = ConfigRecord(cfg)
    return content


@dataclass(frozen=True)
class StatisticsReply:
    """A client's E-step statistics (``stats`` None when the client excluded itself)."""

    client_id: int
    status: str
    stats: SufficientStatistics | None
    reason: str = ""


def decode_statistics(
    content: RecordDict,
    *,
    covariance_type: str,
    n_components: int,
    n_features: int,
    shift: np.ndarray,
) -> StatisticsReply:
    """Server side: read and check E-step statistics against the broadcast model.

    Raises
    ------
    PayloadError
        Wrong shapes or type, non-finite values (the log-likelihood sum included),
        negative counts, ``Σ N_k`` not equal to ``n-samples``, a shift other than the one
        broadcast, or second moments with a negative diagonal (they cannot come from real
        data). The size of the log-likelihood sum is not checked.
    """
    head = read_header(content)
    cfg, client_id, reason = head.config, head.client_id, head.reason
    if head.status == STATUS_EXCLUDED:
        return StatisticsReply(client_id, head.status, None, reason)
    if _get(cfg, "covariance-type", str) != covariance_type:
        raise PayloadError("statistics of another covariance type.")
    n = _check_count(_get(cfg, "n-samples", int), "n-samples", 1)
    ll = float(_get(cfg, "log-likelihood", (float, int)))
    if not np.isfinite(ll):
        raise PayloadError("log-likelihood is not finite.")
    arrays = _arrays(content, STATS, ("nk", "sx", "sxx", "shift"))
    k, d = n_components, n_features
    expected = {"nk": (k,), "sx": (k, d), "sxx": covariance_shape(covariance_type, k, d), "shift": (d,)}
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise PayloadError(f"statistic {key!r} has shape {arrays[key].shape}, expected {shape}.")
    if not np.array_equal(arrays["shift"], shift):
        raise PayloadError("statistics were computed about another reference point than the one broadcast.")
    nk = arrays["nk"]
    if np.any(nk < 0) or not np.isclose(nk.sum(), n, rtol=1e-6, atol=1e-6):
        raise PayloadError(f"responsibility counts must be >= 0 and sum to n-samples={n}, they sum to {nk.sum():.6g}.")
    sxx = arrays["sxx"]
    diag = _SECOND_MOMENT_DIAGONAL[covariance_type](sxx)
    if np.any(diag < -1e-9 * max(1.0, float(np.abs(sxx).max()))):
        raise PayloadError("second moments have negative diagonal entries; they cannot come from real data.")
    stats = SufficientStatistics(
        nk=nk, sx=arrays["sx"], sxx=sxx, n_samples=n, log_likelihood=ll,
        shift=np.asarray(shift, dtype=np.float64), covariance_type=covariance_type,  # type: ignore[arg-type]
    )
    return StatisticsReply(client_id, STATUS_OK, stats, reason)


def encode_ack(client_id: int, note: str = "") -> RecordDict:
    """Client side: a bare acknowledgement (of a model download)."""
    return RecordDict({CONFIG: ConfigRecord({"client-id": int(client_id), "status": STATUS_OK, "reason": note})})


def decode_ack(content: RecordDict) -> int:
    """Server side: the client id of an acknowledgement."""
    cfg = _config(content)
    return _check_count(_get(cfg, "client-id", int), "client-id", 0, 2**31)


@dataclass(frozen=True)
class MomentsReply:
    """A client's data moments for federated preprocessing: count, Σx, Σxxᵀ."""

    client_id: int
    status: str
    count: int
    total: np.ndarray | None
    outer: np.ndarray | None
    reason: str = ""


def encode_moments(reply: MomentsReply) -> RecordDict:
    """Client side: the moments upload of federated standardisation/PCA."""
    cfg: dict[str, Any] = {
        "client-id": int(reply.client_id), "status": reply.status, "n-samples": int(reply.count), "reason": reply.reason,
    }
    content = RecordDict({CONFIG: ConfigRecord(cfg)})
    if reply.total is not None and reply.outer is not None:
        content[MOMENTS] = _array_record({"sum": reply.total, "outer": reply.outer})
    return content


def decode_moments(content: RecordDict, *, n_features: int | None = None) -> MomentsReply:
    """Server side: read and check a moments upload (shapes, symmetry, Cauchy–Schwarz)."""
    head = read_header(content)
    cfg, client_id, reason = head.config, head.client_id, head.reason
    count = _check_count(_get(cfg, "n-samples", int), "n-samples")
    if head.status == STATUS_EXCLUDED:
        return MomentsReply(client_id, head.status, count, None, None, reason)
    if count < 1:
        raise PayloadError("moments must come with n-samples >= 1.")
    arrays = _arrays(content, MOMENTS, ("sum", "outer"))
    total, outer = arrays["sum"], arrays["outer"]
    if total.ndim != 1:
        raise PayloadError(f"sum must be 1-D, got shape {total.shape}.")
    d = total.shape[0]
    _check_count(d, "n_features", 1, MAX_FEATURES)
    if n_features is not None and d != n_features:
        raise PayloadError(f"moments have {d} features, the federation has {n_features}.")
    if outer.shape != (d, d) or not np.allclose(outer, outer.T, rtol=1e-10, atol=1e-8):
        raise PayloadError("outer-product sum must be a symmetric (d, d) matrix.")
    # A real scatter matrix minus the mean's outer product is positive semi-definite.
    centred = outer - np.outer(total, total) / count
    if np.any(np.diag(centred) < -1e-6 * max(1.0, float(np.abs(np.diag(outer)).max()))):
        raise PayloadError("moments are inconsistent (negative variance); they cannot come from real data.")
    return MomentsReply(client_id, STATUS_OK, count, total, outer, reason)

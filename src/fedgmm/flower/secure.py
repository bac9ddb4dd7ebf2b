"""Secure aggregation of federated EM's E-step statistics with Flower's SecAgg+: the server sees only their sum.

Flower's SecAgg+ (``flwr.server.workflow.SecAggPlusWorkflow`` on the server,
``flwr.client.mod.secaggplus_mod`` on the ClientApp; no cryptography here) sums integer
vectors modulo ``M``: each client clips its float vector to ``[-c, c]``, maps it onto
``{0, …, Q}`` with stochastic rounding, adds pairwise and private masks and uploads the
result; the server only ever holds masked vectors and, after the unmask stage, their sum.

What a client puts in its vector (:func:`statistics_vector`), each block divided by a
public bound so that every entry lies in ``[-1, 1]`` (``c = 1``):

==========================  ===========================  ==============================
block                        entries                      divided by
==========================  ===========================  ==============================
rows ``n_c``                 1                            ``n_max``
``N_k``                      K                            ``n_max``
``Σ r (x − s)``              K·d                          ``n_max·R``
``Σ r (x − s)(x − s)ᵀ``      K·d·d / K·d / K / d·d        ``n_max·R²``
``Σ (ℓ_i − L_hi)``           1                            ``n_max·(L_hi − L_lo)``
==========================  ===========================  ==============================

``n_max`` is ``secure-max-samples``; ``R = B + ‖s‖`` with ``B`` = ``secure-row-bound``
(a row norm bound in the model's feature space) and ``s`` the round's reference point,
so ``|x_j − s_j| ≤ R`` and ``|(x − s)_i (x − s)_j| ≤ R²`` for every row; ``[L_lo, L_hi]``
bounds one row's log-likelihood under the broadcast mixture for ``‖x‖ ≤ B``
(:func:`loglik_range`). A client whose scaled vector leaves ``[-1, 1]`` (more than
``n_max`` rows, or rows beyond ``B``) refuses with an error instead of being clipped in
silence; SecAgg+ then treats it as a dropout and the sum is over the others.

Quantisation (:func:`quantization_range`, :func:`encode_limbs`, :func:`error_bounds`):
``Q`` is the largest power of two with ``n·Q < M`` (``M = 2³²``, ``n`` nodes) and at most
2³⁰, so the sum of ``n`` quantised entries (each ``≤ Q``) never wraps the modulus (a wrap
would turn a large sum into a small one, silently), and ``Q`` fits Flower's int32
rounding (``flwr/common/secure_aggregation/quantization.py``, ``_stochastic_round``).
With one limb, stochastic rounding moves each entry of one client by less than one step
``2/Q``: each entry of the sum is off by less than ``2n/Q`` times its block's divisor
(~2·10⁻⁹ for 3 nodes). That is not enough for full covariances with tight components
(measured: digits, PCA 16, K = 10 loses 1.4 nats/sample and fails the robust
log-likelihood check), so by default each entry travels as two limbs: a high limb
exactly on Flower's grid (exact, since ``Q`` is a power of two) and the remainder,
quantised; the error is then ``< 2n/Q²`` plus float64 round-off. The rounding is unbiased.

The server (:class:`SecureFlowerTransport`) turns the sum back into one
:class:`~fedgmm.em.stats.SufficientStatistics`, projects it onto what real rows can
produce when the violation is within the quantisation error (:func:`make_consistent`),
and hands it to federated EM as one reply standing for all contributors. Per-client
checks (plausibility against the other clients, count caps, per-client rejection) are
impossible on a sum; the checks of a single contribution still run on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Parameters,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey

from fedgmm.em.stats import SufficientStatistics
from fedgmm.federated.client import EM_STATISTICS
from fedgmm.federated.messages import (
    CONFIG,
    STATS,
    STATUS_EXCLUDED,
    STATUS_OK,
    decode_request,
    encode_request,
    encode_statistics,
    payload_nbytes,
    state_from_arrays,
)
from fedgmm.federated.transport import Reply
from fedgmm.flower.transport import FlowerTransport, GridLike, describe_error
from fedgmm.mixture import LOG_2PI, MixtureState, covariance_shape, log_det_cholesky

#: Flower's SecAgg+ modulus: the largest it documents (``SecAggPlusWorkflow``'s ``modulus_range``).
MODULUS = 2**32
#: Flower's ``_stochastic_round`` casts to int32: ``Q`` (a power of two here) is at most 2³⁰.
MAX_QUANTIZATION = 2**30
#: Float64 round-off allowance of a dequantised, unscaled sum, per client, relative to the block's divisor.
ROUNDOFF = 64 * float(np.finfo(np.float64).eps)
#: Limbs per entry by default: 2 (measured: one limb's error, ~1e-9 of the bound, fails the
#: log-likelihood consistency check on digits, PCA 16, K = 10, full; see benchmarks/secagg_fedem.py).
DEFAULT_LIMBS = 2
#: Every entry of a client's vector is scaled into ``[-1, 1]``.
CLIPPING_RANGE = 1.0
#: Each client sends weight 1 with ``max_weight`` 1: SecAgg+'s weighted mean is then the plain mean.
MAX_WEIGHT = 1.0
#: Fraction of a node's neighbours whose shares rebuild its masks (SecAgg+'s ``reconstruction_threshold``).
RECONSTRUCTION_THRESHOLD = 0.6
#: Fewest nodes a secure round runs with. Flower seeds every mask's generator with 32 bits (the
#: key XOR-folded, ``flwr/common/secure_aggregation/secaggplus_utils.py``, ``pseudo_rand_gen``):
#: the server, which learns a node's private mask seed in the unmask stage, is left with that
#: node's ``n − 1`` pairwise masks, ``2^(32(n−1))`` guesses: cheap for 2 nodes.
MIN_SECURE_NODES = 3
#: Client id of the reply that stands for a secure sum (above every real client id).
AGGREGATE_CLIENT_ID = 2**31
#: Request keys of the scales (floats), sent with every secure request.
SCALE_KEYS = ("secure-scale-rows", "secure-scale-count", "secure-scale-first", "secure-scale-second", "secure-scale-ll")
LL_OFFSET_KEY = "secure-ll-offset"
Q_KEY = "secure-quantization-range"
LIMBS_KEY = "secure-limbs"
ARRAY_NAMES_KEY = "secure-array-names"
#: Plain-text fields of a secure reply (SecAgg+ clears only its array records).
REPLY_FIELDS = ("client-id", "status", "reason")


@dataclass(frozen=True)
class SecureSettings:
    """The public bounds a secure round's quantisation is built on.

    Attributes
    ----------
    row_bound : float
        ``B``: no client row (after preprocessing) is longer than this.
    max_samples : int
        ``n_max``: no client has more rows.
    limbs : {1, 2}
        Each entry as one quantised value (error ``< 2n/Q`` of the bound), or as a high
        limb exactly on Flower's grid plus a quantised remainder (``< 2n/Q²``, below
        float64 round-off; twice the masked bytes).
    """

    row_bound: float
    max_samples: int
    limbs: int = DEFAULT_LIMBS

    def __post_init__(self) -> None:
        if not (self.row_bound > 0 and math.isfinite(self.row_bound)):
            raise ValueError(f"secure-row-bound must be a positive finite number, got {self.row_bound!r}.")
        if isinstance(self.max_samples, bool) or not isinstance(self.max_samples, int) or self.max_samples < 1:
            raise ValueError(f"secure-max-samples must be an integer >= 1, got {self.max_samples!r}.")
        if self.limbs not in (1, 2):
            raise ValueError(f"secure-limbs must be 1 or 2, got {self.limbs!r}.")


def quantization_range(n_clients: int) -> int:
    """``Q`` for ``n_clients``: a power of two, the sum of their quantised entries (each ``<= Q``) below :data:`MODULUS`.

    A power of two makes ``2j/Q − 1`` exact in float64, so a high limb on Flower's grid
    is quantised without any rounding (see :func:`encode_limbs`).
    """
    if n_clients < 1:
        raise ValueError(f"n_clients must be >= 1, got {n_clients}.")
    return min(MAX_QUANTIZATION, 1 << ((MODULUS - 1) // n_clients).bit_length() - 1)


def _max_precision(state: MixtureState) -> np.ndarray:
    """Largest eigenvalue of each component's precision, ``(K,)``."""
    prec = np.asarray(state.precisions)
    k = state.n_components
    if state.covariance_type == "full":
        return np.asarray(np.linalg.eigvalsh(prec)[:, -1])
    if state.covariance_type == "tied":
        return np.full(k, float(np.linalg.eigvalsh(prec)[-1]))
    if state.covariance_type == "diag":
        return np.asarray(prec.max(axis=1))
    return np.asarray(prec, dtype=np.float64).reshape(k)


def loglik_range(state: MixtureState, row_bound: float) -> tuple[float, float]:
    """``[L_lo, L_hi]`` holding ``log p(x)`` of every row with ``‖x‖ ≤ row_bound`` under ``state``.

    ``L_hi = max_k log N(μ_k | μ_k, Σ_k)`` (no mixture density exceeds its highest peak);
    ``L_lo = max_k [log π_k + log N(μ_k | μ_k, Σ_k) − ½ (B + ‖μ_k‖)² λ_max(Σ_k⁻¹)]`` (the
    mixture is at least any one weighted component, and ``‖x − μ_k‖ ≤ B + ‖μ_k‖``).
    """
    d = state.n_features
    peak = log_det_cholesky(state.precisions_cholesky, state.covariance_type, d) - 0.5 * d * LOG_2PI
    peak = np.broadcast_to(np.asarray(peak, dtype=np.float64), (state.n_components,))
    reach = (row_bound + np.linalg.norm(np.asarray(state.means), axis=1)) ** 2
    log_w = np.log(np.maximum(np.asarray(state.weights), 1e-300))
    low = float(np.max(log_w + peak - 0.5 * reach * _max_precision(state)))
    return low, float(np.max(peak))


def block_sizes(n_components: int, n_features: int, covariance_type: str) -> tuple[int, ...]:
    """Entries of each block of the vector: rows, ``N_k``, first moments, second moments, log-likelihood."""
    second = int(np.prod(covariance_shape(covariance_type, n_components, n_features)))
    return (1, n_components, n_components * n_features, second, 1)


def block_scales(state: MixtureState, shift: np.ndarray, settings: SecureSettings) -> tuple[float, ...]:
    """The divisor of each block (see the module docstring) for one round."""
    reach = settings.row_bound + float(np.linalg.norm(shift))
    low, high = loglik_range(state, settings.row_bound)
    n = float(settings.max_samples)
    return (n, n, n * reach, n * reach**2, n * max(high - low, 1e-12))


def error_bounds(scales: Sequence[float], n_clients: int, q: int, limbs: int = DEFAULT_LIMBS) -> dict[str, float]:
    """Worst-case error of one entry of each block of a sum over ``n_clients`` (quantisation plus round-off).

    Stochastic rounding moves a quantised value by less than one step ``2/Q``: one limb
    ``2n/Q``, two limbs ``2n/Q²`` (the remainder's step, scaled by ``1/Q``), each times the
    block's divisor; plus :data:`ROUNDOFF` per client for float64 arithmetic.
    """
    step = 2.0 * CLIPPING_RANGE / q ** limbs
    names = ("n_samples", "nk", "first_moment", "second_moment", "log_likelihood")
    return {name: n_clients * (step + ROUNDOFF) * float(s) for name, s in zip(names, scales, strict=True)}


def encode_limbs(vector: np.ndarray, q: int, limbs: int) -> np.ndarray:
    """A scaled vector (entries in ``[-1, 1]``) as the values Flower quantises: itself, or high and low limbs.

    High limb ``h = 2j/Q − 1`` with ``j = ⌊(v + 1) Q/2⌋``: exactly on Flower's grid
    (``Q`` a power of two), so its quantisation is exact; low limb
    ``l = (v − h) Q − 1 ∈ [-1, 1)``, quantised stochastically. ``v = h + (l + 1)/Q``.
    """
    v = np.clip(np.asarray(vector, dtype=np.float64), -1.0, 1.0)
    if limbs == 1:
        return v
    high = 2.0 * np.floor((v + 1.0) * (q / 2)) / q - 1.0
    low = np.clip((v - high) * q - 1.0, -1.0, 1.0)
    return np.concatenate([high, low])


def decode_limbs(total: np.ndarray, q: int, limbs: int, n_clients: int) -> np.ndarray:
    """The sum of ``n_clients`` scaled vectors from the sum of their :func:`encode_limbs`."""
    total = np.asarray(total, dtype=np.float64)
    if limbs == 1:
        return total
    high, low = np.split(total, 2)
    return np.asarray(high + (low + n_clients) / q)


def statistics_vector(stats: SufficientStatistics | None, scales: Sequence[float], ll_offset: float,
                      shape: tuple[int, int, str]) -> np.ndarray:
    """One client's scaled vector; zeros for a client that excluded itself.

    Raises
    ------
    ValueError
        An entry leaves ``[-1, 1]``: more rows than ``secure-max-samples`` or rows beyond
        ``secure-row-bound`` (Flower would clip the entry and bias the sum).
    """
    sizes = block_sizes(*shape)
    if stats is None:
        return np.zeros(sum(sizes))
    blocks = (np.array([float(stats.n_samples)]), stats.nk, stats.sx.ravel(), stats.sxx.ravel(),
              np.array([stats.log_likelihood - stats.n_samples * ll_offset]))
    vector = np.concatenate([np.asarray(b, dtype=np.float64).ravel() / s for b, s in zip(blocks, scales, strict=True)])
    worst = float(np.max(np.abs(vector), initial=0.0))
    if not worst <= CLIPPING_RANGE * (1 + 1e-12):
        block = int(np.searchsorted(np.cumsum(sizes), int(np.argmax(np.abs(vector))), side="right"))
        what = ("its row count exceeds secure-max-samples" if block <= 1 else
                "its rows exceed secure-row-bound (in the model's feature space, after preprocessing)")
        raise ValueError(f"this client cannot take part in secure aggregation: {what} (scaled entry {worst:.3g} > 1). "
                         "Raise secure-max-samples / secure-row-bound in the run config.")
    return vector


def statistics_from_vector(vector: np.ndarray, scales: Sequence[float], ll_offset: float, shift: np.ndarray,
                           shape: tuple[int, int, str]) -> tuple[SufficientStatistics, float]:
    """Unscale a summed vector; returns the statistics (``n_samples`` rounded) and the unrounded row count."""
    k, d, ctype = shape
    sizes = block_sizes(k, d, ctype)
    parts = np.split(np.asarray(vector, dtype=np.float64), np.cumsum(sizes)[:-1])
    rows, nk, sx, sxx, ll = (p * s for p, s in zip(parts, scales, strict=True))
    n = max(round(float(rows[0])), 0)
    stats = SufficientStatistics(
        nk=nk, sx=sx.reshape(k, d), sxx=sxx.reshape(covariance_shape(ctype, k, d)), n_samples=n,
        log_likelihood=float(ll[0]) + n * ll_offset, shift=np.asarray(shift, dtype=np.float64),
        covariance_type=ctype,  # type: ignore[arg-type]
    )
    return stats, float(rows[0])


def make_consistent(stats: SufficientStatistics, errors: dict[str, float]) -> tuple[SufficientStatistics, float]:
    """Project a dequantised sum onto statistics real rows can produce; return it and the largest move.

    The move is in units of ``errors`` (the entry's bound), the largest over the blocks.

    ``N_k`` is floored at 0 and rescaled to sum to ``n_samples``; each implied covariance
    is floored at eigenvalue 0 (diag / spherical: variance 0), which only moves second
    moments of components whose spread is within the quantisation error. The caller
    compares the move with the error bounds: a larger one means a client sent statistics
    no rows give (they are then passed on unprojected, for the robust checks to see).
    """
    n = float(stats.n_samples)
    nk = np.maximum(stats.nk, 0.0)
    if n > 0 and nk.sum() > 0:
        nk = nk * (n / nk.sum())
    move = float(np.max(np.abs(nk - stats.nk), initial=0.0)) / max(errors["nk"], 1e-300)
    sx, sxx, ctype = stats.sx, np.array(stats.sxx, copy=True), stats.covariance_type
    live = nk > 0
    sx = np.where(live[:, None], sx, 0.0)
    with np.errstate(all="ignore"):
        if ctype == "full":
            for k in np.flatnonzero(live):
                m = sx[k] / nk[k]
                cov = sxx[k] / nk[k] - np.outer(m, m)
                cov = 0.5 * (cov + cov.T)
                w, v = np.linalg.eigh(cov)
                if w[0] < 0:
                    sxx[k] = nk[k] * ((v * np.maximum(w, 0.0)) @ v.T + np.outer(m, m))
            sxx[~live] = 0.0
        elif ctype == "tied":
            mean_part = (sx[live].T / nk[live]) @ sx[live]
            w, v = np.linalg.eigh(0.5 * ((sxx - mean_part) + (sxx - mean_part).T))
            if w[0] < 0:
                sxx = (v * np.maximum(w, 0.0)) @ v.T + mean_part
        elif ctype == "diag":
            floor = np.where(live[:, None], sx**2 / np.where(live, nk, 1.0)[:, None], 0.0)
            sxx = np.maximum(sxx, floor)
        else:
            floor = np.where(live, np.sum(sx**2, axis=1) / np.where(live, nk, 1.0), 0.0)
            sxx = np.maximum(sxx, floor)
    move = max(move, float(np.max(np.abs(sxx - stats.sxx), initial=0.0)) / max(errors["second_moment"], 1e-300))
    move = max(move, float(np.max(np.abs(sx - stats.sx), initial=0.0)) / max(errors["first_moment"], 1e-300))
    out = SufficientStatistics(nk=nk, sx=sx, sxx=sxx, n_samples=stats.n_samples, log_likelihood=stats.log_likelihood,
                               shift=stats.shift, covariance_type=ctype)
    return out, move


# ----------------------------------------------------------------------------- request / reply codec
@dataclass(frozen=True)
class Encoding:
    """How a round's statistics become SecAgg+'s vector: block divisors, log-likelihood offset, ``Q``, limbs."""

    scales: tuple[float, ...]
    ll_offset: float
    q: int
    limbs: int


def secure_fit_ins(request: RecordDict, encoding: Encoding) -> FitIns:
    """Our EM request as the ``FitIns`` SecAgg+'s workflow forwards (arrays as ``.npy`` bytes, no pickle)."""
    _, cfg, arrays = decode_request(request)  # cfg keeps "kind"
    names = sorted(arrays)
    config: dict[str, Any] = {**cfg, ARRAY_NAMES_KEY: ",".join(names), LL_OFFSET_KEY: float(encoding.ll_offset),
                              Q_KEY: int(encoding.q), LIMBS_KEY: int(encoding.limbs)}  # fmt: skip
    scales = encoding.scales
    config.update({key: float(s) for key, s in zip(SCALE_KEYS, scales, strict=True)})
    return FitIns(parameters=ndarrays_to_parameters([np.asarray(arrays[n]) for n in names]), config=config)


def request_from_fit_ins(content: RecordDict) -> tuple[RecordDict, Encoding]:
    """Inverse of :func:`secure_fit_ins` on the client: our request and the round's encoding."""
    fit_ins = compat.recorddict_to_fitins(content, keep_input=True)
    config = dict(fit_ins.config)
    names = [n for n in str(config.pop(ARRAY_NAMES_KEY, "")).split(",") if n]
    arrays = parameters_to_ndarrays(fit_ins.parameters)
    if len(names) != len(arrays):
        raise ValueError(f"secure request names {len(names)} arrays and carries {len(arrays)}.")
    scales = tuple(float(config.pop(key)) for key in SCALE_KEYS)  # type: ignore[arg-type]
    ll_offset = float(config.pop(LL_OFFSET_KEY))  # type: ignore[arg-type]
    q, limbs = int(config.pop(Q_KEY)), int(config.pop(LIMBS_KEY))  # type: ignore[call-overload]
    kind = str(config.pop("kind"))
    request = encode_request(kind, config, dict(zip(names, arrays, strict=True)))
    return request, Encoding(scales, ll_offset, q, limbs)


def secure_reply(request: RecordDict, encoding: Encoding, reply: RecordDict) -> RecordDict:
    """Client side: our statistics reply as the ``FitRes`` SecAgg+'s mod masks; only ``REPLY_FIELDS`` stay plain."""
    _, cfg, arrays = decode_request(request)
    head = reply.config_records[CONFIG]
    state = state_from_arrays(arrays, str(cfg["covariance-type"]))
    shape = (state.n_components, state.n_features, state.covariance_type)
    stats = None
    if head["status"] == STATUS_OK:
        got = {k: v.numpy() for k, v in reply.array_records[STATS].items()}
        stats = SufficientStatistics(
            nk=got["nk"], sx=got["sx"], sxx=got["sxx"], n_samples=int(head["n-samples"]),  # type: ignore[arg-type]
            log_likelihood=float(head["log-likelihood"]), shift=got["shift"],  # type: ignore[arg-type]
            covariance_type=state.covariance_type,
        )
    vector = encode_limbs(statistics_vector(stats, encoding.scales, encoding.ll_offset, shape), encoding.q, encoding.limbs)
    metrics: dict[str, Any] = {k: head[k] for k in REPLY_FIELDS}
    fit_res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([vector]), int(MAX_WEIGHT), metrics)
    return compat.fitres_to_recorddict(fit_res, keep_input=True)


# ----------------------------------------------------------------------------- server: SecAgg+ workflow
class _NodeProxy(ClientProxy):
    """A node id for the workflow's legacy bookkeeping; the workflow never calls its methods."""

    def __init__(self, node_id: int) -> None:
        super().__init__(str(node_id))
        self.node_id = int(node_id)

    def _unused(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("SecAgg+ reaches nodes through the Grid, not through a ClientProxy.")

    get_properties = get_parameters = fit = evaluate = reconnect = _unused  # type: ignore[assignment]


class _SumStrategy(Strategy):
    """Hands the workflow one ``FitIns`` per node and keeps what the unmask stage sums."""

    def __init__(self, node_ids: Sequence[int], fit_ins: FitIns) -> None:
        self.node_ids, self.fit_ins = list(node_ids), fit_ins
        self.results: list[tuple[ClientProxy, FitRes]] = []
        self.aggregate: list[np.ndarray] | None = None

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager) -> Any:
        return [(_NodeProxy(nid), self.fit_ins) for nid in self.node_ids]

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> tuple[None, dict[str, Any]]:
        self.results = list(results)
        if self.results:
            self.aggregate = parameters_to_ndarrays(self.results[0][1].parameters)
        return None, {}

    def initialize_parameters(self, client_manager: ClientManager) -> None:
        return None

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager) -> list[Any]:
        return []

    def aggregate_evaluate(self, server_round: int, results: Any, failures: Any) -> tuple[None, dict[str, Any]]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> None:
        return None


class _ObservedGrid:
    """The Grid as the workflow sees it: counts every message's bytes and keeps each node's last error."""

    def __init__(self, grid: GridLike) -> None:
        self.grid = grid
        self.sent: dict[int, int] = {}
        self.received: dict[int, int] = {}
        self.errors: dict[int, str] = {}
        self.stages = 0

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        self.stages += 1
        for m in messages:
            self.sent[m.metadata.dst_node_id] = self.sent.get(m.metadata.dst_node_id, 0) + payload_nbytes(m.content)
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        targets = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}  # ids are set when pushed
        answered = set()
        for r in replies:
            nid = targets.get(r.metadata.reply_to_message_id, r.metadata.src_node_id)
            answered.add(nid)
            if r.has_error():
                self.errors[nid] = describe_error(int(r.error.code), str(r.error.reason))
            elif r.has_content():
                self.received[nid] = self.received.get(nid, 0) + payload_nbytes(r.content)
        for nid in set(targets.values()) - answered:
            self.errors.setdefault(nid, f"no reply within {timeout} s in SecAgg+ stage {self.stages}")
        return replies

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()


@dataclass
class SecureRound:
    """One secure round, as recorded in the run summary (JSON-ready through :meth:`as_dict`).

    Attributes
    ----------
    round : int
        The transport's round number (all kinds counted).
    contributors : list of int
        Client ids whose vectors are in the sum (excluded ones added zeros).
    excluded, failed : dict of str to str
        Source → reason: excluded themselves / did not complete the protocol.
    quantization_range, modulus_range, limbs : int
        ``Q``, ``M`` and the limbs per entry.
    error_bounds : dict of str to float
        Worst-case error of one entry of each block of the sum (:func:`error_bounds`).
    rows_unrounded : float
        The summed row count before rounding.
    projection, projected : float, bool
        The projection's largest move in units of the error bound, and whether it was
        applied (it is not when it would move more than the bound).
    n_samples, nk, log_likelihood
        Of the sum handed to federated EM.
    bytes_up, bytes_down, messages : int
        Over all SecAgg+ stages; ``messages`` is the number of stages run (4 when complete).
    """

    round: int
    contributors: list[int] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    quantization_range: int = 0
    modulus_range: int = MODULUS
    error_bounds: dict[str, float] = field(default_factory=dict)
    limbs: int = DEFAULT_LIMBS
    rows_unrounded: float = 0.0
    projection: float = 0.0
    projected: bool = False
    n_samples: int = 0
    nk: list[float] = field(default_factory=list)
    log_likelihood: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    messages: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return dict(vars(self))


class SecureFlowerTransport(FlowerTransport):
    """A :class:`FlowerTransport` whose federated EM rounds go through SecAgg+: one reply, the sum.

    Every other request kind (initialisation upload, preprocessing, download) is sent in
    the clear as before. An EM round runs Flower's four SecAgg+ stages (setup, share
    keys, collect masked vectors, unmask) over the Grid; the reply list is one reply for
    the sum (``n_clients`` = its contributors, client id :data:`AGGREGATE_CLIENT_ID`),
    an ``excluded`` reply per client that excluded itself (it added zeros) and a failed
    one per node that dropped out of the protocol. Bytes count every SecAgg+ message.

    Parameters
    ----------
    secure : SecureSettings
    *args, **kwargs
        As :class:`FlowerTransport`.
    """

    def __init__(self, *args: Any, secure: SecureSettings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.secure = secure
        self.secure_rounds: list[SecureRound] = []

    def exchange(self, kind: str, request: RecordDict) -> list[Reply]:
        """Plain :meth:`FlowerTransport.exchange`, except for ``em-statistics`` (the secure sum)."""
        if kind != EM_STATISTICS:
            return super().exchange(kind, request)
        start = time.perf_counter()
        self.rounds += 1
        online = {int(n) for n in self.grid.get_node_ids()}
        replies: list[Reply] = []
        targets: list[int] = []
        for nid, record in self.nodes.items():
            if record.lost:
                replies.append(Reply(self.source(nid), record.client_id, None, f"lost earlier: {record.lost}"))
            elif nid not in online:
                replies.append(self._fail(nid, kind, "node left the federation (missed its heartbeats)", lose=True))
            else:
                targets.append(nid)
        record_ = SecureRound(self.rounds)
        if len(targets) < MIN_SECURE_NODES:
            for nid in targets:
                replies.append(self._fail(
                    nid, kind, f"secure aggregation needs at least {MIN_SECURE_NODES} nodes online, {len(targets)} are",
                    lose=False,
                ))  # fmt: skip
        else:
            replies += self._secure_round(kind, request, targets, record_)
        self.secure_rounds.append(record_)
        replies.sort(key=lambda r: (r.client_id is None, r.client_id or 0, r.source))
        self.exchange_seconds += time.perf_counter() - start
        self.round_seconds.append((kind, time.perf_counter() - start))
        if self.on_exchange is not None:
            self.on_exchange(kind, replies)
        return replies

    def _secure_round(self, kind: str, request: RecordDict, targets: list[int], rec: SecureRound) -> list[Reply]:
        _, cfg, arrays = decode_request(request)
        state = state_from_arrays(arrays, str(cfg["covariance-type"]))
        shift = np.asarray(arrays["shift"], dtype=np.float64)
        shape = (state.n_components, state.n_features, state.covariance_type)
        q = quantization_range(len(targets))
        scales = block_scales(state, shift, self.secure)
        encoding = Encoding(scales, loglik_range(state, self.secure.row_bound)[1], q, self.secure.limbs)
        strategy = _SumStrategy(targets, secure_fit_ins(request, encoding))
        base = Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={})
        context = LegacyContext(base, strategy=strategy)
        context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: self.rounds})
        context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(Parameters([], ""), True)
        workflow = SecAggPlusWorkflow(
            num_shares=1.0, reconstruction_threshold=RECONSTRUCTION_THRESHOLD, max_weight=MAX_WEIGHT,
            clipping_range=CLIPPING_RANGE, quantization_range=q, modulus_range=MODULUS, timeout=self.timeout,
        )  # fmt: skip
        grid = _ObservedGrid(self.grid)
        workflow(grid, context)  # type: ignore[arg-type]
        rec.quantization_range, rec.limbs, rec.messages = q, self.secure.limbs, grid.stages
        out: list[Reply] = []
        contributors: list[int] = []
        for proxy, fit_res in strategy.results:
            nid = int(proxy.node_id)
            metrics = fit_res.metrics
            claimed = metrics.get("client-id")
            record = self.nodes[nid]
            if record.client_id is None and isinstance(claimed, int) and not isinstance(claimed, bool):
                record.client_id = int(claimed)
            record.replies += 1
            contributors.append(nid)
            if metrics.get("status") == STATUS_EXCLUDED:
                reason = str(metrics.get("reason", ""))[:2000]
                rec.excluded[self.source(nid)] = reason
                out.append(Reply(self.source(nid), record.client_id,
                                 encode_statistics(record.client_id or 0, None, reason)))
        for nid in targets:
            if nid not in contributors:
                reason = grid.errors.get(nid, "did not complete the SecAgg+ protocol")
                rec.failed[self.source(nid)] = reason
                out.append(self._fail(nid, kind, f"secure aggregation: {reason}", lose=False))
        rec.contributors = sorted(self.nodes[n].client_id or 0 for n in contributors)
        rec.error_bounds = error_bounds(scales, max(len(contributors), 1), q, self.secure.limbs)
        names = {n: self.source(n) for n in targets}
        self.communication.record_round(kind, {names[n]: b for n, b in grid.sent.items()},
                                        {names[n]: b for n, b in grid.received.items()})
        rec.bytes_up, rec.bytes_down = sum(grid.received.values()), sum(grid.sent.values())
        n_ok = len(contributors) - len(rec.excluded)
        if strategy.aggregate is None or n_ok < 1:
            return out
        summed = decode_limbs(strategy.aggregate[0] * len(contributors), q, self.secure.limbs, len(contributors))
        total, rec.rows_unrounded = statistics_from_vector(summed, scales, encoding.ll_offset, shift, shape)
        if total.n_samples >= 1:
            projected, rec.projection = make_consistent(total, rec.error_bounds)
            rec.projected = rec.projection <= 1.0
            total = projected if rec.projected else total
        rec.n_samples, rec.nk, rec.log_likelihood = total.n_samples, total.nk.tolist(), total.log_likelihood
        if total.n_samples < 1:
            return out
        source = f"secure sum of {n_ok} client(s)"
        out.append(Reply(source, None, encode_statistics(AGGREGATE_CLIENT_ID, total), n_clients=n_ok))
        return out

    def secure_summary(self) -> dict[str, Any]:
        """What the run summary records of secure aggregation (JSON-ready)."""
        return {
            "protocol": "SecAgg+ (flwr.server.workflow.SecAggPlusWorkflow, flwr.client.mod.secaggplus_mod)",
            "row_bound": self.secure.row_bound, "max_samples": self.secure.max_samples, "limbs": self.secure.limbs,
            "clipping_range": CLIPPING_RANGE, "reconstruction_threshold": RECONSTRUCTION_THRESHOLD,
            "server_sees": "the sum of the clients' E-step statistics per round (and who took part)",
            "checks_on_sum": "shapes, finiteness, counts, Cauchy-Schwarz / PSD, log-likelihood range",
            "checks_lost": "per-client rejection, comparison with the other clients, count and weight caps",
            "rounds": [r.as_dict() for r in self.secure_rounds],
        }  # fmt: skip


# ----------------------------------------------------------------------------- client: the handler behind secaggplus_mod
def serve_secure(message: Message, context: Context, answer: Any) -> Message:
    """Answer SecAgg+'s collect stage: our statistics, scaled, as a ``FitRes`` (the mod masks it).

    ``answer(request)`` is the node's plain handler (returns our statistics reply).
    """
    request, encoding = request_from_fit_ins(message.content)
    kind = decode_request(request)[0]
    if kind != EM_STATISTICS:
        raise ValueError(f"a secure-aggregation message carries a {kind!r} request; only {EM_STATISTICS!r} is summed.")
    reply = answer(request)
    return Message(content=secure_reply(request, encoding, reply), reply_to=message)


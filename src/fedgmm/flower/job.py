"""The ServerApp's job: wait for nodes, run the chosen algorithm over the Grid, write model and summary."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.common.logger import log

from fedgmm.em.fit import EMPTY_COMPONENT_ROWS, empty_components
from fedgmm.em.stats import score_samples
from fedgmm.exceptions import FederationError
from fedgmm.federated.client import DOWNLOAD
from fedgmm.federated.dispatch import FederatedRun, run_method
from fedgmm.federated.messages import decode_ack, encode_request, state_arrays
from fedgmm.federated.preprocessing import Transform, run_preprocessing
from fedgmm.federated.private import privacy_record
from fedgmm.federated.private_rounds import fedem_privacy_record
from fedgmm.federated.transform_file import transform_payload
from fedgmm.federated.transport import ClientRecord, CommunicationLog, Reply, decode_replies
from fedgmm.flower.secure import AGGREGATE_CLIENT_ID, SecureFlowerTransport, SecureSettings
from fedgmm.flower.settings import RunSettings, SettingsError
from fedgmm.flower.task import evaluation_rows
from fedgmm.flower.transport import FlowerTransport, GridLike
from fedgmm.mixture import MixtureState
from fedgmm.model_io import save_mixture

SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.npz"
TRANSFORM_FILE = "transform.npz"
PROGRESS_FILE = "progress.json"
SUMMARY_FORMAT = "fedgmm-flower-summary"


@dataclass
class Outcome:
    """What an algorithm produced: the global model, each client's record, algorithm facts."""

    state: MixtureState
    records: dict[str, ClientRecord]
    details: dict[str, Any] = field(default_factory=dict)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON atomically (readers see the old or the whole new file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_jsonable, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def wait_for_nodes(
    grid: GridLike,
    min_nodes: int,
    timeout: float,
    *,
    poll: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[int]:
    """Poll the Grid until ``min_nodes`` SuperNodes are connected; return all connected ids.

    Raises
    ------
    FederationError
        If fewer than ``min_nodes`` connected within ``timeout`` seconds.
    """
    deadline = clock() + timeout
    while True:
        node_ids = sorted(int(n) for n in grid.get_node_ids())
        if len(node_ids) >= min_nodes:
            return node_ids
        if clock() >= deadline:
            raise FederationError(
                f"only {len(node_ids)} of the {min_nodes} SuperNodes needed (min-nodes) connected within "
                f"{timeout:g} s (wait-timeout). Start more SuperNodes, check that they reach the SuperLink, "
                "or lower min-nodes."
            )
        sleep(poll)


def outcome_details(run: FederatedRun) -> dict[str, Any]:
    """The summary's facts of a run (JSON-ready): chosen K and sizes, or rounds and history."""
    if run.fedem is None:
        res = run.fedgengmm
        assert res is not None
        # What the in-process FedGenGMM warns about (EmptyComponentWarning), recorded here.
        empty = empty_components(res.global_model.weights_, res.synthetic_size) if res.synthetic_size else []
        return {
            "synthetic_size": res.synthetic_size,
            "n_components": res.global_model.n_components,
            "empty_components": empty,
            "local_components": {str(c): res.local_models[c][0].n_components for c in sorted(res.local_models)},
            "bic": {str(k): v for k, v in res.bic.items()},
            "privacy": privacy_record(run.spec.epsilon, run.spec.delta, res.privacy_spent, run.spec.dp_noise_seed),
        }
    fem = run.fedem
    # A private run's rounds have no log-likelihood (NaN): JSON null.
    history = [{**asdict(r), "log_likelihood": _finite_or_none(r.log_likelihood)} for r in fem.history]
    return {
        "n_rounds": fem.n_rounds,
        "converged": fem.converged,
        "lower_bound": _finite_or_none(fem.lower_bound),
        "history": history,
        "privacy": fedem_privacy_record(run.spec.epsilon, run.spec.delta, run.spec.max_rounds, fem.privacy_spent,
                                        run.spec.dp_noise, run.spec.dp_noise_seed),
    }


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _records(records: Mapping[str, ClientRecord], transport: FlowerTransport) -> list[dict[str, Any]]:
    node_of = {transport.source(n): n for n in transport.nodes}
    rows = [{**asdict(r), "node_id": node_of.get(r.source)} for r in records.values()]
    return sorted(rows, key=lambda r: (r["client_id"] is None, r["client_id"] or 0, r["source"]))


def _traffic(log_: CommunicationLog) -> dict[str, Any]:
    return {**log_.summary(), "per_round": [asdict(r) for r in log_.per_round]}


def _download(transport: FlowerTransport, state: MixtureState) -> dict[str, Any]:
    """Send the global model to every node (a separately counted round); who acknowledged."""
    saved, transport.communication = transport.communication, CommunicationLog()
    try:
        request = encode_request(DOWNLOAD, {"covariance-type": state.covariance_type}, state_arrays(state))
        records: dict[str, ClientRecord] = {}
        acked = decode_replies(transport.exchange(DOWNLOAD, request), decode_ack, records)
        for reply, _ in acked:
            records[reply.source] = ClientRecord(reply.source, reply.client_id, "ok")
        return {**_traffic(transport.communication), "acknowledged": len(acked), "clients": _records(records, transport)}
    finally:
        transport.communication = saved


def _evaluate(settings: RunSettings, state: MixtureState, transform: Transform | None) -> dict[str, Any] | None:
    try:
        found = evaluation_rows(settings)
        if found is None:
            return None
        X, what = found
        if transform is not None:
            X = transform.apply(X)
        return {"set": what, "n_samples": int(X.shape[0]), "log_likelihood": float(np.mean(score_samples(X, state)))}
    except Exception as exc:  # a bad evaluation set must not lose the trained model
        log(logging.WARNING, "evaluation failed: %s", exc)
        return {"error": f"{type(exc).__name__}: {exc}"}


class _Progress:
    """Writes ``progress.json`` and logs a line after every round.

    The file holds the last round (``round``, ``kind``, ``answered``, ``failed``) and, in
    ``rounds``, one ``{"round", "kind", "answered", "failed"}`` count record per round so
    far, so a reader polling it sees every round even when several end between polls.
    """

    def __init__(self, path: Path, run_id: int) -> None:
        self.path, self.run_id, self.rounds = path, run_id, 0
        self.history: list[dict[str, Any]] = []

    def __call__(self, kind: str, replies: list[Reply]) -> None:
        self.rounds += 1
        ok = [r.source for r in replies if r.content is not None]
        failed = {r.source: r.error for r in replies if r.content is None}
        log(logging.INFO, "round %d (%s): %d of %d nodes answered", self.rounds, kind, len(ok), len(replies))
        for source, reason in failed.items():
            log(logging.WARNING, "  %s: %s", source, reason)
        self.history.append({"round": self.rounds, "kind": kind, "answered": len(ok), "failed": sorted(failed)})
        write_json(self.path, {
            "run_id": self.run_id, "round": self.rounds, "kind": kind, "answered": ok, "failed": failed, "time": time.time(),
            "rounds": self.history,
        })  # fmt: skip


def _record_settings_error(run_config: Mapping[str, Any], run_id: int, exc: Exception) -> None:
    """Write a failed ``summary.json`` for an invalid run config, when its output dir is usable."""
    out = run_config.get("output-dir")
    if not isinstance(out, str) or not out:
        return
    try:
        path = Path(out).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / SUMMARY_FILE, {
            "format": SUMMARY_FORMAT, "version": 1, "status": "failed", "run_id": int(run_id),
            "error": f"{type(exc).__name__}: {exc}", "settings": {k: run_config[k] for k in run_config},
        })  # fmt: skip
    except (OSError, TypeError, ValueError):
        pass


def make_transport(grid: GridLike, node_ids: list[int], settings: RunSettings, progress: _Progress) -> FlowerTransport:
    """The run's transport: SecAgg+ for the federated EM rounds with ``secure-aggregation``, else plain."""
    if not settings.secure_aggregation:
        return FlowerTransport(grid, node_ids, timeout=settings.round_timeout, on_exchange=progress)
    secure = SecureSettings(settings.secure_row_bound, settings.secure_max_samples, settings.secure_limbs)
    return SecureFlowerTransport(grid, node_ids, timeout=settings.round_timeout, on_exchange=progress, secure=secure)


def run_job(grid: GridLike, run_config: Mapping[str, Any], run_id: int = 0) -> dict[str, Any]:
    """The whole server side of one run; returns the summary (also written to ``summary.json``).

    Steps: check the run config; wait for ``min-nodes`` SuperNodes; optional federated
    preprocessing (its own counted round); the algorithm; save the global model
    (``model.npz``, :func:`fedgmm.model_io.save_mixture`, run facts in ``extra``), the
    transform (``transform.npz``) and the evaluation; optionally send the model to the
    nodes. ``summary.json`` is written whatever happens; outputs of an earlier run in the
    same directory are removed first.

    Raises
    ------
    FederationError
        Too few nodes connected, or too few usable replies in a round (the message
        lists every missing node and why).
    SettingsError
        Invalid run config.
    """
    start = time.perf_counter()
    try:
        settings = RunSettings.from_run_config(run_config)
    except SettingsError as exc:
        _record_settings_error(run_config, run_id, exc)
        raise
    out = settings.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in (MODEL_FILE, TRANSFORM_FILE, PROGRESS_FILE):  # a failed run must not leave an older model
        (out / stale).unlink(missing_ok=True)
    spec = settings.spec
    summary: dict[str, Any] = {
        "format": SUMMARY_FORMAT, "version": 1, "status": "running", "run_id": int(run_id),
        "algorithm": spec.method, "seed": settings.seed, "preprocessing": settings.preprocessing,
        "settings": settings.raw, "output_dir": str(out),
    }  # fmt: skip
    transport: FlowerTransport | None = None
    try:
        log(logging.INFO, "fedgmm %s: waiting for %d SuperNodes (up to %g s)", spec.method, settings.min_nodes, settings.wait_timeout)
        node_ids = wait_for_nodes(grid, settings.min_nodes, settings.wait_timeout)
        summary["node_ids"] = node_ids
        transport = make_transport(grid, node_ids, settings, _Progress(out / PROGRESS_FILE, run_id))
        transform: Transform | None = None
        if settings.preprocessing != "none":
            pca = settings.pca_components if settings.preprocessing == "pca" else None
            transform, pre_records = run_preprocessing(
                transport, standardize=True, n_components=pca, min_clients=settings.min_replies,
                robust=spec.robust_settings(),
            )
            summary["preprocessing_communication"] = {
                **_traffic(transport.communication), "transform_id": transform.transform_id,
                "n_features_in": transform.n_features_in, "n_features_out": transform.n_features_out,
                "clients": _records(pre_records, transport),
            }  # fmt: skip
            transport.communication = CommunicationLog()
            np.savez(out / TRANSFORM_FILE, mean=transform.mean, matrix=transform.matrix)
        run = run_method(transport, spec, settings.seed, transform=transform)
        outcome = Outcome(run.state, run.records, outcome_details(run))
        comm = transport.communication
        used = sum(1 for r in outcome.records.values() if r.status == "ok" and r.client_id != AGGREGATE_CLIENT_ID)
        summary.update(_traffic(comm))
        summary.update(outcome.details)
        if outcome.details.get("empty_components"):
            log(logging.WARNING, "fedgmm: the global fit's component(s) %s are empty (less than %g of a synthetic "
                "row's weight): fewer components would fit the data as well", outcome.details["empty_components"],
                EMPTY_COMPONENT_ROWS)
        summary["clients"] = _records(outcome.records, transport)
        summary["clients_used"] = used
        pre = summary.get("preprocessing_communication", {})
        summary["total"] = {
            "rounds": comm.rounds + pre.get("rounds", 0),
            "bytes_up": comm.bytes_up + pre.get("bytes_up", 0),
            "bytes_down": comm.bytes_down + pre.get("bytes_down", 0),
        }
        evaluation = _evaluate(settings, outcome.state, transform)
        if evaluation is not None:
            summary["evaluation"] = evaluation
        extra = {
            "algorithm": spec.method, "seed": settings.seed, "run_id": int(run_id), "clients_used": used,
            "rounds": comm.rounds, "bytes_up": comm.bytes_up, "bytes_down": comm.bytes_down,
            "preprocessing": settings.preprocessing, "transform_id": transform.transform_id if transform else "",
            "settings": settings.raw, "privacy": outcome.details.get("privacy"),
        }  # fmt: skip
        arrays, info = transform_payload(transform) if transform is not None else (None, None)
        save_mixture(out / MODEL_FILE, outcome.state, extra=extra, transform=arrays, transform_info=info)
        summary["model"] = {
            "path": MODEL_FILE, "n_components": outcome.state.n_components, "n_features": outcome.state.n_features,
            "covariance_type": outcome.state.covariance_type, "transform": TRANSFORM_FILE if transform else None,
        }  # fmt: skip
        if isinstance(transport, SecureFlowerTransport):
            summary["secure_aggregation"] = transport.secure_summary()
        if settings.download_model:
            summary["download"] = _download(transport, outcome.state)
        summary["status"] = "completed"
        log(logging.INFO, "fedgmm %s finished: %d clients used, model in %s", spec.method, used, out / MODEL_FILE)
    except Exception as exc:
        summary["status"] = "failed"
        summary["error"] = f"{type(exc).__name__}: {exc}"
        log(logging.ERROR, "fedgmm %s failed: %s", spec.method, exc)
        raise
    finally:
        if transport is not None:
            summary["nodes"] = transport.summary()
            summary["round_seconds"] = [{"kind": k, "seconds": round(t, 3)} for k, t in transport.round_seconds]
        summary["wall_seconds"] = time.perf_counter() - start
        write_json(out / SUMMARY_FILE, summary)
    return summary


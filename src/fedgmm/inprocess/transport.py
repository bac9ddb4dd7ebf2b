"""The in-process transport: clients are arrays in this process (or in worker processes)."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from flwr.app import RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

from fedgmm.federated.client import handle_request
from fedgmm.federated.transport import (
    CommunicationLog,
    Reply,
    client_rows,
    count_round,
    is_behaviour,
)

#: Called after each client answers: ``(kind, n_done, n_total)``.
ProgressCallback = Callable[[str, int, int], None]

# Worker processes inherit the clients through fork; they are never pickled.
_WORKER_CLIENTS: Sequence[Any] = ()


def _to_bytes(content: RecordDict) -> bytes:
    return bytes(recorddict_to_proto(content).SerializeToString())


def _from_bytes(data: bytes) -> RecordDict:
    proto = ProtoRecordDict()
    proto.ParseFromString(data)
    return recorddict_from_proto(proto)


def _serve(index: int, client_id: int, request: bytes, store: dict[str, Any]) -> tuple[bytes | None, str, float, dict[str, Any]]:
    """Run one client's handler on wire bytes; return reply bytes (or the error), its time, its store.

    A :class:`~fedgmm.federated.transport.ClientBehaviour` client answers from its
    ``data`` and its ``tamper`` hook rewrites the encoded reply before it is sent.
    """
    start = time.perf_counter()
    client = _WORKER_CLIENTS[index]
    try:
        message = _from_bytes(request)
        reply = handle_request(message, client_rows(client), client_id, store)
        if is_behaviour(client):
            reply = client.tamper(str(message.config_records["config"]["kind"]), reply)
        return _to_bytes(reply), "", time.perf_counter() - start, store
    except Exception as exc:  # a failing client must not stop the federation: it is recorded
        return None, f"{type(exc).__name__}: {exc}", time.perf_counter() - start, store


def _init_worker(threads: int) -> None:
    from threadpoolctl import threadpool_limits

    from fedgmm.em.stats import set_num_threads

    threadpool_limits(threads)
    set_num_threads(threads)


@dataclass
class InProcessTransport:
    """Delivers requests to client arrays held in this process, through the wire format.

    Every request and reply is serialised to Flower's protobuf bytes and parsed back, so
    clients and server see exactly what the Flower app would deliver, and the bytes are
    measured on those messages.

    Parameters
    ----------
    clients : sequence of ndarray of shape (n_c, d) or ClientBehaviour
        Each client's rows, or an object with ``.data`` (its rows) and ``.tamper(kind,
        reply)`` that rewrites its encoded replies (an adversarial client).
    client_ids : sequence of int, optional
        Ids of the clients (their partition ids); ``0 … C−1`` by default.
    n_jobs : int
        Worker processes answering clients in parallel (1: in this process). Workers get
        the data by fork and run single-threaded BLAS.
    progress : callable, optional
        ``progress(kind, n_done, n_total)`` after each client's answer.
    """

    clients: Sequence[Any]
    client_ids: Sequence[int] | None = None
    n_jobs: int = 1
    progress: ProgressCallback | None = None
    communication: CommunicationLog = field(default_factory=CommunicationLog)
    client_seconds: float = 0.0
    exchange_seconds: float = 0.0
    _stores: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _pool: ProcessPoolExecutor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        ids = list(range(len(self.clients))) if self.client_ids is None else [int(c) for c in self.client_ids]
        if len(ids) != len(self.clients) or len(set(ids)) != len(ids):
            raise ValueError("client_ids must be distinct, one per client.")
        self.client_ids = ids
        self._stores = [{} for _ in self.clients]

    def _sources(self) -> list[str]:
        assert self.client_ids is not None
        return [f"client {cid}" for cid in self.client_ids]

    def _ensure_pool(self) -> ProcessPoolExecutor:
        global _WORKER_CLIENTS
        if self._pool is None:
            _WORKER_CLIENTS = self.clients
            ctx = multiprocessing.get_context("fork")
            self._pool = ProcessPoolExecutor(self.n_jobs, mp_context=ctx, initializer=_init_worker, initargs=(1,))
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (if any)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> InProcessTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def exchange(self, kind: str, request: RecordDict) -> list[Reply]:
        """Send ``request`` to every client; replies in client-id order, failures as errors."""
        global _WORKER_CLIENTS
        assert self.client_ids is not None
        start = time.perf_counter()
        wire = _to_bytes(request)
        total = len(self.clients)
        results: list[tuple[bytes | None, str, float, dict[str, Any]]] = []
        if self.n_jobs > 1 and total > 1:
            pool = self._ensure_pool()
            futures: list[Future[tuple[bytes | None, str, float, dict[str, Any]]]] = [
                pool.submit(_serve, i, cid, wire, self._stores[i]) for i, cid in enumerate(self.client_ids)
            ]
            for done, fut in enumerate(futures, 1):
                results.append(fut.result())
                if self.progress:
                    self.progress(kind, done, total)
        else:
            previous = _WORKER_CLIENTS
            _WORKER_CLIENTS = self.clients
            try:
                for i, cid in enumerate(self.client_ids):
                    results.append(_serve(i, cid, wire, self._stores[i]))
                    if self.progress:
                        self.progress(kind, i + 1, total)
            finally:
                _WORKER_CLIENTS = previous
        replies = []
        for i, (cid, source, (data, error, seconds, store)) in enumerate(
            zip(self.client_ids, self._sources(), results, strict=True)
        ):
            self._stores[i] = store
            self.client_seconds += seconds
            content = _from_bytes(data) if data is not None else None
            replies.append(Reply(source, cid, content, error))
        count_round(self.communication, kind, request, self._sources(), replies)
        self.exchange_seconds += time.perf_counter() - start
        return replies

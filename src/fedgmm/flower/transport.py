"""The Flower transport: one request to every SuperNode through the Grid, replies in client-id order."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from flwr.app import Message, RecordDict
from flwr.common.constant import ErrorCode

from fedgmm.federated.client import DOWNLOAD, EM_STATISTICS, FIT_LOCAL, MOMENTS
from fedgmm.federated.messages import CONFIG
from fedgmm.federated.transport import CommunicationLog, Reply, count_round

#: Flower message type of each request kind (``<category>.<identifier>``; the ClientApp
#: registers one handler per type).
MESSAGE_TYPES = {
    FIT_LOCAL: "train.fit_local",
    EM_STATISTICS: "train.em_statistics",
    MOMENTS: "query.moments",
    DOWNLOAD: "query.download",
}

ERROR_NAMES = {
    ErrorCode.UNKNOWN: "unknown error",
    ErrorCode.LOAD_CLIENT_APP_EXCEPTION: "ClientApp could not be loaded",
    ErrorCode.CLIENT_APP_RAISED_EXCEPTION: "ClientApp raised an exception",
    ErrorCode.MESSAGE_UNAVAILABLE: "message unavailable",
    ErrorCode.REPLY_MESSAGE_UNAVAILABLE: "reply unavailable",
    ErrorCode.NODE_UNAVAILABLE: "node unavailable",
    ErrorCode.MOD_FAILED_PRECONDITION: "mod failed a precondition",
    ErrorCode.INVALID_FAB: "invalid FAB",
    ErrorCode.CLIENT_APP_CRASHED: "ClientApp crashed",
}
#: Error codes after which a node is not contacted again in this run.
LOSING_CODES = frozenset({ErrorCode.NODE_UNAVAILABLE})
MAX_REASON = 600


class GridLike(Protocol):
    """The part of :class:`flwr.serverapp.Grid` the transport uses."""

    def get_node_ids(self) -> Iterable[int]:
        """Ids of the connected SuperNodes."""
        ...

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push ``messages`` and pull their replies until all arrived or ``timeout`` passed."""
        ...


@dataclass
class NodeRecord:
    """What the transport knows about one SuperNode.

    Attributes
    ----------
    node_id : int
    client_id : int or None
        The id its replies carry (learned from its first usable reply).
    replies : int
        Replies with content received.
    failures : list of dict
        ``{"round", "kind", "reason"}`` for every round it did not answer.
    lost : str
        Why it is no longer contacted (empty while it is).
    """

    node_id: int
    client_id: int | None = None
    replies: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    lost: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "node_id": self.node_id, "client_id": self.client_id, "replies": self.replies,
            "failures": list(self.failures), "lost": self.lost,
        }  # fmt: skip


def describe_error(code: int, reason: str) -> str:
    """A readable one-paragraph account of a Flower error reply."""
    match = re.fullmatch(r"<class '([\w.]+)'>:<'(.*)'>", reason.strip(), flags=re.DOTALL)
    if match:  # deployment form of a ClientApp exception
        reason = f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2)}"
    reason = " ".join(reason.split())
    if len(reason) > MAX_REASON:  # simulation: a Ray traceback; its end names the exception
        reason = reason[:150] + " … " + reason[-(MAX_REASON - 150):]
    return f"error code {code} ({ERROR_NAMES.get(code, 'error')}): {reason}"


def claimed_client_id(content: RecordDict) -> int | None:
    """The client id a reply's config record carries, if it is a plausible int (else None).

    Only used to name and order replies; the algorithms' ``decode_*`` functions still
    check every field of the content.
    """
    try:
        value = content.config_records[CONFIG]["client-id"]
    except (KeyError, TypeError):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**31:
        return None
    return int(value)


class FlowerTransport:
    """Delivers each request to every SuperNode of the run through a Flower ``Grid``.

    Implements :class:`fedgmm.federated.transport.Transport`: one ``send_and_receive``
    per :meth:`exchange`, always with a timeout; the replies are matched to the nodes by
    ``reply_to_message_id`` (SuperLink-made error replies come from node 1), named
    ``"client <id>"`` after the client id their content carries, and returned in
    client-id order. Error replies, missing replies (timeout) and nodes that left come back
    as :class:`~fedgmm.federated.transport.Reply` with ``error`` set, so the algorithm
    records who was missing and why. The SuperLink decides who is alive: a node it
    reports unavailable (error code 5) or no longer lists is not contacted again in this
    run (its later replies say so); a node that only missed the timeout is asked again
    next round (a crashed node thus costs up to one timeout per round until the SuperLink
    notices, at most about a minute). Bytes are counted with
    :func:`~fedgmm.federated.transport.count_round`, as the in-process transport does.

    Parameters
    ----------
    grid : Grid
    node_ids : sequence of int
        The SuperNodes taking part (fixed for the run).
    timeout : float
        Seconds to wait for one round's replies.
    on_exchange : callable, optional
        ``on_exchange(kind, replies)`` after each round (e.g. to write progress).
    """

    def __init__(
        self,
        grid: GridLike,
        node_ids: Sequence[int],
        *,
        timeout: float,
        on_exchange: Callable[[str, list[Reply]], None] | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}.")
        if not node_ids:
            raise ValueError("a FlowerTransport needs at least one node.")
        self.grid = grid
        self.timeout = float(timeout)
        self.on_exchange = on_exchange
        self.nodes: dict[int, NodeRecord] = {int(n): NodeRecord(int(n)) for n in sorted(set(node_ids))}
        self.communication = CommunicationLog()
        self.rounds = 0
        self.exchange_seconds = 0.0
        self.round_seconds: list[tuple[str, float]] = []

    def source(self, node_id: int) -> str:
        """How replies of ``node_id`` are named: ``"client <id>"``, or ``"node <id>"`` until its id is known."""
        cid = self.nodes[node_id].client_id
        return f"client {cid}" if cid is not None else f"node {node_id}"

    def _fail(self, node_id: int, kind: str, reason: str, lose: bool) -> Reply:
        record = self.nodes[node_id]
        record.failures.append({"round": self.rounds, "kind": kind, "reason": reason})
        if lose and not record.lost:
            record.lost = f"{reason} (round {self.rounds}, {kind})"
            reason += "; not contacted again in this run"
        return Reply(self.source(node_id), record.client_id, None, reason)

    def _accept(self, node_id: int, reply: Message, kind: str) -> Reply:
        record = self.nodes[node_id]
        content = reply.content
        claimed = claimed_client_id(content)
        if record.client_id is not None and claimed is not None and claimed != record.client_id:
            return self._fail(
                node_id, kind, f"reply claims client id {claimed}, this node answered as client {record.client_id} before",
                lose=False,
            )
        if record.client_id is None:
            owner = next((n for n, r in self.nodes.items() if claimed is not None and r.client_id == claimed), None)
            if owner is not None:
                return self._fail(
                    node_id, kind,
                    f"claims client id {claimed}, already used by node {owner}; give every node a distinct "
                    "partition-id / client-id", lose=True,
                )  # fmt: skip
            record.client_id = claimed
        record.replies += 1
        return Reply(self.source(node_id), record.client_id, content)

    def exchange(self, kind: str, request: RecordDict) -> list[Reply]:
        """Send ``request`` to every node; replies in client-id order, failures as errors."""
        if kind not in MESSAGE_TYPES:
            raise ValueError(f"unknown request kind {kind!r}; expected one of {list(MESSAGE_TYPES)}.")
        start = time.perf_counter()
        self.rounds += 1
        online = {int(n) for n in self.grid.get_node_ids()}
        replies: dict[int, Reply] = {}
        targets: list[int] = []
        for nid, record in self.nodes.items():
            if record.lost:
                replies[nid] = Reply(self.source(nid), record.client_id, None, f"lost earlier: {record.lost}")
            elif nid not in online:
                replies[nid] = self._fail(nid, kind, "node left the federation (missed its heartbeats)", lose=True)
            else:
                targets.append(nid)
        messages = [Message(content=request, dst_node_id=nid, message_type=MESSAGE_TYPES[kind]) for nid in targets]
        received = list(self.grid.send_and_receive(messages, timeout=self.timeout)) if messages else []
        node_of = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        by_node: dict[int, Message] = {}
        for message in received:
            dst = node_of.get(message.metadata.reply_to_message_id)
            if dst is not None and dst not in by_node:
                by_node[dst] = message
        for nid in targets:
            reply = by_node.get(nid)
            if reply is None:
                replies[nid] = self._fail(nid, kind, f"no reply within the round timeout of {self.timeout:g} s", lose=False)
            elif reply.has_error():
                code = int(reply.error.code)
                replies[nid] = self._fail(nid, kind, describe_error(code, str(reply.error.reason)), code in LOSING_CODES)
            elif not reply.has_content():
                replies[nid] = self._fail(nid, kind, "reply without content", lose=False)
            else:
                replies[nid] = self._accept(nid, reply, kind)
        ordered = sorted(
            replies.items(), key=lambda item: (item[1].client_id is None, item[1].client_id or 0, item[0])
        )
        result = [reply for _, reply in ordered]
        count_round(self.communication, kind, request, [self.source(n) for n in targets], result)
        self.exchange_seconds += time.perf_counter() - start
        self.round_seconds.append((kind, time.perf_counter() - start))
        if self.on_exchange is not None:
            self.on_exchange(kind, result)
        return result

    def summary(self) -> list[dict[str, Any]]:
        """Every node's record, in client-id order (JSON-ready)."""
        records = sorted(self.nodes.values(), key=lambda r: (r.client_id is None, r.client_id or 0, r.node_id))
        return [r.as_dict() for r in records]

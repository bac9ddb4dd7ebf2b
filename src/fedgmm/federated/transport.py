"""What a server algorithm needs from a transport: broadcast a request, get replies, count bytes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from flwr.app import RecordDict

from fedgmm.exceptions import FederationError, PayloadError
from fedgmm.federated.messages import STATUS_OK, payload_nbytes


@dataclass(frozen=True)
class Reply:
    """One client's answer to a request, or why there is none.

    Attributes
    ----------
    source : str
        Who answered, as the transport names it ("client 3", "node 8812…").
    client_id : int or None
        The client's partition/data id when known (for ordering and records).
    content : RecordDict or None
        The reply; None when the client failed, timed out or was lost.
    error : str
        Why there is no content (empty when there is).
    n_clients : int
        Clients whose statistics the content sums: 1, or all contributors of a secure
        aggregate (:mod:`fedgmm.flower.secure`), which counts for all of them.
    """

    source: str
    client_id: int | None
    content: RecordDict | None
    error: str = ""
    n_clients: int = 1


@dataclass
class ClientTraffic:
    """Bytes and messages exchanged with one client, per direction."""

    bytes_up: int = 0
    bytes_down: int = 0
    messages_up: int = 0
    messages_down: int = 0


@dataclass(frozen=True)
class RoundTraffic:
    """One request/reply round: what was asked, of how many, and the bytes each way."""

    kind: str
    n_requests: int
    n_replies: int
    bytes_up: int
    bytes_down: int


@dataclass
class CommunicationLog:
    """Measured communication of a run: rounds, bytes per direction, per client and per round.

    Bytes are :func:`~fedgmm.federated.messages.payload_nbytes` of each message as sent
    (down: server→client) or received (up: client→server).
    """

    per_client: dict[str, ClientTraffic] = field(default_factory=dict)
    per_round: list[RoundTraffic] = field(default_factory=list)

    @property
    def rounds(self) -> int:
        """Number of request/reply rounds."""
        return len(self.per_round)

    @property
    def bytes_up(self) -> int:
        """Total bytes client→server."""
        return sum(r.bytes_up for r in self.per_round)

    @property
    def bytes_down(self) -> int:
        """Total bytes server→client."""
        return sum(r.bytes_down for r in self.per_round)

    def record_round(self, kind: str, sent: dict[str, int], received: dict[str, int]) -> RoundTraffic:
        """Add one round given the bytes sent to and received from each client."""
        for source, nbytes in sent.items():
            traffic = self.per_client.setdefault(source, ClientTraffic())
            traffic.bytes_down += nbytes
            traffic.messages_down += 1
        for source, nbytes in received.items():
            traffic = self.per_client.setdefault(source, ClientTraffic())
            traffic.bytes_up += nbytes
            traffic.messages_up += 1
        entry = RoundTraffic(kind, len(sent), len(received), sum(received.values()), sum(sent.values()))
        self.per_round.append(entry)
        return entry

    def summary(self) -> dict[str, int]:
        """``{"rounds", "bytes_up", "bytes_down"}`` as plain ints."""
        return {"rounds": self.rounds, "bytes_up": self.bytes_up, "bytes_down": self.bytes_down}


class Transport(Protocol):
    """Delivers one request to every participating client and collects the replies."""

    communication: CommunicationLog

    def exchange(self, kind: str, request: RecordDict) -> list[Reply]:
        """Send ``request`` to every client, return their replies in client-id order.

        Implementations record the round in :attr:`communication` and never raise for a
        single client's failure: it comes back as a :class:`Reply` with ``error`` set.
        """
        ...


def count_round(
    log: CommunicationLog, kind: str, request: RecordDict, destinations: Sequence[str], replies: Sequence[Reply]
) -> None:
    """Record a round: ``request`` sent to each destination, each reply's content received."""
    size = payload_nbytes(request)
    sent = {dest: size for dest in destinations}
    received = {r.source: payload_nbytes(r.content) for r in replies if r.content is not None}
    log.record_round(kind, sent, received)


@dataclass(frozen=True)
class ClientRecord:
    """What happened to one client in a run (kept on the estimator and in run summaries)."""

    source: str
    client_id: int | None
    status: str  # "ok", "excluded" (by itself), "rejected" (payload refused), "failed" (no answer)
    reason: str = ""
    n_samples: int = 0
    n_components: int = 0


class ClientBehaviour(Protocol):
    """A client that may misbehave: its rows, and a hook on every encoded reply it sends.

    Transports accept such an object wherever they accept a client's array: they serve
    each request on ``data`` and pass the encoded reply through ``tamper(kind, reply)``
    before it is counted and handed to the server. Used by the attack kit to model
    adversarial clients; an honest client is a plain array.
    """

    data: Any  # the client's rows, array-like of shape (n_c, d)

    def tamper(self, kind: str, reply: RecordDict) -> RecordDict:
        """The reply actually sent for a request of ``kind`` (fit-local, em-statistics, moments, download)."""
        ...


def client_rows(client: Any) -> Any:
    """A client's rows: ``client.data`` for a :class:`ClientBehaviour`, else the client itself."""
    return client.data if is_behaviour(client) else client


def is_behaviour(client: Any) -> bool:
    """True for an object with ``.data`` and a callable ``.tamper`` (a :class:`ClientBehaviour`)."""
    return hasattr(client, "data") and callable(getattr(client, "tamper", None))


T = TypeVar("T")


class TriagedReply(Protocol):
    """What every decoded reply carries: who it says it is, and whether it took part."""

    @property
    def client_id(self) -> int: ...

    @property
    def status(self) -> str: ...

    @property
    def reason(self) -> str: ...


R = TypeVar("R", bound=TriagedReply)


def decode_replies(
    replies: Sequence[Reply],
    decode: Callable[[RecordDict], T],
    records: dict[str, ClientRecord],
) -> list[tuple[Reply, T]]:
    """Decode each reply, recording failures and rejected payloads instead of raising.

    Returns
    -------
    list of (Reply, decoded)
        Only the replies that decoded; order preserved.
    """
    good: list[tuple[Reply, T]] = []
    for reply in replies:
        if reply.content is None:
            records[reply.source] = ClientRecord(reply.source, reply.client_id, "failed", reply.error)
            continue
        try:
            good.append((reply, decode(reply.content)))
        except PayloadError as exc:
            records[reply.source] = ClientRecord(reply.source, reply.client_id, "rejected", str(exc))
    return good


def triage_replies(
    replies: Sequence[Reply],
    decode: Callable[[RecordDict], R],
    records: dict[str, ClientRecord],
) -> list[tuple[Reply, R]]:
    """The usable replies of a round; every other one is recorded with why.

    In order: no content → ``failed``; a payload that does not decode → ``rejected``; a
    reply claiming another client id than the transport delivered it from →
    ``rejected``; a client that excluded itself → ``excluded`` (with its reason and, when
    the reply has one, its ``n_samples``). Usable replies keep their order; the caller
    records them as ``ok``.
    """
    usable: list[tuple[Reply, R]] = []
    for reply, decoded in decode_replies(replies, decode, records):
        if reply.client_id is not None and decoded.client_id != reply.client_id:
            records[reply.source] = ClientRecord(
                reply.source, reply.client_id, "rejected", f"reply claims client id {decoded.client_id}."
            )
        elif decoded.status != STATUS_OK:
            records[reply.source] = ClientRecord(
                reply.source, decoded.client_id, "excluded", decoded.reason, int(getattr(decoded, "n_samples", 0))
            )
        else:
            usable.append((reply, decoded))
    return usable


def require_clients(n_usable: int, minimum: int, what: str, records: dict[str, ClientRecord]) -> None:
    """Raise :class:`FederationError` listing what went wrong when fewer than ``minimum`` are usable."""
    if n_usable >= minimum:
        return
    problems = [f"{r.source}: {r.status} ({r.reason})" for r in records.values() if r.status != "ok"]
    answered = sum(1 for r in records.values() if r.status != "failed")
    if not records:
        detail = "no client answered"
    elif problems:
        detail = f"{answered} of {len(records)} client(s) answered; " + "; ".join(problems)
    else:
        detail = f"{answered} client(s) answered, all usable, fewer than the minimum"
    raise FederationError(
        f"{what}: only {n_usable} usable client(s), at least {minimum} required. {detail}. "
        "Check the failing clients, or lower the minimum number of clients."
    )

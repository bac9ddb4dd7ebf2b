"""Test helpers: a fake Grid that delivers messages to the real ClientApp in this process."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flwr.app import Context, Error, Message, Metadata, RecordDict
from flwr.common.constant import ErrorCode
from wire_testing import roundtrip

from fedgmm.flower.client_app import app as client_app

#: A fault for one node: "timeout" (no reply), "dead" (SuperLink's NODE_UNAVAILABLE
#: error from node 1), "gone" (drops out of get_node_ids), or a callable
#: ``(message, context) -> Message | None`` replacing the ClientApp.
Fault = str | Callable[[Message, Context], Message | None]


def make_message(content: RecordDict, dst_node_id: int, message_type: str, run_id: int = 1) -> Message:
    """A server→node message built without a running ServerApp (TaskIdentity unset)."""
    metadata = Metadata(
        run_id=run_id, message_id="", src_node_id=1, dst_node_id=dst_node_id, reply_to_message_id="",
        group_id="", created_at=time.time(), ttl=60.0, message_type=message_type,
    )  # fmt: skip
    message = Message(content=content, metadata=metadata)
    message.metadata.__dict__["_message_id"] = message.object_id
    return message


def error_reply(to: Message, code: int, reason: str, src_node_id: int | None = None) -> Message:
    """An error reply to ``to`` as a SuperNode (or, with ``src_node_id=1``, the SuperLink) makes it."""
    metadata = Metadata(
        run_id=to.metadata.run_id, message_id="", src_node_id=to.metadata.dst_node_id if src_node_id is None else src_node_id,
        dst_node_id=1, reply_to_message_id=to.metadata.message_id, group_id="", created_at=time.time(), ttl=60.0,
        message_type=to.metadata.message_type,
    )  # fmt: skip
    return Message(error=Error(code=code, reason=reason), metadata=metadata)


class FakeGrid:
    """Delivers each message to the real ClientApp with a per-node Context, through the wire format.

    Parameters
    ----------
    node_configs : mapping of int to dict
        Node id → that node's ``node_config``.
    run_config : dict
        The run config every node sees.
    faults : mapping of int to Fault, optional
    """

    def __init__(
        self, node_configs: Mapping[int, dict[str, Any]], run_config: dict[str, Any], faults: Mapping[int, Fault] | None = None
    ) -> None:
        self.contexts = {
            nid: Context(run_id=1, node_id=nid, node_config=dict(cfg), state=RecordDict(), run_config=dict(run_config))
            for nid, cfg in node_configs.items()
        }
        self.faults: dict[int, Fault] = dict(faults or {})
        self.timeouts: list[float | None] = []
        self.sent: list[Message] = []

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in sorted(self.contexts) if self.faults.get(n) != "gone"]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        self.timeouts.append(timeout)
        replies: list[Message] = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = message.object_id  # as Grid.push_messages does
            self.sent.append(message)
            nid = message.metadata.dst_node_id
            fault = self.faults.get(nid)
            if fault in ("timeout", "gone"):
                continue
            if fault == "dead":
                replies.append(error_reply(message, ErrorCode.NODE_UNAVAILABLE, "Error: Node Unavailable", src_node_id=1))
                continue
            delivered = Message(content=roundtrip(message.content), metadata=message.metadata)
            try:
                if callable(fault):
                    reply = fault(delivered, self.contexts[nid])
                    if reply is None:
                        continue
                else:
                    reply = client_app(delivered, self.contexts[nid])
            except Exception as exc:  # as the SuperNode does: code 2, deployment-style reason
                replies.append(error_reply(message, ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(exc)}:<'{exc}'>"))
                continue
            if reply.has_content():
                reply = Message(content=roundtrip(reply.content), metadata=reply.metadata)
            replies.append(reply)
        return list(reversed(replies))  # arrival order is not node order


def partition_nodes(n: int = 3, first_id: int = 9000, step: int = -1000) -> dict[int, dict[str, Any]]:
    """Node id → node config of ``n`` partition nodes (ids descending, so id order is not client order)."""
    return {first_id + step * i: {"partition-id": i, "num-partitions": n} for i in range(n)}


def inprocess_reference(run_config: dict[str, Any], n_clients: int = 3) -> tuple[Any, Any, Any]:
    """The in-process runner's ``(MethodRun, preprocessing log or None, transform or None)`` for a run config.

    Preprocessing runs over its own InProcessTransport (as the study runner does); the
    method then gets the transform, exactly like the ServerApp.
    """
    from fedgmm.federated.preprocessing import run_preprocessing
    from fedgmm.flower.settings import RunSettings
    from fedgmm.flower.task import client_partitions
    from fedgmm.inprocess import InProcessTransport, run_inprocess

    settings = RunSettings.from_run_config(run_config)
    clients = client_partitions(settings.data, n_clients)
    transform, log = None, None
    if settings.preprocessing != "none":
        transport = InProcessTransport(clients)
        pca = settings.pca_components if settings.preprocessing == "pca" else None
        transform, _ = run_preprocessing(transport, standardize=True, n_components=pca, robust=settings.spec.robust_settings())
        log = transport.communication
    return run_inprocess(settings.spec, clients, seed=settings.seed, transform=transform), log, transform


def process_tree(pids: list[int]) -> dict[int, int]:
    """PID → start time of ``pids`` and all their descendants (to check they are gone later)."""
    from fedgmm.flower.processes import _stat, descendants

    tree: dict[int, int] = {}
    for pid in pids:
        info = _stat(pid)
        if info is not None:
            tree[pid] = info[2]
            tree.update(descendants(pid))
    return tree


def still_running(tree: dict[int, int]) -> list[int]:
    """The PIDs of ``tree`` that still run (zombies count as gone)."""
    from fedgmm.flower.processes import alive

    return [p for p, t in tree.items() if alive(p, t)]


def wait_for_round(progress: Any, round_: int, timeout: float = 300.0) -> dict[str, Any]:
    """Wait until the ServerApp's ``progress.json`` reports at least ``round_`` finished rounds."""
    import json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = json.loads(progress.read_text())
            if data["round"] >= round_:
                return dict(data)
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{progress} did not reach round {round_} within {timeout} s")

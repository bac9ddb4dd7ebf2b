"""FlowerTransport over a fake Grid: ordering, accounting, errors, timeouts and lost nodes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flower_testing import FakeGrid, make_message, partition_nodes
from flwr.app import ConfigRecord, Context, Message, RecordDict

from fedgmm.federated.client import DOWNLOAD, MOMENTS
from fedgmm.federated.messages import encode_request
from fedgmm.flower.settings import DataSettings
from fedgmm.flower.task import client_partitions
from fedgmm.flower.transport import FlowerTransport, claimed_client_id, describe_error
from fedgmm.inprocess import InProcessTransport

pytestmark = pytest.mark.usefixtures("task_identity")


def transport_for(grid: FakeGrid, timeout: float = 5.0) -> FlowerTransport:
    return FlowerTransport(grid, list(grid.contexts), timeout=timeout)


def test_replies_in_client_id_order_with_the_inprocess_bytes(blobs_config: dict[str, Any], nodes: dict[int, Any]) -> None:
    grid = FakeGrid(nodes, blobs_config)
    transport = transport_for(grid)
    replies = transport.exchange(MOMENTS, encode_request(MOMENTS, {}))
    assert [r.source for r in replies] == ["client 0", "client 1", "client 2"]
    assert [r.client_id for r in replies] == [0, 1, 2] and all(r.error == "" for r in replies)
    assert grid.timeouts == [5.0]
    reference = InProcessTransport(client_partitions(DataSettings.from_config(blobs_config), 3))
    reference.exchange(MOMENTS, encode_request(MOMENTS, {}))
    assert transport.communication.summary() == reference.communication.summary()
    assert {s: vars(t) for s, t in transport.communication.per_client.items()} == {
        s: vars(t) for s, t in reference.communication.per_client.items()
    }
    assert {n["node_id"]: n["client_id"] for n in transport.summary()} == {9000: 0, 8000: 1, 7000: 2}


def test_handler_error_is_recorded_and_the_node_asked_again(blobs_config: dict[str, Any], nodes: dict[int, Any]) -> None:
    def boom(message: Message, context: Context) -> Message:
        raise ValueError("boom from partition 1")

    grid = FakeGrid(nodes, blobs_config, {8000: boom})
    transport = transport_for(grid)
    request = encode_request(MOMENTS, {})
    first = transport.exchange(MOMENTS, request)
    assert [r.content is not None for r in first] == [True, True, False]
    assert first[2].source == "node 8000" and first[2].client_id is None
    assert "error code 2" in first[2].error and "ValueError: boom from partition 1" in first[2].error
    del grid.faults[8000]
    second = transport.exchange(MOMENTS, request)
    assert [r.source for r in second] == ["client 0", "client 1", "client 2"] and all(r.content for r in second)


def test_missing_reply_is_recorded_and_the_node_asked_again(blobs_config: dict[str, Any], nodes: dict[int, Any]) -> None:
    grid = FakeGrid(nodes, blobs_config)
    transport = transport_for(grid, timeout=7.5)
    request = encode_request(MOMENTS, {})
    transport.exchange(MOMENTS, request)
    grid.faults[7000] = "timeout"
    second = transport.exchange(MOMENTS, request)
    assert second[2].source == "client 2" and second[2].content is None
    assert second[2].error == "no reply within the round timeout of 7.5 s"
    n_sent = len(grid.sent)
    grid.faults[7000] = "gone"  # the SuperLink stopped listing it (heartbeat expired)
    third = transport.exchange(MOMENTS, request)
    assert len(grid.sent) == n_sent + 2  # node 7000 is not sent to again
    assert "left the federation" in third[2].error and "not contacted again" in third[2].error
    assert transport.communication.per_round[-1].n_requests == 2
    fourth = transport.exchange(MOMENTS, request)
    assert fourth[2].error.startswith("lost earlier: node left the federation (missed its heartbeats) (round 3, moments)")
    record = next(n for n in transport.summary() if n["node_id"] == 7000)
    assert [f["round"] for f in record["failures"]] == [2, 3] and record["lost"]


def test_superlink_error_reply_is_matched_by_reply_to_message_id(blobs_config: dict[str, Any], nodes: dict[int, Any]) -> None:
    grid = FakeGrid(nodes, blobs_config)
    transport = transport_for(grid)
    transport.exchange(MOMENTS, encode_request(MOMENTS, {}))
    grid.faults[9000] = "dead"  # the SuperLink answers for it, from node 1
    replies = transport.exchange(MOMENTS, encode_request(MOMENTS, {}))
    assert replies[0].source == "client 0" and "error code 5 (node unavailable)" in replies[0].error
    assert all(r.content is not None for r in replies[1:])
    assert transport.nodes[9000].lost


def test_node_that_left_is_not_contacted(blobs_config: dict[str, Any], nodes: dict[int, Any]) -> None:
    grid = FakeGrid(nodes, blobs_config, {8000: "gone"})
    transport = transport_for(grid)
    replies = transport.exchange(MOMENTS, encode_request(MOMENTS, {}))
    assert [r.source for r in replies] == ["client 0", "client 2", "node 8000"]
    assert "left the federation" in replies[2].error
    assert all(m.metadata.dst_node_id != 8000 for m in grid.sent)


def test_duplicate_and_changing_client_ids_are_refused(blobs_config: dict[str, Any]) -> None:
    nodes = {1: {"partition-id": 0, "num-partitions": 3}, 2: {"partition-id": 0, "num-partitions": 3}}
    grid = FakeGrid(nodes, blobs_config)
    transport = transport_for(grid)
    replies = transport.exchange(MOMENTS, encode_request(MOMENTS, {}))
    assert replies[0].source == "client 0" and replies[0].content is not None
    assert replies[1].source == "node 2" and "already used by node 1" in replies[1].error
    grid.contexts[1].node_config["partition-id"] = 1
    again = transport.exchange(MOMENTS, encode_request(MOMENTS, {}))
    assert "reply claims client id 1, this node answered as client 0 before" in again[0].error


def test_claimed_client_id_ignores_implausible_values() -> None:
    assert claimed_client_id(RecordDict({"config": ConfigRecord({"client-id": 3})})) == 3
    for bad in (True, -1, 2**40, "3", 1.0):
        assert claimed_client_id(RecordDict({"config": ConfigRecord({"client-id": bad})})) is None
    assert claimed_client_id(RecordDict()) is None


def test_error_descriptions_are_short_and_readable() -> None:
    assert describe_error(2, "<class 'ValueError'>:<'boom'>") == "error code 2 (ClientApp raised an exception): ValueError: boom"
    long = "Traceback " + "x" * 5000 + " ValueError: boom at the end"
    text = describe_error(2, long)
    assert len(text) < 700 and text.endswith("ValueError: boom at the end")


def test_arguments_are_checked(blobs_config: dict[str, Any]) -> None:
    grid = FakeGrid(partition_nodes(1), blobs_config)
    with pytest.raises(ValueError, match="timeout"):
        FlowerTransport(grid, [9000], timeout=0)
    with pytest.raises(ValueError, match="at least one node"):
        FlowerTransport(grid, [], timeout=1)
    with pytest.raises(ValueError, match="unknown request kind"):
        FlowerTransport(grid, [9000], timeout=1).exchange("nope", encode_request("nope", {}))


def test_download_round_reaches_every_node(blobs_config: dict[str, Any], nodes: dict[int, Any]) -> None:
    from fedgmm.federated.messages import state_arrays
    from fedgmm.flower.store import StateStore
    from fedgmm.mixture import MixtureState

    state = MixtureState.from_covariances(np.array([1.0]), np.zeros((1, 2)), np.ones((1, 2)), "diag")
    grid = FakeGrid(nodes, blobs_config)
    replies = transport_for(grid).exchange(DOWNLOAD, encode_request(DOWNLOAD, {"covariance-type": "diag"}, state_arrays(state)))
    assert all(r.content is not None for r in replies)
    for ctx in grid.contexts.values():
        assert StateStore(ctx.state)["global-model"].n_components == 1


def test_fake_messages_carry_the_destination() -> None:
    message = make_message(RecordDict(), 42, "query.moments")
    assert message.metadata.dst_node_id == 42 and message.metadata.message_id

"""The in-process transport: reply order, byte accounting, failing and excluded clients, the adversary hook."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import RecordDict

from fedgmm import FedGenGMM
from fedgmm.federated.client import FIT_LOCAL, MOMENTS, local_fit_config
from fedgmm.federated.local import LocalFitSettings
from fedgmm.federated.messages import (
    decode_local_model,
    decode_moments,
    encode_local_model,
    encode_request,
    payload_nbytes,
)
from fedgmm.federated.transport import ClientBehaviour, ClientRecord, is_behaviour, triage_replies
from fedgmm.inprocess import InProcessTransport, check_clients


class Recorder:
    """A client behaviour: answers honestly, remembers the request kinds, optionally rewrites."""

    def __init__(self, data: np.ndarray, rewrite: Any = None) -> None:
        self.data = data
        self.kinds: list[str] = []
        self.rewrite = rewrite

    def tamper(self, kind: str, reply: RecordDict) -> RecordDict:
        self.kinds.append(kind)
        return self.rewrite(reply) if self.rewrite is not None else reply


def fit_request() -> RecordDict:
    return encode_request(FIT_LOCAL, local_fit_config(LocalFitSettings(k_min=2, k_max=2), seed=0))


def test_replies_keep_the_clients_order_and_ids(iid_clients) -> None:
    with InProcessTransport(iid_clients[:3], client_ids=[7, 2, 5]) as transport:
        replies = transport.exchange(MOMENTS, encode_request(MOMENTS, {}))
    assert [r.client_id for r in replies] == [7, 2, 5]
    assert [r.source for r in replies] == ["client 7", "client 2", "client 5"]
    assert [decode_moments(r.content).client_id for r in replies if r.content is not None] == [7, 2, 5]
    with pytest.raises(ValueError, match="distinct"):
        InProcessTransport(iid_clients[:2], client_ids=[1, 1])


def test_bytes_are_those_of_the_messages(iid_clients) -> None:
    request = fit_request()
    with InProcessTransport(iid_clients[:3]) as transport:
        replies = transport.exchange(FIT_LOCAL, request)
    (entry,) = transport.communication.per_round
    assert entry.kind == FIT_LOCAL and entry.n_requests == 3 and entry.n_replies == 3
    assert entry.bytes_down == 3 * payload_nbytes(request)
    assert entry.bytes_up == sum(payload_nbytes(r.content) for r in replies if r.content is not None)
    assert transport.communication.per_client["client 1"].messages_up == 1


def test_a_failing_client_is_an_error_reply_not_an_exception(iid_clients) -> None:
    with InProcessTransport(iid_clients[:2]) as transport:
        replies = transport.exchange("bogus", encode_request("bogus", {}))
    assert all(r.content is None and "unknown request kind" in r.error for r in replies)
    assert transport.communication.per_round[0].n_replies == 0


def test_an_empty_client_excludes_itself(iid_clients) -> None:
    clients = [iid_clients[0], np.empty((0, 3))]
    with InProcessTransport(clients) as transport:
        replies = transport.exchange(FIT_LOCAL, fit_request())
    records: dict[str, ClientRecord] = {}
    usable = triage_replies(replies, lambda c: decode_local_model(c, covariance_type="full"), records)
    assert [reply.client_id for reply, _ in usable] == [0]
    assert records["client 1"].status == "excluded" and "no samples" in records["client 1"].reason


def test_the_adversary_hook_sees_every_reply_before_it_is_counted(iid_clients) -> None:
    def claim_another_id(reply: RecordDict) -> RecordDict:
        model = decode_local_model(reply, covariance_type="full")
        return encode_local_model(type(model)(model.client_id + 100, model.status, model.n_samples, model.state))

    honest = Recorder(iid_clients[1])
    liar = Recorder(iid_clients[2], claim_another_id)
    assert is_behaviour(honest) and not is_behaviour(iid_clients[0])
    clients: list[Any] = [iid_clients[0], honest, liar]
    with InProcessTransport(clients) as transport:
        replies = transport.exchange(FIT_LOCAL, fit_request())
    assert honest.kinds == liar.kinds == [FIT_LOCAL]
    assert transport.communication.bytes_up == sum(payload_nbytes(r.content) for r in replies if r.content is not None)
    records: dict[str, ClientRecord] = {}
    usable = triage_replies(replies, lambda c: decode_local_model(c, covariance_type="full"), records)
    assert [reply.client_id for reply, _ in usable] == [0, 1]
    assert records["client 2"].status == "rejected" and "claims client id 102" in records["client 2"].reason


def test_an_honest_behaviour_gives_the_array_clients_model(iid_clients) -> None:
    plain = FedGenGMM(3, local_components=3, random_state=0).fit(iid_clients)
    wrapped: list[ClientBehaviour] = [Recorder(X) for X in iid_clients]
    hooked = FedGenGMM(3, local_components=3, random_state=0).fit(wrapped)
    np.testing.assert_array_equal(plain.global_model_.means_, hooked.global_model_.means_)
    assert plain.communication_.bytes_up == hooked.communication_.bytes_up
    assert all(w.kinds == [FIT_LOCAL] for w in wrapped)  # type: ignore[attr-defined]


def test_check_clients_validates_a_behaviours_data(iid_clients) -> None:
    checked = check_clients([iid_clients[0], Recorder(iid_clients[1].astype(np.float32))])
    assert checked[0] is iid_clients[0] and checked[1].data.dtype == np.float64
    with pytest.raises(ValueError, match="client 1 must be a 2-D array"):
        check_clients([iid_clients[0], Recorder(np.zeros(5))])
    with pytest.raises(ValueError, match="different feature counts"):
        check_clients([iid_clients[0], Recorder(np.zeros((5, 2)))])

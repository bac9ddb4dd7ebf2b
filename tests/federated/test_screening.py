"""Robust decisions as client records, and errors that name the clients."""

from __future__ import annotations

import numpy as np

from fedgmm.federated.robust import ClientDecision
from fedgmm.federated.screening import (
    atypical_clients,
    global_step_error,
    no_survivors,
    record_decisions,
)
from fedgmm.federated.transport import ClientRecord
from fedgmm.mixture import MixtureState


def records() -> dict[str, ClientRecord]:
    return {
        f"client {i}": ClientRecord(f"client {i}", i, "ok", "K reduced" if i == 2 else "", 100, 3) for i in range(4)
    } | {"client 9": ClientRecord("client 9", 9, "failed", "no reply")}


def test_rejected_and_capped_decisions_become_records() -> None:
    recs = records()
    flagged = record_decisions(recs, [
        ClientDecision(0, "kept"), ClientDecision(1, "rejected", "means far out"),
        ClientDecision(2, "capped", "count 1e12 capped to 300"), ClientDecision(9, "rejected", "not usable anyway"),
    ], prefix="round 2: ")  # fmt: skip
    assert [d.client_id for d in flagged] == [1, 2]
    assert recs["client 0"] == records()["client 0"]
    assert (recs["client 1"].status, recs["client 1"].reason) == ("rejected", "round 2: means far out")
    assert (recs["client 2"].status, recs["client 2"].reason) == ("ok", "K reduced; round 2: capped: count 1e12 capped to 300")
    assert recs["client 1"].n_samples == 100 and recs["client 9"].status == "failed"


def test_no_survivors_lists_every_decision() -> None:
    exc = no_survivors("FedGenGMM upload", [ClientDecision(0, "rejected", "a"), ClientDecision(1, "rejected", "b")])
    assert "client 0 rejected (a); client 1 rejected (b)" in str(exc) and "robust=False" in str(exc)


def test_global_step_error_names_the_most_atypical_client_first() -> None:
    rng = np.random.default_rng(0)

    def state(shift: float) -> MixtureState:
        return MixtureState.from_covariances(np.full(2, 0.5), rng.normal(size=(2, 3)) + shift, np.stack([np.eye(3)] * 2), "full")

    states = [state(0.0), state(0.0), state(1e15), state(0.0)]
    assert atypical_clients(states, [10, 11, 12, 13], top=1)[0][0] == 12
    exc = global_step_error("global fit", ValueError("boom."), states, [10, 11, 12, 13], [5.0, 5.0, 5.0, 5.0], [])
    assert str(exc).startswith("global fit failed: ValueError: boom. Most atypical clients merged: client 12 (")
    assert "no client was flagged" in str(exc)

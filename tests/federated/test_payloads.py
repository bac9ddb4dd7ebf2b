"""Malformed and hostile client payloads are rejected and recorded, never merged."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedgmm.em import e_step
from fedgmm.exceptions import PayloadError
from fedgmm.federated.fedgengmm import GlobalFitSettings, run_fedgengmm
from fedgmm.federated.local import LocalFitSettings, fit_local_model
from fedgmm.federated.messages import (
    MomentsReply,
    decode_local_model,
    decode_moments,
    decode_statistics,
    encode_local_model,
    encode_moments,
    encode_statistics,
)
from fedgmm.federated.transport import CommunicationLog, Reply
from fedgmm.inprocess import InProcessTransport
from fedgmm.mixture import MixtureState


def good_local_reply(X: np.ndarray) -> RecordDict:
    return encode_local_model(fit_local_model(X, LocalFitSettings(k_min=2, k_max=2), client_id=1, seed=0))


def replace_array(content: RecordDict, record: str, key: str, value: np.ndarray | Array) -> RecordDict:
    arrays = dict(content.array_records[record].items())
    arrays[key] = value if isinstance(value, Array) else Array(np.asarray(value))
    content[record] = ArrayRecord(arrays)
    return content


def replace_config(content: RecordDict, **changes: object) -> RecordDict:
    cfg = dict(content.config_records["config"].items())
    cfg.update({k.replace("_", "-"): v for k, v in changes.items()})
    content["config"] = ConfigRecord(cfg)  # type: ignore[arg-type]
    return content


class Canary:
    """Unpickling this would create a flag file: proof that nothing is ever unpickled."""

    path = ""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.path, "w"))


def pickled_array(tmp_path) -> Array:
    Canary.path = str(tmp_path / "unpickled")
    data = pickle.dumps(np.array([Canary()], dtype=object))
    return Array(dtype="object", shape=(1,), stype="numpy.ndarray", data=data)


MUTATIONS: dict[str, Callable[[RecordDict, np.ndarray], RecordDict]] = {
    "nan mean": lambda c, X: replace_array(c, "model", "means", np.full((2, 3), np.nan)),
    "weights off simplex": lambda c, X: replace_array(c, "model", "weights", np.array([0.9, 0.9])),
    "negative weight": lambda c, X: replace_array(c, "model", "weights", np.array([1.5, -0.5])),
    "non-PD covariance": lambda c, X: replace_array(c, "model", "covariances", -np.stack([np.eye(3)] * 2)),
    "asymmetric covariance": lambda c, X: replace_array(
        c, "model", "covariances", np.stack([np.eye(3) + np.triu(np.ones((3, 3)), 1)] * 2)
    ),
    "wrong covariance shape": lambda c, X: replace_array(c, "model", "covariances", np.ones((2, 3))),
    "mismatched K": lambda c, X: replace_array(c, "model", "weights", np.full(3, 1 / 3)),
    "wrong dimension": lambda c, X: replace_array(c, "model", "means", np.zeros((2, 4))),
    "string array": lambda c, X: replace_array(c, "model", "weights", np.array(["a", "b"])),
    "absurd n-samples": lambda c, X: replace_config(c, n_samples=10**15),
    "negative n-samples": lambda c, X: replace_config(c, n_samples=-5),
    "n-samples as text": lambda c, X: replace_config(c, n_samples="many"),
    "unknown status": lambda c, X: replace_config(c, status="trust-me"),
    "other covariance type": lambda c, X: replace_config(c, covariance_type="diag"),
    "no model": lambda c, X: RecordDict({"config": c.config_records["config"]}),
    "no config": lambda c, X: RecordDict({"model": c.array_records["model"]}),
    "huge K": lambda c, X: replace_array(
        replace_array(replace_array(c, "model", "weights", np.full(20_000, 1 / 20_000)), "model", "means", np.zeros((20_000, 3))),
        "model", "covariances", np.zeros((1, 3, 3)),
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_hostile_local_model_is_rejected(mutation: str, blob_data) -> None:
    X = blob_data[0][:300]
    content = MUTATIONS[mutation](good_local_reply(X), X)
    with pytest.raises(PayloadError):
        decode_local_model(content, covariance_type="full", n_features=3)


def test_pickled_object_array_is_never_unpickled(tmp_path, blob_data) -> None:
    content = replace_array(good_local_reply(blob_data[0][:300]), "model", "weights", pickled_array(tmp_path))
    with pytest.raises(PayloadError, match="cannot be read"):
        decode_local_model(content, covariance_type="full", n_features=3)
    assert not (tmp_path / "unpickled").exists()


def test_good_payload_decodes(blob_data) -> None:
    reply = decode_local_model(good_local_reply(blob_data[0][:300]), covariance_type="full", n_features=3)
    assert reply.status == "ok" and reply.state is not None and reply.n_samples == 300


@dataclass
class HostileTransport:
    """Wraps the in-process transport and replaces one client's reply."""

    inner: InProcessTransport
    victim: int
    forge: Callable[[RecordDict], RecordDict]
    communication: CommunicationLog = field(default_factory=CommunicationLog)

    def exchange(self, kind: str, request: RecordDict) -> list[Reply]:
        replies = self.inner.exchange(kind, request)
        self.communication = self.inner.communication
        return [
            Reply(r.source, r.client_id, self.forge(r.content)) if r.client_id == self.victim and r.content else r
            for r in replies
        ]


def test_server_rejects_and_records_a_hostile_client(iid_clients) -> None:
    forge = MUTATIONS["non-PD covariance"]
    transport = HostileTransport(InProcessTransport(iid_clients), victim=2, forge=lambda c: forge(c, iid_clients[2]))
    result = run_fedgengmm(
        transport, LocalFitSettings(k_min=2, k_max=2), GlobalFitSettings(n_components=4), seed=0, n_features=3
    )
    assert result.records["client 2"].status == "rejected"
    assert "positive definite" in result.records["client 2"].reason
    assert sorted(result.local_models) == [0, 1, 3]
    assert result.union.n_components == 6  # 3 kept clients x 2 components


def test_server_rejects_a_client_claiming_another_id(iid_clients) -> None:
    transport = HostileTransport(
        InProcessTransport(iid_clients), victim=1, forge=lambda c: replace_config(c, client_id=0)
    )
    result = run_fedgengmm(transport, LocalFitSettings(k_min=2, k_max=2), GlobalFitSettings(n_components=4), seed=0)
    assert result.records["client 1"].status == "rejected"
    assert "claims client id 0" in result.records["client 1"].reason


def _stats_payload(X: np.ndarray, state: MixtureState, shift: np.ndarray) -> RecordDict:
    return encode_statistics(0, e_step(X, state, shift=shift))


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("nk", lambda s: -s["nk"], "counts must be >= 0"),
        ("nk", lambda s: 2 * s["nk"], "sum to n-samples"),
        ("shift", lambda s: s["shift"] + 1, "another reference point"),
        ("sx", lambda s: s["sx"][:, :2], "shape"),
        ("sxx", lambda s: -np.abs(s["sxx"]), "negative diagonal"),
        ("sx", lambda s: np.full_like(s["sx"], np.inf), "NaN or infinity"),
    ],
)
def test_hostile_statistics_are_rejected(blob_data, key: str, value, match: str) -> None:
    X = blob_data[0][:200]
    state = fit_local_model(X, LocalFitSettings(k_min=2, k_max=2), client_id=0, seed=0).state
    assert state is not None
    shift = X.mean(0)
    content = _stats_payload(X, state, shift)
    current = {k: v.numpy() for k, v in content.array_records["stats"].items()}
    content = replace_array(content, "stats", key, value(current))
    with pytest.raises(PayloadError, match=match):
        decode_statistics(content, covariance_type="full", n_components=2, n_features=3, shift=shift)


def test_hostile_moments_are_rejected() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    good = MomentsReply(0, "ok", 50, X.sum(0), X.T @ X)
    assert decode_moments(encode_moments(good), n_features=3).count == 50
    bad_outer = MomentsReply(0, "ok", 50, X.sum(0), X.T @ X + np.triu(np.ones((3, 3)), 1))
    with pytest.raises(PayloadError, match="symmetric"):
        decode_moments(encode_moments(bad_outer))
    bad_var = MomentsReply(0, "ok", 50, X.sum(0) * 100, X.T @ X)
    with pytest.raises(PayloadError, match="negative variance"):
        decode_moments(encode_moments(bad_var))
    with pytest.raises(PayloadError, match="features"):
        decode_moments(encode_moments(good), n_features=4)

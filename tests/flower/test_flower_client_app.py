"""The ClientApp's handlers, called with hand-made Messages and Contexts (no Flower engine)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flower_testing import make_message
from flwr.app import Context, Message, RecordDict

from fedgmm.experiments.config import PartitionConfig, PreprocessingConfig, StudyConfig
from fedgmm.experiments.study import prepare_cell
from fedgmm.federated.client import DOWNLOAD, EM_STATISTICS, FIT_LOCAL, MOMENTS, local_fit_config
from fedgmm.federated.local import LocalFitSettings, data_moments
from fedgmm.federated.messages import (
    decode_ack,
    decode_local_model,
    decode_moments,
    decode_statistics,
    encode_request,
    state_arrays,
)
from fedgmm.flower.client_app import app as client_app
from fedgmm.flower.settings import DataSettings, SettingsError
from fedgmm.flower.store import StateStore
from fedgmm.flower.task import node_data, partition_rows
from fedgmm.flower.transport import MESSAGE_TYPES


def context(node_config: dict[str, Any], run_config: dict[str, Any], state: RecordDict | None = None) -> Context:
    return Context(run_id=1, node_id=7, node_config=node_config, state=state or RecordDict(), run_config=run_config)


def ask(kind: str, content: RecordDict, ctx: Context) -> Message:
    reply = client_app(make_message(content, 7, MESSAGE_TYPES[kind]), ctx)
    assert reply.has_content() and not reply.has_error()
    return reply


def test_partition_equals_study_runner_client(blobs_config: dict[str, Any]) -> None:
    data = DataSettings.from_config(blobs_config)
    from fedgmm.datasets import load_dataset

    config = StudyConfig(
        name="t", datasets=("blobs",), test_fraction=data.test_fraction,
        partition=PartitionConfig(name="dirichlet", num_partitions=3, alpha=(1.0,), min_partition_size=10),
        preprocessing=PreprocessingConfig(mode="none"),
    )  # fmt: skip
    cell = prepare_cell(load_dataset("blobs", n_samples=600), config, 1.0, 0.0, data.seed)
    for i in range(3):
        got = node_data({"partition-id": i, "num-partitions": 3}, blobs_config)
        assert got.client_id == i
        np.testing.assert_array_equal(got.X, cell.clients[i])


def test_moments_handler_answers_from_the_nodes_partition(blobs_config: dict[str, Any]) -> None:
    ctx = context({"partition-id": 1, "num-partitions": 3}, blobs_config)
    reply = ask(MOMENTS, encode_request(MOMENTS, {}), ctx)
    assert reply.metadata.reply_to_message_id  # a reply to our message
    moments = decode_moments(reply.content)
    X = partition_rows(DataSettings.from_config(blobs_config), 1, 3)
    expected = data_moments(X, 1)
    assert moments.client_id == 1 and moments.count == X.shape[0]
    np.testing.assert_array_equal(moments.total, expected.total)


def test_fit_local_handler_uploads_a_local_model(blobs_config: dict[str, Any]) -> None:
    ctx = context({"partition-id": 0, "num-partitions": 3}, blobs_config)
    settings = LocalFitSettings(covariance_type="full", k_min=1, k_max=3)
    reply = ask(FIT_LOCAL, encode_request(FIT_LOCAL, local_fit_config(settings, seed=0)), ctx)
    model = decode_local_model(reply.content, covariance_type="full", n_features=2)
    assert model.client_id == 0 and model.status == "ok" and 1 <= model.state.n_components <= 3  # type: ignore[union-attr]


def test_transform_is_kept_in_context_state_between_messages(blobs_config: dict[str, Any]) -> None:
    ctx = context({"partition-id": 2, "num-partitions": 3}, blobs_config)
    mean, matrix = np.array([1.0, -1.0]), np.array([[2.0, 0.0], [0.0, 0.5]])
    settings = LocalFitSettings(covariance_type="diag", k_min=2, k_max=2)
    cfg = {**local_fit_config(settings, seed=3), "transform-id": "abc"}
    ask(FIT_LOCAL, encode_request(FIT_LOCAL, cfg, {"transform-mean": mean, "transform-matrix": matrix}), ctx)
    stored = StateStore(ctx.state)["transform:abc"]
    np.testing.assert_array_equal(stored[0], mean)
    np.testing.assert_array_equal(stored[1], matrix)
    # A later request names the transform only; a fresh Context with the same state answers it.
    ctx2 = context({"partition-id": 2, "num-partitions": 3}, blobs_config, state=ctx.state)
    model = decode_local_model(ask(FIT_LOCAL, encode_request(FIT_LOCAL, cfg), ctx).content, covariance_type="diag")
    assert model.state is not None
    shift = np.array([0.25, -0.5])
    request = encode_request(
        EM_STATISTICS, {"covariance-type": "diag", "transform-id": "abc"}, {**state_arrays(model.state), "shift": shift}
    )
    stats = decode_statistics(
        ask(EM_STATISTICS, request, ctx2).content, covariance_type="diag", n_components=2, n_features=2, shift=shift
    )
    X = partition_rows(DataSettings.from_config(blobs_config), 2, 3)
    assert stats.stats is not None and stats.stats.n_samples == X.shape[0]
    np.testing.assert_allclose(stats.stats.sx.sum(axis=0), ((X - mean) @ matrix - shift).sum(axis=0), rtol=1e-9)


def test_statistics_without_the_transform_fail() -> None:
    ctx = context({"partition-id": 0, "num-partitions": 3}, {"dataset": "blobs", "dataset-args": "n_samples=300"})
    request = encode_request(EM_STATISTICS, {"covariance-type": "diag", "transform-id": "never-sent"}, {})
    with pytest.raises(ValueError, match="has not received"):
        client_app(make_message(request, 7, MESSAGE_TYPES[EM_STATISTICS]), ctx)


def test_download_keeps_the_global_model(blobs_config: dict[str, Any]) -> None:
    from fedgmm.mixture import MixtureState

    state = MixtureState.from_covariances(np.array([0.5, 0.5]), np.zeros((2, 2)), np.ones((2, 2)), "diag")
    ctx = context({"partition-id": 0, "num-partitions": 3}, blobs_config)
    request = encode_request(DOWNLOAD, {"covariance-type": "diag"}, state_arrays(state))
    assert decode_ack(ask(DOWNLOAD, request, ctx).content) == 0
    kept = StateStore(ctx.state)["global-model"]
    np.testing.assert_array_equal(kept.covariances, state.covariances)


def test_a_message_of_one_type_with_another_kind_is_refused(blobs_config: dict[str, Any]) -> None:
    ctx = context({"partition-id": 0, "num-partitions": 3}, blobs_config)
    with pytest.raises(ValueError, match="carries a 'moments' request"):
        client_app(make_message(encode_request(MOMENTS, {}), 7, MESSAGE_TYPES[FIT_LOCAL]), ctx)


def test_file_node_reads_its_own_csv(tmp_path: Any) -> None:
    rows = np.random.default_rng(0).normal(size=(40, 3))
    path = tmp_path / "node.csv"
    lines = ["a,b,label,c"] + [f"{r[0]:.17g},{r[1]:.17g},{i % 2},{r[2]:.17g}" for i, r in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    ctx = context({"data-path": str(path), "label-column": "label", "client-id": 5}, {"dataset": "nonexistent"})
    moments = decode_moments(ask(MOMENTS, encode_request(MOMENTS, {}), ctx).content)
    assert moments.client_id == 5 and moments.count == 40
    np.testing.assert_allclose(moments.total, rows.sum(axis=0))


def test_node_config_errors_name_the_fix(tmp_path: Any) -> None:
    with pytest.raises(SettingsError, match="partition-id"):
        node_data({}, {})
    with pytest.raises(SettingsError, match="client-id"):
        node_data({"data-path": str(tmp_path / "x.csv")}, {})
    with pytest.raises(FileNotFoundError, match="no such file"):
        node_data({"data-path": str(tmp_path / "x.csv"), "client-id": 1}, {})
    with pytest.raises(SettingsError, match=r"partition-id must be in \[0, num-partitions=3\)"):
        node_data({"partition-id": 3, "num-partitions": 3}, {"dataset": "blobs"})


def test_node_config_overrides_the_run_configs_data_settings(blobs_config: dict[str, Any]) -> None:
    node = node_data({"partition-id": 0, "num-partitions": 2, "dataset-args": "n_samples=200"}, blobs_config)
    run = node_data({"partition-id": 0, "num-partitions": 2}, blobs_config)
    assert node.X.shape[0] < run.X.shape[0]


def test_unknown_message_type_has_no_handler(blobs_config: dict[str, Any]) -> None:
    ctx = context({"partition-id": 0, "num-partitions": 3}, blobs_config)
    with pytest.raises(Exception, match="No query function registered"):
        client_app(make_message(encode_request(MOMENTS, {}), 7, "query.nosuch"), ctx)

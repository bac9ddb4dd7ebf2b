"""The ServerApp's job over a fake Grid: same models and bytes as the in-process runner, faults, outputs."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flower_testing import FakeGrid, inprocess_reference
from flwr.app import ConfigRecord, Context, Message

from fedgmm.exceptions import FederationError
from fedgmm.flower.job import run_job, wait_for_nodes
from fedgmm.flower.settings import DEFAULTS, RunSettings, SettingsError, parse_pairs
from fedgmm.model_io import load_mixture

pytestmark = pytest.mark.usefixtures("task_identity")
ROOT = Path(__file__).resolve().parents[2]


def assert_same_model(path: Path, reference: Any) -> dict[str, Any]:
    state, meta = load_mixture(path)
    ref = reference.state_
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(getattr(state, name), getattr(ref, name), rtol=1e-9, atol=1e-12)
    return meta


@pytest.mark.parametrize(
    ("algorithm", "preprocessing"), [("fedgengmm", "none"), ("fedem", "standardize"), ("hybrid", "pca")]
)
def test_same_model_and_bytes_as_the_inprocess_runner(
    blobs_config: dict[str, Any], nodes: dict[int, Any], algorithm: str, preprocessing: str
) -> None:
    config = {**blobs_config, "algorithm": algorithm, "preprocessing": preprocessing, "pca-components": 2}
    summary = run_job(FakeGrid(nodes, config), config, run_id=11)
    out = Path(config["output-dir"])
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["status"] == "completed" and summary["algorithm"] == algorithm and summary["clients_used"] == 3
    run, pre_log, transform = inprocess_reference(config)
    meta = assert_same_model(out / "model.npz", run.model)
    assert meta["extra"]["algorithm"] == algorithm and meta["extra"]["run_id"] == 11
    comm = run.communication
    assert (summary["rounds"], summary["bytes_up"], summary["bytes_down"]) == (comm.rounds, comm.bytes_up, comm.bytes_down)
    assert [r["bytes_up"] for r in summary["per_round"]] == [r.bytes_up for r in comm.per_round]
    if pre_log is not None:
        pre = summary["preprocessing_communication"]
        assert (pre["bytes_up"], pre["bytes_down"]) == (pre_log.bytes_up, pre_log.bytes_down)
        assert pre["transform_id"] == transform.transform_id
        with np.load(out / "transform.npz") as saved:
            np.testing.assert_array_equal(saved["matrix"], transform.matrix)
    if algorithm != "fedgengmm":
        assert [h["log_likelihood"] for h in summary["history"]] == pytest.approx([r.log_likelihood for r in run.history])
    assert [c["source"] for c in summary["clients"]] == ["client 0", "client 1", "client 2"]


def test_goes_on_without_a_failing_node_when_the_minimum_is_met(blobs_config: dict[str, Any], nodes: dict[int, Any]) -> None:
    config = {**blobs_config, "algorithm": "fedem"}
    grid = FakeGrid(nodes, config, {7000: "timeout"})
    summary = run_job(grid, config)
    assert summary["status"] == "completed" and summary["clients_used"] == 2
    failed = [c for c in summary["clients"] if c["status"] != "ok"]
    assert len(failed) == 1 and failed[0]["node_id"] == 7000 and "no reply within the round timeout" in failed[0]["reason"]
    node = next(n for n in summary["nodes"] if n["node_id"] == 7000)
    assert not node["lost"] and len(node["failures"]) == summary["rounds"]  # asked every round, never answered
    progress = json.loads((Path(config["output-dir"]) / "progress.json").read_text())
    assert progress["round"] == summary["rounds"] and "node 7000" in progress["failed"]


def test_fails_clearly_when_too_few_answer(blobs_config: dict[str, Any], nodes: dict[int, Any]) -> None:
    def boom(message: Message, context: Context) -> Message:
        raise RuntimeError("disk on fire")

    config = {**blobs_config, "algorithm": "fedem", "min-replies": 2}
    with pytest.raises(FederationError, match=r"only 1 usable client\(s\), at least 2 required.*disk on fire"):
        run_job(FakeGrid(nodes, config, {7000: "timeout", 8000: boom}), config)
    summary = json.loads((Path(config["output-dir"]) / "summary.json").read_text())
    assert summary["status"] == "failed" and "FederationError" in summary["error"] and "no reply" in summary["error"]
    assert len([n for n in summary["nodes"] if n["failures"]]) == 2
    assert not (Path(config["output-dir"]) / "model.npz").exists()


def test_hostile_replies_are_rejected_by_the_decoders(blobs_config: dict[str, Any], nodes: dict[int, Any]) -> None:
    from fedgmm.flower.client_app import app as client_app

    def hostile(message: Message, context: Context) -> Message:
        reply = client_app(message, context)
        content = reply.content
        content["config"] = ConfigRecord({**dict(content["config"]), "n-samples": 10**15})
        return Message(content=content, reply_to=message)

    config = {**blobs_config, "algorithm": "fedgengmm"}
    summary = run_job(FakeGrid(nodes, config, {8000: hostile}), config)
    rejected = [c for c in summary["clients"] if c["status"] == "rejected"]
    assert summary["clients_used"] == 2 and len(rejected) == 1 and "n-samples" in rejected[0]["reason"]


def test_waits_for_nodes_and_explains_a_timeout() -> None:
    class Grid:
        calls = 0

        def get_node_ids(self) -> list[int]:
            self.calls += 1
            return [1, 2] if self.calls < 3 else [1, 2, 3]

        def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
            return []

    clock = iter(range(100))
    assert wait_for_nodes(Grid(), 3, 10.0, clock=lambda: float(next(clock)), sleep=lambda s: None) == [1, 2, 3]
    clock = iter(range(100))
    with pytest.raises(FederationError, match=r"only 3 of the 4 SuperNodes needed \(min-nodes\) connected within 5 s"):
        wait_for_nodes(Grid(), 4, 5.0, clock=lambda: float(next(clock)), sleep=lambda s: None)


def test_evaluation_on_a_file_and_model_download(tmp_path: Path, blobs_config: dict[str, Any], nodes: dict[int, Any]) -> None:
    from fedgmm.em.stats import score_samples
    from fedgmm.flower.store import StateStore

    rows = np.random.default_rng(1).normal(size=(30, 2))
    np.save(tmp_path / "eval.npy", rows)
    config = {**blobs_config, "eval-path": str(tmp_path / "eval.npy"), "download-model": True}
    grid = FakeGrid(nodes, config)
    summary = run_job(grid, config)
    state, _ = load_mixture(Path(config["output-dir"]) / "model.npz")
    assert summary["evaluation"]["n_samples"] == 30
    assert summary["evaluation"]["log_likelihood"] == pytest.approx(float(np.mean(score_samples(rows, state))))
    assert summary["download"]["acknowledged"] == 3 and summary["download"]["rounds"] == 1
    assert summary["rounds"] == 1  # the download is counted apart from the algorithm
    for ctx in grid.contexts.values():
        np.testing.assert_array_equal(StateStore(ctx.state)["global-model"].means, state.means)


def test_settings_are_checked_with_the_key_named() -> None:
    for key, value, match in [
        ("algorithm", "fedavg", "'algorithm' must be one of"),
        ("n-components", 0, "'n-components' must be >= 1"),
        ("round-timeout", 0.0, "'round-timeout' must be > 0"),
        ("preprocessing", "pca", "pca-components >= 1"),
        ("dataset", 3, "'dataset' must be a string"),
        ("synthetic-size", -1, "'synthetic-size' must be a positive"),
        ("dataset-args", "n_samples", "not of the form name=value"),
    ]:
        with pytest.raises(SettingsError, match=match):
            RunSettings.from_run_config({**DEFAULTS, key: value})
    with pytest.raises(SettingsError, match=r"for algorithm .fedgengmm. only"):
        RunSettings.from_run_config({**DEFAULTS, "algorithm": "fedem", "n-components-max": 12})
    assert RunSettings.from_run_config({**DEFAULTS, "n-components-max": 12}).spec.n_components == (10, 12)
    assert parse_pairs("n-samples=600, name='x' ratio=0.5 on=true") == (
        ("n_samples", 600), ("name", "x"), ("ratio", 0.5), ("on", True)
    )


def test_pyproject_declares_every_run_config_key_and_no_federations() -> None:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]
    assert "federations" not in tool  # `flwr run`/`flwr ls` would rewrite the file
    assert tool["app"]["components"] == {
        "serverapp": "fedgmm.flower.server_app:app", "clientapp": "fedgmm.flower.client_app:app",
    }  # fmt: skip
    assert tool["app"]["config"] == DEFAULTS



def test_an_invalid_run_config_fails_with_a_summary(blobs_config: dict[str, Any], nodes: dict[int, Any]) -> None:
    config = {**blobs_config, "algorithm": "fedsgd"}
    with pytest.raises(SettingsError, match="'algorithm' must be one of"):
        run_job(FakeGrid(nodes, config), config, run_id=4)
    summary = json.loads((Path(config["output-dir"]) / "summary.json").read_text())
    assert summary["status"] == "failed" and "fedsgd" in summary["error"] and summary["run_id"] == 4


def test_summary_names_the_empty_components_of_the_global_fit() -> None:
    """What the in-process FedGenGMM warns about (EmptyComponentWarning) is in summary.json's details."""
    import warnings

    from fedgmm.federated.dispatch import run_method
    from fedgmm.federated.spec import MethodSpec
    from fedgmm.flower.job import outcome_details
    from fedgmm.inprocess.transport import InProcessTransport

    rng = np.random.default_rng(0)
    tight = [np.r_[rng.normal(size=(60, 2)) * 0.01, rng.normal(size=(60, 2)) * 0.01 + 5] for _ in range(3)]
    details = {}
    for k in (20, 2):
        with warnings.catch_warnings(), InProcessTransport(tight) as transport:
            warnings.simplefilter("ignore")
            run = run_method(transport, MethodSpec("fedgengmm", n_components=k, local_components=2), 0)
        details[k] = outcome_details(run)
        json.dumps(details[k])  # JSON-ready
    weights, rows = run.fedgengmm.global_model.weights_, run.fedgengmm.synthetic_size  # type: ignore[union-attr]
    assert details[2]["empty_components"] == [] and all(w * rows >= 0.01 for w in weights)
    empty = details[20]["empty_components"]
    assert empty and all(isinstance(i, int) and 0 <= i < 20 for i in empty)  # two tight clusters cannot feed 20

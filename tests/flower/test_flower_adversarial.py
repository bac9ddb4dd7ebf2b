"""Adversarial nodes (node config ``attack``): forged replies on the wire, screened by the ServerApp's robust steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flower_testing import FakeGrid, partition_nodes
from flwr.app import RecordDict

from fedgmm.exceptions import FederationError
from fedgmm.federated.client import EM_STATISTICS
from fedgmm.federated.messages import CONFIG
from fedgmm.flower.client_app import tampered
from fedgmm.flower.job import run_job
from fedgmm.flower.settings import SettingsError
from fedgmm.flower.store import StateStore

pytestmark = pytest.mark.usefixtures("task_identity")
ATTACKER = 8000  # partition 1 (ids descend from 9000)


def adversarial_nodes(attack: str, n: int = 4) -> dict[int, dict[str, Any]]:
    nodes = partition_nodes(n)
    nodes[ATTACKER] = {**nodes[ATTACKER], "attack": attack}
    return nodes


def client_of(summary: dict[str, Any], node_id: int) -> dict[str, Any]:
    return next(c for c in summary["clients"] if c["node_id"] == node_id)


def test_alternating_attack_keeps_its_round_counter_in_the_node_state() -> None:
    from flwr.app import ConfigRecord

    store = StateStore(RecordDict())
    signs = []
    for _ in range(3):  # one fresh attack object per message, as a fresh ClientApp process builds it
        reply = RecordDict({CONFIG: ConfigRecord({"status": "ok", "log-likelihood": -1.0})})
        forged = tampered(EM_STATISTICS, reply, {"attack": "forged-statistics:alternating:1e6"}, store)
        signs.append(forged.config_records[CONFIG]["log-likelihood"])
    assert signs == [1e6, -1e6, 1e6]
    assert tampered(EM_STATISTICS, reply, {}, store) is reply  # an honest node sends what it computed
    with pytest.raises(SettingsError, match="unknown attack 'no-such'"):
        tampered(EM_STATISTICS, reply, {"attack": "no-such:1"}, store)


def test_scaled_means_node_is_rejected_and_the_run_completes(blobs_config: dict[str, Any]) -> None:
    config = {**blobs_config, "min-nodes": 4, "round-timeout": 120.0}
    nodes = adversarial_nodes("scaled-means:1e15")
    summary = run_job(FakeGrid(nodes, config), config)
    assert summary["status"] == "completed"
    bad = client_of(summary, ATTACKER)
    assert bad["status"] == "rejected" and "robust scales from the federation" in bad["reason"]
    assert all(client_of(summary, n)["status"] == "ok" for n in nodes if n != ATTACKER)
    saved = json.loads((Path(config["output-dir"]) / "summary.json").read_text())
    assert client_of(saved, ATTACKER)["status"] == "rejected"


def test_plain_recipe_fails_naming_the_attacker(blobs_config: dict[str, Any]) -> None:
    config = {**blobs_config, "min-nodes": 4, "round-timeout": 120.0, "robust": False}
    with pytest.raises(FederationError, match=r"Most atypical clients merged: client 1 "):
        run_job(FakeGrid(adversarial_nodes("scaled-means:1e15"), config), config)


def test_fedem_statistics_node_is_capped_every_round(blobs_config: dict[str, Any]) -> None:
    config = {**blobs_config, "algorithm": "fedem", "min-nodes": 4, "round-timeout": 120.0, "max-rounds": 3}
    summary = run_job(FakeGrid(adversarial_nodes("scaled-statistics:1e6"), config), config)
    assert summary["status"] == "completed"
    assert all(any(d["client_id"] == 1 for d in h["flagged"]) for h in summary["history"])
    assert "capped" in client_of(summary, ATTACKER)["reason"]


@pytest.mark.flower
def test_deployment_with_an_adversarial_supernode(tmp_path: Path, blobs_config: dict[str, Any]) -> None:
    """Real SuperLink and SuperNodes: the node started with ``attack='scaled-means:1e15'`` is rejected."""
    from fedgmm.flower.control import COMPLETED
    from fedgmm.flower.federation import LocalFederation

    configs: list[dict[str, Any]] = [{"partition-id": i, "num-partitions": 4} for i in range(4)]
    configs[1]["attack"] = "scaled-means:1e15"
    out = tmp_path / "out"
    config = {**blobs_config, "min-nodes": 4, "output-dir": str(out), "wait-timeout": 120.0, "round-timeout": 240.0}
    fed = LocalFederation(tmp_path / "fed", configs)
    try:
        fed.start()
        run_id = fed.submit(config)
        record = fed.wait(run_id, timeout=600, output_dir=out)
    finally:
        fed.stop()
    assert record["status"] == COMPLETED, record
    summary = json.loads((out / "summary.json").read_text())
    by_client = {c["client_id"]: c for c in summary["clients"]}
    assert by_client[1]["status"] == "rejected" and "robust scales from the federation" in by_client[1]["reason"]
    assert [by_client[i]["status"] for i in (0, 2, 3)] == ["ok", "ok", "ok"]

"""A DP FedGenGMM run over a fake Grid: run config keys, summary.json and the model file record the guarantee."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flower_testing import FakeGrid

from fedgmm.flower.job import run_job
from fedgmm.flower.settings import RunSettings, SettingsError
from fedgmm.model_io import read_metadata

pytestmark = pytest.mark.usefixtures("task_identity")
pytest.importorskip("dp_accounting")


def test_dp_run_records_the_guarantee(blobs_config: dict[str, Any], nodes: dict[int, Any]) -> None:
    config = {**blobs_config, "epsilon": 2.0, "delta": 1e-6, "preprocessing": "standardize"}
    summary = run_job(FakeGrid(nodes, config), config, run_id=3)
    assert summary["status"] == "completed"
    out = Path(config["output-dir"])
    priv = json.loads((out / "summary.json").read_text())["privacy"]
    assert priv["epsilon"] == 2.0 and priv["delta"] == 1e-6 and priv["neighbours"] == "add/remove one row"
    assert len(priv["spent"]) == summary["clients_used"]
    assert all(0 < e <= 2.0 and d == 1e-6 for e, d in priv["spent"].values())
    assert priv["noise_source"] == "client-secret"  # the default: each node's own secret seeds its noise
    assert read_metadata(out / "model.npz")["extra"]["privacy"] == priv


def test_non_private_run_has_no_guarantee(blobs_config: dict[str, Any], nodes: dict[int, Any]) -> None:
    summary = run_job(FakeGrid(nodes, blobs_config), blobs_config, run_id=3)
    assert summary["privacy"] is None


@pytest.mark.parametrize(("key", "value"), [("epsilon", -1.0), ("delta", 0.0), ("delta", 1.5), ("clip-bound", -2.0)])
def test_bad_privacy_keys_are_named(blobs_config: dict[str, Any], key: str, value: float) -> None:
    with pytest.raises(SettingsError, match=key):
        RunSettings.from_run_config({**blobs_config, key: value})


def test_epsilon_zero_is_off(blobs_config: dict[str, Any]) -> None:
    spec = RunSettings.from_run_config({**blobs_config, "epsilon": 0.0, "clip-bound": 3.0}).spec
    assert spec.epsilon is None and spec.clip_bound == 3.0
    assert RunSettings.from_run_config({**blobs_config, "epsilon": 1.5}).spec.epsilon == 1.5


def test_private_federated_em_through_flower_is_the_inprocess_model(blobs_config: dict[str, Any], nodes: dict[int, Any]) -> None:
    import numpy as np
    from flower_testing import inprocess_reference

    from fedgmm.model_io import load_mixture

    # Equality with the in-process run needs the reproducible noise seed (the default noise is each node's secret).
    config = {**blobs_config, "algorithm": "fedem", "epsilon": 8.0, "preprocessing": "standardize", "max-rounds": 3,
              "dp-noise-seed": 7}
    summary = run_job(FakeGrid(nodes, config), config, run_id=5)
    assert summary["status"] == "completed" and summary["n_rounds"] == 3
    out = Path(config["output-dir"])
    priv = json.loads((out / "summary.json").read_text())["privacy"]
    assert priv["epsilon"] == 8.0 and priv["noise"] == "local" and priv["max_rounds"] == 3
    assert priv["noise_source"] == "reproducible-seed (known to the server: no protection against it)"
    assert len(priv["spent"]) == summary["clients_used"] == 3
    assert all(7.9 < e <= 8.0 and d == 1e-5 for e, d in priv["spent"].values())
    assert all(h["log_likelihood"] is None for h in summary["history"]) and summary["lower_bound"] is None
    state, meta = load_mixture(out / "model.npz")
    assert meta["extra"]["privacy"] == priv
    run, _, _ = inprocess_reference(config)
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(getattr(state, name), getattr(run.model.state_, name), rtol=1e-9, atol=1e-12)
    assert (summary["bytes_up"], summary["bytes_down"]) == (run.communication.bytes_up, run.communication.bytes_down)


def test_dp_noise_key(blobs_config: dict[str, Any]) -> None:
    assert RunSettings.from_run_config(blobs_config).spec.dp_noise == "local"
    spec = RunSettings.from_run_config({**blobs_config, "dp-noise": "distributed", "algorithm": "fedem"}).spec
    assert spec.dp_noise == "distributed"
    with pytest.raises(SettingsError, match="dp-noise"):
        RunSettings.from_run_config({**blobs_config, "dp-noise": "central"})


def test_dp_noise_seed_key(blobs_config: dict[str, Any]) -> None:
    assert RunSettings.from_run_config(blobs_config).spec.dp_noise_seed is None  # -1: the nodes' secrets
    assert RunSettings.from_run_config({**blobs_config, "dp-noise-seed": 0}).spec.dp_noise_seed == 0
    with pytest.raises(SettingsError, match="dp-noise-seed"):
        RunSettings.from_run_config({**blobs_config, "dp-noise-seed": -2})

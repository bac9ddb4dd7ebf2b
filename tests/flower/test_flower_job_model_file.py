"""A Flower run's model.npz carries its transform, so ``fedgmm score`` scores raw rows with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flower_testing import FakeGrid
from typer.testing import CliRunner

from fedgmm.cli import app
from fedgmm.flower.job import run_job
from fedgmm.model_io import load_model, save_mixture

pytestmark = pytest.mark.usefixtures("task_identity")
runner = CliRunner()


def flat(result: Any) -> str:
    return " ".join(result.output.split())


def test_flower_model_with_pca_is_scorable_from_the_cli(
    tmp_path: Path, blobs_config: dict[str, Any], nodes: dict[int, Any]
) -> None:
    config = {**blobs_config, "preprocessing": "pca", "pca-components": 1}
    run_job(FakeGrid(nodes, config), config, run_id=3)
    out = Path(config["output-dir"])
    loaded = load_model(out / "model.npz")
    assert loaded.transform is not None and loaded.state.n_features == 1
    d_in = loaded.transform["matrix"].shape[0]
    with np.load(out / "transform.npz") as side:
        np.testing.assert_array_equal(side["matrix"], loaded.transform["matrix"])
    rows = tmp_path / "rows.npy"
    np.save(rows, np.random.default_rng(0).normal(size=(20, d_in)))
    scores = tmp_path / "s.csv"
    result = runner.invoke(app, ["score", str(out / "model.npz"), str(rows), "--out", str(scores)])
    assert result.exit_code == 0, result.output
    assert len(scores.read_text().splitlines()) == 21

    bare = out / "bare.npz"  # an older Flower model: the transform only in transform.npz beside it
    save_mixture(bare, loaded.state)
    result = runner.invoke(app, ["score", str(bare), str(rows)])
    assert result.exit_code == 2 and "transform.npz" in flat(result) and f"has {d_in} features" in flat(result)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_flower_outputs_honour_the_umask(tmp_path: Path, blobs_config: dict[str, Any], nodes: dict[int, Any], umask: int) -> None:
    import os

    config = {**blobs_config, "preprocessing": "standardize"}
    old = os.umask(umask)
    try:
        run_job(FakeGrid(nodes, config), config, run_id=4)
    finally:
        os.umask(old)
    out = Path(config["output-dir"])
    for name in ("model.npz", "transform.npz"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name

"""The fedgmm command: fit and score on users' files, listings, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedgmm.cli import app

runner = CliRunner()


def client_files(tmp_path: Path, n_clients: int = 3) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n_clients):
        X = np.r_[rng.normal(size=(150, 3)), rng.normal(size=(150, 3)) + 6]
        path = tmp_path / f"client{i}.csv"
        np.savetxt(path, X, delimiter=",", header="a,b,c", comments="")
        paths.append(path)
    return paths


def test_fit_then_score(tmp_path: Path) -> None:
    files = client_files(tmp_path)
    model = tmp_path / "model.npz"
    result = runner.invoke(app, ["fit", *map(str, files), "--out", str(model), "--components", "2", "--local-components", "2"])
    assert result.exit_code == 0, result.output
    assert model.is_file() and "fedgengmm on 3 client file(s)" in result.output
    probe = tmp_path / "probe.npy"
    np.save(probe, np.array([[0.0, 0.0, 0.0], [6.0, 6.0, 6.0], [40.0, -40.0, 40.0]]))
    out_csv = tmp_path / "scores.csv"
    scored = runner.invoke(app, ["score", str(model), str(probe), "--threshold", "-20", "--out", str(out_csv)])
    assert scored.exit_code == 0, scored.output
    lines = out_csv.read_text().splitlines()
    assert lines[0] == "row,log_likelihood,anomaly"
    assert [line.split(",")[2] for line in lines[1:]] == ["0", "0", "1"]


@pytest.mark.parametrize("method", ["fedem", "hybrid", "centralized"])
def test_fit_other_methods(tmp_path: Path, method: str) -> None:
    files = client_files(tmp_path, 2)
    result = runner.invoke(
        app, ["fit", *map(str, files), "--method", method, "--components", "2", "--rounds", "3", "--out", str(tmp_path / "m.npz")]
    )
    assert result.exit_code == 0, result.output


def test_csv_with_a_non_numeric_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,abc\n")
    result = runner.invoke(app, ["fit", str(bad), "--components", "1"])
    assert result.exit_code == 2
    assert "not a number" in result.output and "abc" in result.output


def test_ragged_csv(tmp_path: Path) -> None:
    bad = tmp_path / "ragged.csv"
    bad.write_text("1,2\n3,4,5\n")
    result = runner.invoke(app, ["fit", str(bad), "--components", "1"])
    assert result.exit_code == 2 and "ragged.csv" in result.output


def test_model_file_that_is_not_ours(tmp_path: Path) -> None:
    fake = tmp_path / "model.npz"
    fake.write_bytes(b"this is not a model")
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((2, 3)))
    result = runner.invoke(app, ["score", str(fake), str(data)])
    assert result.exit_code == 2
    assert "not a fedgmm model file" in result.output


def test_clients_with_different_features(tmp_path: Path) -> None:
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, np.zeros((10, 3)))
    np.save(b, np.zeros((10, 4)))
    result = runner.invoke(app, ["fit", str(a), str(b)])
    assert result.exit_code == 2 and "different feature counts" in result.output


def test_unknown_study_and_typo_in_config(tmp_path: Path) -> None:
    result = runner.invoke(app, ["study", "mian"])
    assert result.exit_code == 2 and "neither a study config file nor a shipped study" in result.output
    cfg = tmp_path / "s.toml"
    cfg.write_text('name = "s"\ndatasets = ["digitz"]\n')
    result = runner.invoke(app, ["study", str(cfg)])
    assert result.exit_code == 2 and "unknown dataset 'digitz'" in result.output and "digits" in result.output


def test_datasets_and_studies_listings() -> None:
    result = runner.invoke(app, ["datasets"])
    assert result.exit_code == 0 and "digits" in result.output and "blobs" in result.output
    result = runner.invoke(app, ["studies"])
    assert result.exit_code == 0 and "main" in result.output and "robustness" in result.output

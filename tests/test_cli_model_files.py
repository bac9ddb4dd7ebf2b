"""``fedgmm fit``/``score``: feature names from headers, --preprocess, stored transforms, options checked first."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from fedgmm.cli import app
from fedgmm.model_io import load_model

runner = CliRunner()


def flat(result: Any) -> str:
    return " ".join(result.output.split())


def write_csv(path: Path, X: np.ndarray, header: str) -> Path:
    np.savetxt(path, X, delimiter=",", header=header, comments="")
    return path


def clients(tmp_path: Path, n: int = 2, scale: tuple[float, ...] = (1.0, 1.0, 1.0)) -> list[Path]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        X = np.r_[rng.normal(size=(120, 3)), rng.normal(size=(120, 3)) + 6] * np.asarray(scale)
        out.append(write_csv(tmp_path / f"client{i}.csv", X, "a,b,c"))
    return out


FIT = ["--components", "2", "--local-components", "2"]


def test_fit_stores_feature_names(tmp_path: Path) -> None:
    model = tmp_path / "m.npz"
    result = runner.invoke(app, ["fit", *map(str, clients(tmp_path)), *FIT, "--out", str(model)])
    assert result.exit_code == 0, result.output
    assert load_model(model).feature_names == ["a", "b", "c"]


def test_fit_refuses_clients_whose_headers_differ(tmp_path: Path) -> None:
    files = clients(tmp_path)
    X = np.loadtxt(files[1], delimiter=",", skiprows=1)
    write_csv(files[1], X[:, ::-1], "c,b,a")
    result = runner.invoke(app, ["fit", *map(str, files), *FIT, "--out", str(tmp_path / "m.npz")])
    assert result.exit_code == 2 and "header differs" in flat(result) and "'a'" in flat(result)
    write_csv(files[1], X, "a,b,x")
    renamed = runner.invoke(app, ["fit", *map(str, files), *FIT, "--out", str(tmp_path / "m.npz")])
    assert renamed.exit_code == 2 and "missing ['c']" in flat(renamed) and "unexpected ['x']" in flat(renamed)
    assert not (tmp_path / "m.npz").exists()


def test_score_refuses_reordered_or_renamed_columns(tmp_path: Path) -> None:
    files = clients(tmp_path)
    model = tmp_path / "m.npz"
    assert runner.invoke(app, ["fit", *map(str, files), *FIT, "--out", str(model)]).exit_code == 0
    X = np.loadtxt(files[0], delimiter=",", skiprows=1)
    reordered = write_csv(tmp_path / "cba.csv", X[:, ::-1], "c,b,a")
    result = runner.invoke(app, ["score", str(model), str(reordered)])
    assert result.exit_code == 2 and "reordered" in flat(result) and "['a', 'b', 'c']" in flat(result)
    renamed = write_csv(tmp_path / "abx.csv", X, "a,b,x")
    result = runner.invoke(app, ["score", str(model), str(renamed)])
    assert result.exit_code == 2 and "missing ['c']" in flat(result)
    same = runner.invoke(app, ["score", str(model), str(files[0]), "--out", str(tmp_path / "s.csv")])
    assert same.exit_code == 0, same.output


@pytest.mark.parametrize("mode", ["standardize", "pca"])
def test_preprocess_is_stored_and_applied_when_scoring(tmp_path: Path, mode: str) -> None:
    files = clients(tmp_path, scale=(1.0, 1000.0, 0.001))
    model = tmp_path / "m.npz"
    extra = ["--pca-components", "2"] if mode == "pca" else []
    result = runner.invoke(app, ["fit", *map(str, files), *FIT, "--preprocess", mode, *extra, "--out", str(model)])
    assert result.exit_code == 0, result.output
    loaded = load_model(model)
    assert loaded.transform is not None and loaded.transform["matrix"].shape == (3, 2 if mode == "pca" else 3)
    assert loaded.feature_names == ["a", "b", "c"] and loaded.state.n_features == (2 if mode == "pca" else 3)
    out_csv = tmp_path / "s.csv"
    scored = runner.invoke(app, ["score", str(model), str(files[0]), "--out", str(out_csv)])
    assert scored.exit_code == 0, scored.output
    ll = np.loadtxt(out_csv, delimiter=",", skiprows=1)[:, 1]
    assert ll.shape == (240,) and np.all(np.isfinite(ll))


def test_fit_prints_its_phases(tmp_path: Path) -> None:
    result = runner.invoke(app, ["fit", *map(str, clients(tmp_path)), *FIT, "--method", "fedem", "--rounds", "3",
                                 "--out", str(tmp_path / "m.npz")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "reading 2 client file(s)" in flat(result) and "em-statistics: 2 client(s) answered" in flat(result)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--covariance-type", "ful"], "--covariance-type must be one of"),
        (["--reg-covar", "-1"], "--reg-covar must be a finite number >= 0"),
        (["--rounds", "0"], "--rounds must be an integer >= 1"),
        (["--components", "0"], "--components must be an integer >= 1, got 0"),
        (["--preprocess", "whiten"], "--preprocess must be one of"),
        (["--local-components", "0"], "--local-components must be"),
    ],
)
def test_fit_options_are_checked_before_reading(tmp_path: Path, option: list[str], message: str) -> None:
    missing = tmp_path / "not-there.csv"  # never read: the option fails first
    result = runner.invoke(app, ["fit", str(missing), *option])
    assert result.exit_code == 2 and message in flat(result) and "(0, 0)" not in flat(result)


def test_out_in_a_missing_folder_fails_first(tmp_path: Path) -> None:
    result = runner.invoke(app, ["fit", str(tmp_path / "not-there.csv"), "--out", str(tmp_path / "nope" / "m.npz")])
    assert result.exit_code == 2 and "does not exist" in flat(result) and "nope" in flat(result)


def test_score_threshold_nan(tmp_path: Path) -> None:
    model = tmp_path / "m.npz"
    files = clients(tmp_path)
    assert runner.invoke(app, ["fit", *map(str, files), *FIT, "--out", str(model)]).exit_code == 0
    result = runner.invoke(app, ["score", str(model), str(files[0]), "--threshold", "nan"])
    assert result.exit_code == 2 and "--threshold must be a finite number" in flat(result)


def test_fit_suggests_preprocess_when_scales_differ(tmp_path: Path) -> None:
    wide = runner.invoke(app, ["fit", *map(str, clients(tmp_path, scale=(1.0, 1000.0, 0.001))), *FIT,
                               "--out", str(tmp_path / "m.npz")])  # fmt: skip
    assert wide.exit_code == 0, wide.output
    assert "scales differ by a factor of" in flat(wide) and "'b' has standard deviation" in flat(wide)
    assert "--preprocess standardize" in flat(wide)
    same = runner.invoke(app, ["fit", *map(str, clients(tmp_path)), *FIT, "--out", str(tmp_path / "m.npz")])
    assert same.exit_code == 0 and "scales differ" not in flat(same)
    done = runner.invoke(app, ["fit", *map(str, clients(tmp_path, scale=(1.0, 1000.0, 0.001))), *FIT,
                               "--preprocess", "standardize", "--out", str(tmp_path / "m.npz")])  # fmt: skip
    assert done.exit_code == 0 and "scales differ" not in flat(done)


@pytest.mark.parametrize("payload", ["[" * 100_000 + "]" * 100_000, "NaN"])
def test_score_on_a_hostile_metadata_is_an_error_not_a_traceback(tmp_path: Path, payload: str) -> None:
    model = tmp_path / "m.npz"
    assert runner.invoke(app, ["fit", *map(str, clients(tmp_path)), *FIT, "--out", str(model)]).exit_code == 0
    with zipfile.ZipFile(model) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    with np.load(model) as npz:
        meta = json.loads(bytes(npz["metadata"]).decode())
    meta["extra"] = {"x": "PAYLOAD"}
    text = json.dumps(meta).replace('"PAYLOAD"', payload)
    hostile = tmp_path / "hostile.npz"
    with zipfile.ZipFile(hostile, "w") as zf:
        for name, blob in members.items():
            if name == "metadata.npy":
                buf = io.BytesIO()
                np.save(buf, np.frombuffer(text.encode(), np.uint8))
                blob = buf.getvalue()
            zf.writestr(name, blob)
    result = runner.invoke(app, ["score", str(hostile), str(tmp_path / "client0.csv")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and ("nested" in flat(result) or "strict JSON" in flat(result))

"""ODDS tables from the mlbench .rda files: sizes, outlier counts, labels, and bad or missing files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedgmm.datasets import DatasetFormatError, DatasetNotAvailableError, load_dataset
from fedgmm.datasets.locate import MLBENCH_ENV, find_dir, mlbench_dirs

# name -> (n_samples, n_features, n_outliers, rows per class 0..C-1)
EXPECTED = {
    "shuttle": (49097, 9, 3511, [45586, 50, 171, 3267, 10, 13]),
    "satellite": (6435, 36, 2036, [1533, 703, 1358, 626, 707, 1508]),
    "breastw": (683, 9, 239, [444, 239]),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_odds_sizes_and_outliers(name: str, require: Callable[[str], None]) -> None:
    require(name)
    n, d, n_outliers, per_class = EXPECTED[name]
    ds = load_dataset(name)
    assert ds.X.shape == (n, d) and ds.name == name
    assert ds.X.dtype == np.float64 and ds.X.flags.c_contiguous and np.isfinite(ds.X).all()
    assert ds.y.dtype == np.int64 and ds.y.min() == 0 and ds.y.max() == len(per_class) - 1
    assert np.bincount(ds.y).tolist() == per_class
    assert ds.anomaly is not None and ds.anomaly.dtype == np.bool_
    assert int(ds.anomaly.sum()) == n_outliers == ds.n_outliers
    assert ds.source.endswith(".rda") and "\n" not in ds.description


def test_shuttle_inliers_are_class_rad_flow(require: Callable[[str], None]) -> None:
    require("shuttle")
    ds = load_dataset("shuttle")
    assert ds.class_names == (
        "Rad.Flow",
        "Fpv.Close",
        "Fpv.Open",
        "Bypass",
        "Bpv.Close",
        "Bpv.Open",
    )
    assert ds.anomaly is not None
    np.testing.assert_array_equal(ds.anomaly, ds.y != 0)


def test_satellite_outliers_are_uci_classes_2_4_5(require: Callable[[str], None]) -> None:
    require("satellite")
    ds = load_dataset("satellite")
    outliers = {"cotton crop", "damp grey soil", "vegetation stubble"}
    expected = np.isin(ds.y, [i for i, c in enumerate(ds.class_names) if c in outliers])
    assert ds.anomaly is not None
    np.testing.assert_array_equal(ds.anomaly, expected)
    assert ds.X.min() >= 0 and ds.X.max() <= 255


def test_breastw_scores_are_level_values(require: Callable[[str], None]) -> None:
    require("breastw")
    ds = load_dataset("breastw")
    assert ds.class_names == ("benign", "malignant")
    assert ds.anomaly is not None
    np.testing.assert_array_equal(ds.anomaly, ds.y == 1)
    assert set(np.unique(ds.X)) <= set(range(1, 11))
    # mlbench's Mitoses factor has no level "9": values must come from level labels, not codes.
    assert ds.X[:, 8].max() == 10


@pytest.mark.parametrize("name", list(EXPECTED))
def test_missing_names_the_install_command(name: str, no_data_env: Path) -> None:
    with pytest.raises(DatasetNotAvailableError) as info:
        load_dataset(name)
    message = str(info.value)
    assert "`./dev data`" in message
    assert "apt-get download r-cran-mlbench" in message
    assert f"${MLBENCH_ENV}={no_data_env}" in message


def test_search_order_without_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MLBENCH_ENV, raising=False)
    monkeypatch.setenv("FEDGMM_DATA_HOME", str(tmp_path))
    dirs = mlbench_dirs()
    assert dirs == [
        Path("/usr/lib/R/site-library/mlbench/data"),
        tmp_path / "debian/usr/lib/R/site-library/mlbench/data",
    ]
    cached = dirs[1]
    cached.mkdir(parents=True)
    (cached / "Fedgmm-test.rda").write_bytes(b"x")
    (cached / "Empty.rda").write_bytes(b"")
    assert find_dir(dirs, ["Fedgmm-test.rda"]) == cached
    assert find_dir(dirs, ["Empty.rda"]) is None  # an empty file counts as missing


@pytest.fixture
def mlbench_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "mlbench"
    root.mkdir()
    monkeypatch.setenv(MLBENCH_ENV, str(root))
    return root


def test_garbage_rda(mlbench_override: Path) -> None:
    (mlbench_override / "Shuttle.rda").write_bytes(b"not an R data file")
    with pytest.raises(DatasetFormatError, match=r"Shuttle\.rda: not a readable R data file"):
        load_dataset("shuttle")


def test_truncated_rda(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, require: Callable[[str], None]
) -> None:
    require("breastw")
    real = find_dir(mlbench_dirs(), ["BreastCancer.rda"])
    assert real is not None
    data = (real / "BreastCancer.rda").read_bytes()
    (tmp_path / "BreastCancer.rda").write_bytes(data[: len(data) // 2])
    monkeypatch.setenv(MLBENCH_ENV, str(tmp_path))
    with pytest.raises(DatasetFormatError, match="not a readable R data file"):
        load_dataset("breastw")


def test_unexpected_factor_levels(mlbench_override: Path) -> None:
    pd = pytest.importorskip("pandas")
    pyreadr = pytest.importorskip("pyreadr")
    frame = pd.DataFrame({f"x.{i}": [1.0, 2.0] for i in range(1, 37)})
    frame["classes"] = pd.Categorical(["a", "b"])
    pyreadr.write_rdata(str(mlbench_override / "Satellite.rda"), frame, df_name="Satellite")
    with pytest.raises(
        DatasetFormatError, match="has levels \\['a', 'b'\\], expected \\['red soil'"
    ):
        load_dataset("satellite")


def test_wrong_object_and_missing_column(mlbench_override: Path) -> None:
    pd = pytest.importorskip("pandas")
    pyreadr = pytest.importorskip("pyreadr")
    frame = pd.DataFrame({"V1": [1.0]})
    pyreadr.write_rdata(str(mlbench_override / "Shuttle.rda"), frame, df_name="Other")
    with pytest.raises(
        DatasetFormatError, match="holds \\['Other'\\], expected a data frame 'Shuttle'"
    ):
        load_dataset("shuttle")
    pyreadr.write_rdata(str(mlbench_override / "Shuttle.rda"), frame, df_name="Shuttle")
    with pytest.raises(DatasetFormatError, match="no column 'Class'"):
        load_dataset("shuttle")

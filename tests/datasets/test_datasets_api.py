"""The public surface of fedgmm.datasets: Dataset invariants, list_datasets, load_dataset by name."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fedgmm.datasets import (
    Dataset,
    DatasetFormatError,
    DatasetInfo,
    DatasetNotAvailableError,
    list_datasets,
    load_dataset,
)
from fedgmm.datasets.base import encode_labels
from fedgmm.exceptions import FedGMMError

NAMES = [
    "digits",
    "fashion-mnist",
    "shuttle",
    "satellite",
    "breastw",
    "gunpoint",
    "italy-power-demand",
    "arrowhead",
    "kdd-tsad-135",
    "blobs",
]


def test_list_datasets_names_kinds_and_shapes() -> None:
    infos = list_datasets()
    assert [info.name for info in infos] == NAMES
    assert all(isinstance(info, DatasetInfo) for info in infos)
    by_name = {info.name: info for info in infos}
    assert {info.kind for info in infos} == {"image", "tabular", "time series", "synthetic"}
    assert (by_name["digits"].n_samples, by_name["digits"].n_features) == (1797, 64)
    assert (by_name["fashion-mnist"].n_samples, by_name["fashion-mnist"].n_features) == (70000, 784)
    assert by_name["shuttle"].n_outliers == 3511
    assert by_name["satellite"].n_outliers == 2036
    assert by_name["breastw"].n_outliers == 239
    assert by_name["digits"].available  # bundled in scikit-learn, a hard dependency
    for info in infos:
        assert info.install_hint
        assert "\n" not in info.description


def test_list_datasets_reports_missing_debian_data(no_data_env: object) -> None:
    by_name = {info.name: info for info in list_datasets()}
    for name in ("fashion-mnist", "shuttle", "satellite", "breastw"):
        assert not by_name[name].available
        assert by_name[name].install_hint.startswith("./dev data")
    assert "apt-get install -y dataset-fashion-mnist" in by_name["fashion-mnist"].install_hint
    assert "apt-get download r-cran-mlbench" in by_name["shuttle"].install_hint
    assert by_name["digits"].available and by_name["gunpoint"].available


def test_unknown_name_lists_names_and_suggests() -> None:
    with pytest.raises(ValueError, match="Did you mean 'fashion-mnist'") as info:
        load_dataset("fashon-mnist")
    message = str(info.value)
    for name in NAMES:
        assert name in message
    assert "'file'" in message
    with pytest.raises(ValueError, match=r"Unknown dataset 'nope'\. Known datasets: digits"):
        load_dataset("nope")


def test_names_are_case_and_separator_insensitive() -> None:
    assert load_dataset("Digits").n_samples == 1797
    assert load_dataset(" ITALY_POWER_DEMAND ").n_samples == 1096


def test_unexpected_keyword_is_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match=r"load_dataset\('digits'\).*no keyword arguments"):
        load_dataset("digits", subset="train")
    with pytest.raises(TypeError, match="accepts window, stride"):
        load_dataset("kdd-tsad-135", windw=3)


def test_digits() -> None:
    ds = load_dataset("digits")
    assert ds.X.shape == (1797, 64) and ds.name == "digits"
    assert ds.X.dtype == np.float64 and ds.X.flags.c_contiguous
    assert ds.y.dtype == np.int64 and set(np.unique(ds.y)) == set(range(10))
    assert ds.anomaly is None and ds.n_outliers is None
    assert ds.n_classes == 10 and ds.X.min() == 0 and ds.X.max() == 16
    assert "scikit-learn" in ds.source and "\n" not in ds.description


def test_errors_are_fedgmm_errors() -> None:
    assert issubclass(DatasetNotAvailableError, FedGMMError)
    assert issubclass(DatasetNotAvailableError, FileNotFoundError)
    assert issubclass(DatasetFormatError, FedGMMError)
    assert issubclass(DatasetFormatError, ValueError)


def test_import_is_cheap() -> None:
    code = (
        "import sys, fedgmm.datasets; "
        "print(sorted(m for m in ('aeon', 'sklearn', 'pyreadr', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class TestDatasetRecord:
    def test_normalizes_arrays(self) -> None:
        X = np.asfortranarray(np.arange(6, dtype=np.int32).reshape(3, 2))
        ds = Dataset(
            X=X, y=np.array([0, 1, 0], dtype=np.int8), name="t", description="d", source="s"
        )
        assert ds.X.dtype == np.float64 and ds.X.flags.c_contiguous
        assert ds.y.dtype == np.int64
        assert "n_samples=3" in repr(ds) and ds.n_classes == 2

    @pytest.mark.parametrize(
        ("X", "y", "anomaly", "match"),
        [
            (np.zeros(3), np.zeros(3, int), None, "2-D"),
            (np.zeros((0, 2)), np.zeros(0, int), None, "empty"),
            (np.array([[np.nan, 1.0]]), np.zeros(1, int), None, "NaN"),
            (np.zeros((2, 2)), np.zeros(3, int), None, "shape"),
            (np.zeros((2, 2)), np.zeros(2), None, "integer"),
            (np.zeros((2, 2)), np.array([0, -1]), None, "0..n_classes-1"),
            (np.zeros((2, 2)), np.zeros(2, int), np.zeros(2), "bool"),
        ],
    )
    def test_rejects_bad_arrays(
        self, X: np.ndarray, y: np.ndarray, anomaly: np.ndarray | None, match: str
    ) -> None:
        with pytest.raises(ValueError, match=match):
            Dataset(X=X, y=y, name="t", description="d", source="s", anomaly=anomaly)

    def test_rejects_multiline_description_and_labels_beyond_names(self) -> None:
        with pytest.raises(ValueError, match="one line"):
            Dataset(
                X=np.zeros((1, 1)), y=np.zeros(1, int), name="t", description="a\nb", source="s"
            )
        with pytest.raises(ValueError, match=r"0\.\.n_classes-1"):
            Dataset(
                X=np.zeros((2, 1)), y=np.array([0, 2]), name="t", description="d", source="s",
                class_names=("a", "b"),
            )  # fmt: skip


def test_encode_labels_numeric_and_text() -> None:
    y, names = encode_labels(np.array(["10", "2", "2.0", "10"]))
    assert y.tolist() == [1, 0, 0, 1] and names == ("2", "10")
    y, names = encode_labels(np.array(["dog", "cat", "dog"]))
    assert y.tolist() == [1, 0, 1] and names == ("cat", "dog")


def test_blobs_are_reproducible_and_sized() -> None:
    a = load_dataset("blobs")
    assert a.X.shape == (3000, 2) and a.n_classes == 6 and a.anomaly is None
    np.testing.assert_array_equal(a.X, load_dataset("blobs").X)
    b = load_dataset("blobs", n_samples=100, n_features=5, seed=1)
    assert b.X.shape == (100, 5)
    assert not np.array_equal(b.X[:, :2], load_dataset("blobs", n_samples=100, n_features=5, seed=2).X[:, :2])

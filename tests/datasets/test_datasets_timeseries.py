"""Time series bundled in aeon: UCR problems as rows, KDD-TSAD 135 as windows, all offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedgmm.datasets import DatasetNotAvailableError, list_datasets, load_dataset, timeseries
from fedgmm.datasets.timeseries import sliding_windows

# name -> (n_series, series_length, rows per class 0..C-1)
UCR = {
    "gunpoint": (200, 150, [100, 100]),
    "italy-power-demand": (1096, 24, [547, 549]),
    "arrowhead": (211, 251, [81, 65, 65]),
}


@pytest.mark.parametrize("name", list(UCR))
def test_ucr_problems(name: str, no_network: None) -> None:
    n, length, per_class = UCR[name]
    ds = load_dataset(name)
    assert ds.X.shape == (n, length) and ds.name == name
    assert ds.X.dtype == np.float64 and ds.X.flags.c_contiguous
    assert ds.y.dtype == np.int64 and np.bincount(ds.y).tolist() == per_class
    assert ds.anomaly is None and len(ds.class_names) == len(per_class)
    assert "aeon" in ds.source


def test_ucr_rows_are_train_then_test(no_network: None) -> None:
    from aeon.datasets import load_gunpoint

    X_train, _ = load_gunpoint(split="train", return_type="numpy2d")
    X_test, _ = load_gunpoint(split="test", return_type="numpy2d")
    ds = load_dataset("gunpoint")
    np.testing.assert_array_equal(ds.X, np.concatenate([X_train, X_test]))


def test_kdd_tsad_135_default_windows(no_network: None) -> None:
    ds = load_dataset("kdd-tsad-135")
    assert ds.X.shape == (930, 64)  # (7501 - 64) // 8 + 1
    assert ds.y.dtype == np.int64 and not ds.y.any()
    assert ds.anomaly is not None and ds.anomaly.dtype == np.bool_
    # the 12 labelled points 4187..4198 overlap windows starting at 4128, 4136, ..., 4192
    assert np.flatnonzero(ds.anomaly).tolist() == list(range(4128 // 8, 4192 // 8 + 1))
    assert ds.n_outliers == 9


def test_kdd_tsad_135_window_and_stride(no_network: None) -> None:
    from aeon.datasets import load_kdd_tsad_135

    series, labels = load_kdd_tsad_135(split="test")
    ds = load_dataset("kdd-tsad-135", window=100, stride=50)
    assert ds.X.shape == ((7501 - 100) // 50 + 1, 100)
    np.testing.assert_array_equal(ds.X[3], series[150:250])
    expected = [bool(labels[s : s + 100].any()) for s in range(0, 7401 + 1, 50)]
    assert ds.anomaly is not None and ds.anomaly.tolist() == expected
    assert ds.n_outliers == 2  # starts 4100 and 4150


def test_sliding_windows() -> None:
    x = np.arange(10.0)
    out = sliding_windows(x, window=4, stride=3)
    np.testing.assert_array_equal(out, [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])
    assert out.flags.c_contiguous and out.flags.writeable
    assert sliding_windows(x, window=10, stride=1).shape == (1, 10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 0, "stride": 1}, "window must be an integer >= 1"),
        ({"window": 3, "stride": 0}, "stride must be an integer >= 1"),
        ({"window": 2.5, "stride": 1}, "window must be an integer"),
        ({"window": 11, "stride": 1}, "longer than the series"),
    ],
)
def test_sliding_windows_rejects(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sliding_windows(np.arange(10.0), **kwargs)  # type: ignore[arg-type]


def test_missing_bundled_file_refuses_to_download(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_network: None
) -> None:
    monkeypatch.setattr(timeseries, "aeon_data_dir", lambda: tmp_path)
    with pytest.raises(DatasetNotAvailableError, match=r"pip install 'aeon>=1\.0'") as info:
        load_dataset("gunpoint")
    assert "never downloads" in str(info.value)
    by_name = {info.name: info for info in list_datasets()}
    assert not by_name["gunpoint"].available and not by_name["kdd-tsad-135"].available

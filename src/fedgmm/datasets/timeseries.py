"""Time-series data sets bundled in aeon: UCR classification problems and the KDD-TSAD 135 anomaly series."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from fedgmm._extras import install_hint
from fedgmm.datasets.base import Dataset, encode_labels
from fedgmm.datasets.errors import DatasetNotAvailableError

__all__ = [
    "AEON_INSTALL_HINT",
    "KDD_TSAD_135_FILE",
    "UCR_PROBLEMS",
    "aeon_data_dir",
    "load_kdd_tsad_135",
    "load_ucr",
    "sliding_windows",
]

AEON_INSTALL_HINT = f"{install_hint('aeon')} (or pip install 'aeon>=1.0')"

# registry name -> (UCR problem name, aeon loader); each ships <problem>/<problem>_TRAIN.ts
# and _TEST.ts inside aeon/datasets/data, so the loaders read files and never download.
UCR_PROBLEMS = {
    "gunpoint": ("GunPoint", "load_gunpoint"),
    "italy-power-demand": ("ItalyPowerDemand", "load_italy_power_demand"),
    "arrowhead": ("ArrowHead", "load_arrow_head"),
}
KDD_TSAD_135_FILE = "KDD-TSAD_135/135_UCR_Anomaly_InternalBleeding16_TEST.csv"


def aeon_data_dir() -> Path | None:
    """``aeon/datasets/data`` of the installed aeon, found without importing aeon, or None."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def bundled_files(name: str) -> list[Path]:
    """The aeon data files a registry name reads (empty when aeon is not installed)."""
    data = aeon_data_dir()
    if data is None:
        return []
    if name == "kdd-tsad-135":
        return [data / KDD_TSAD_135_FILE]
    problem, _ = UCR_PROBLEMS[name]
    return [data / problem / f"{problem}_{split}.ts" for split in ("TRAIN", "TEST")]


def _check_bundled(name: str) -> list[Path]:
    # aeon's UCR loaders fall back to downloading a problem that is not on disk: refuse first.
    files = bundled_files(name)
    missing = [str(f) for f in files if not f.is_file()] or ([] if files else ["aeon"])
    if missing:
        raise DatasetNotAvailableError(
            f"{name} is bundled with the Python package aeon, but {', '.join(missing)} is "
            f"missing. Install it with `{AEON_INSTALL_HINT}` (or `./dev test`, which "
            "installs fedgmm's dependencies); fedgmm never downloads data."
        )
    return files


def load_ucr(name: str) -> Dataset:
    """A UCR classification problem bundled in aeon, one series per row.

    Parameters
    ----------
    name : {"gunpoint", "italy-power-demand", "arrowhead"}

    Returns
    -------
    Dataset
        ``X`` of shape (n_series, series_length), train then test series: GunPoint
        (200, 150), ItalyPowerDemand (1096, 24), ArrowHead (211, 251); ``y`` the UCR class
        labels coded 0..C-1 in sorted order (names in ``class_names``); no anomalies.
    """
    if name not in UCR_PROBLEMS:
        raise ValueError(f"unknown UCR problem {name!r}; expected one of {sorted(UCR_PROBLEMS)}.")
    files = _check_bundled(name)
    import aeon
    import aeon.datasets

    problem, loader_name = UCR_PROBLEMS[name]
    loader = getattr(aeon.datasets, loader_name)
    parts = [loader(split=split, return_type="numpy2d") for split in ("train", "test")]
    X = np.concatenate([X_part for X_part, _ in parts])
    y, class_names = encode_labels(np.concatenate([y_part for _, y_part in parts]))
    return Dataset(
        X=X,
        y=y,
        name=name,
        description=(
            f"UCR {problem}: {X.shape[0]} univariate series of length {X.shape[1]} "
            f"(train then test), {len(class_names)} classes"
        ),
        source=f"aeon.datasets.{loader_name} (aeon {aeon.__version__}): {files[0].parent}",
        class_names=class_names,
    )


def load_kdd_tsad_135(*, window: int = 64, stride: int = 8) -> Dataset:
    """KDD-TSAD 135 (UCR anomaly archive, InternalBleeding16) cut into sliding windows.

    The whole series (7,501 points, aeon's ``split="test"``, whose first 1,200 points are
    aeon's anomaly-free ``split="train"``) is cut into windows ``x[s : s + window]`` for
    ``s = 0, stride, 2·stride, ...``. A window is an anomaly when it overlaps at least one
    labelled anomaly point (12 points, 4187..4198).

    The defaults keep the 12-point anomaly a visible share (about a fifth) of a window,
    whereas a window of the full ~183-point heartbeat cycle would dilute it to a
    sixteenth; 64 features keep a full-covariance mixture cheap, and stride 8 gives 930
    overlapping windows with 9 anomalous ones.

    Parameters
    ----------
    window : int, default=64
        Window length, the number of features; 1 <= window <= 7501.
    stride : int, default=8
        Step between window starts; >= 1.

    Returns
    -------
    Dataset
        ``X`` of shape (n_windows, window) with ``n_windows = (7501 - window) // stride + 1``
        (930 × 64 by default); ``y`` all 0 (a single class); ``anomaly`` per window.
    """
    (path,) = _check_bundled("kdd-tsad-135")
    import aeon
    from aeon.datasets import load_kdd_tsad_135 as aeon_load_kdd_tsad_135

    series, labels = aeon_load_kdd_tsad_135(split="test")
    series = np.asarray(series, dtype=np.float64)
    point_anomaly = np.asarray(labels) != 0
    X = sliding_windows(series, window=window, stride=stride)
    # Anomalous points per window, from a prefix sum evaluated at each window's two ends.
    counts = np.concatenate([[0], np.cumsum(point_anomaly)])
    starts = np.arange(X.shape[0]) * stride
    anomaly = counts[starts + window] > counts[starts]
    return Dataset(
        X=X,
        y=np.zeros(X.shape[0], dtype=np.int64),
        name="kdd-tsad-135",
        description=(
            f"KDD-TSAD 135 InternalBleeding16 heart-rate series as {X.shape[0]} windows of "
            f"{window} points (stride {stride}); windows overlapping the labelled anomaly are outliers"
        ),
        source=f"aeon.datasets.load_kdd_tsad_135 (aeon {aeon.__version__}): {path}",
        anomaly=anomaly,
        class_names=("InternalBleeding16",),
    )


def sliding_windows(series: np.ndarray, *, window: int, stride: int) -> np.ndarray:
    """Cut a univariate series into (possibly overlapping) windows.

    Parameters
    ----------
    series : ndarray of shape (n_timepoints,)
    window : int
        Window length, 1 <= window <= n_timepoints.
    stride : int
        Step between window starts, >= 1. A tail shorter than ``window`` is dropped.

    Returns
    -------
    windows : ndarray of shape ((n_timepoints - window) // stride + 1, window)
        A C-contiguous copy; row ``i`` is ``series[i*stride : i*stride + window]``.
    """
    series = np.asarray(series)
    if series.ndim != 1:
        raise ValueError(f"series must be 1-D (n_timepoints,), got shape {series.shape}.")
    for label, value, low in (("window", window, 1), ("stride", stride, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}.")
    if window > series.shape[0]:
        raise ValueError(f"window={window} is longer than the series ({series.shape[0]} points).")
    view = np.lib.stride_tricks.sliding_window_view(series, window)[::stride]
    return np.ascontiguousarray(view)

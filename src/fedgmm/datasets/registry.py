"""The named data sets: what each is, whether it is installed, and ``load_dataset`` by name."""

from __future__ import annotations

import difflib
import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from fedgmm.datasets import image, synthetic, tabular, timeseries
from fedgmm.datasets.base import Dataset, DatasetInfo, DatasetKind
from fedgmm.datasets.files import load_file
from fedgmm.datasets.locate import (
    fashion_mnist_dirs,
    fashion_mnist_install_hint,
    find_dir,
    mlbench_dirs,
    mlbench_install_hint,
)

__all__ = ["FILE_NAME", "list_datasets", "load_dataset"]

FILE_NAME = "file"  # load_dataset("file", path=...) reads a user's .csv / .npy


@dataclass(frozen=True)
class _Entry:
    kind: DatasetKind
    description: str
    shape: tuple[int, int]  # (n_samples, n_features) with the loader's default arguments
    n_classes: int
    n_outliers: int | None
    loader: Callable[..., Dataset]
    available: Callable[[], bool]
    install_hint: Callable[[], str]


def _has_module(module: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(module) is not None


def _has_mlbench(stem: str) -> Callable[[], bool]:
    return lambda: find_dir(mlbench_dirs(), [f"{stem}.rda"]) is not None


def _has_fashion_mnist() -> bool:
    names = [name for pair in image.FASHION_MNIST_FILES.values() for name in pair]
    return find_dir(fashion_mnist_dirs(), names) is not None


def _has_aeon_files(name: str) -> Callable[[], bool]:
    def available() -> bool:
        files = timeseries.bundled_files(name)
        return bool(files) and all(f.is_file() for f in files)

    return available


def _constant(text: str) -> Callable[[], str]:
    return lambda: text


_AEON_HINT = _constant(timeseries.AEON_INSTALL_HINT)


def _ucr(name: str, description: str, shape: tuple[int, int], n_classes: int) -> _Entry:
    return _Entry(
        kind="time series", description=description, shape=shape, n_classes=n_classes,
        n_outliers=None, loader=partial(timeseries.load_ucr, name),
        available=_has_aeon_files(name), install_hint=_AEON_HINT,
    )  # fmt: skip


# Shapes, class and outlier counts are those the tests assert on the installed files.
_REGISTRY: dict[str, _Entry] = {
    "digits": _Entry(
        kind="image",
        description="8x8 handwritten digits bundled in scikit-learn, 10 classes (the fast default)",
        shape=(1797, 64), n_classes=10, n_outliers=None, loader=image.load_digits,
        available=_has_module("sklearn"), install_hint=_constant("pip install 'scikit-learn>=1.6'"),
    ),
    "fashion-mnist": _Entry(
        kind="image",
        description="Fashion-MNIST 28x28 article images, train+test, 10 classes (subset=...)",
        shape=(70000, 784), n_classes=10, n_outliers=None, loader=image.load_fashion_mnist,
        available=_has_fashion_mnist, install_hint=fashion_mnist_install_hint,
    ),
    "shuttle": _Entry(
        kind="tabular",
        description="Statlog Shuttle, ODDS outliers (class 1 inliers, class 4 dropped)",
        shape=(49097, 9), n_classes=6, n_outliers=3511, loader=tabular.load_shuttle,
        available=_has_mlbench("Shuttle"), install_hint=mlbench_install_hint,
    ),
    "satellite": _Entry(
        kind="tabular",
        description="Statlog Landsat Satellite, ODDS outliers (classes 2, 4, 5)",
        shape=(6435, 36), n_classes=6, n_outliers=2036, loader=tabular.load_satellite,
        available=_has_mlbench("Satellite"), install_hint=mlbench_install_hint,
    ),
    "breastw": _Entry(
        kind="tabular",
        description="Wisconsin Breast Cancer, ODDS outliers (malignant), complete rows",
        shape=(683, 9), n_classes=2, n_outliers=239, loader=tabular.load_breastw,
        available=_has_mlbench("BreastCancer"), install_hint=mlbench_install_hint,
    ),
    "gunpoint": _ucr(
        "gunpoint", "UCR GunPoint: hand-motion series of length 150, 2 classes", (200, 150), 2
    ),
    "italy-power-demand": _ucr(
        "italy-power-demand", "UCR ItalyPowerDemand: daily load series of length 24, 2 classes",
        (1096, 24), 2,
    ),
    "arrowhead": _ucr(
        "arrowhead", "UCR ArrowHead: outline series of length 251, 3 classes", (211, 251), 3
    ),
    "kdd-tsad-135": _Entry(
        kind="time series",
        description="KDD-TSAD 135 heart-rate series as sliding windows, anomaly = overlaps the labelled event",
        shape=(930, 64), n_classes=1, n_outliers=9, loader=timeseries.load_kdd_tsad_135,
        available=_has_aeon_files("kdd-tsad-135"), install_hint=_AEON_HINT,
    ),
    "blobs": _Entry(
        kind="synthetic",
        description="6 anisotropic Gaussian blobs in 2-D, generated (n_samples=, n_features=, seed=)",
        shape=(3000, 2), n_classes=6, n_outliers=None, loader=synthetic.load_blobs,
        available=lambda: True, install_hint=_constant("(generated; nothing to install)"),
    ),
}  # fmt: skip


def list_datasets() -> list[DatasetInfo]:
    """The named data sets, with whether each is installed now and how to install it.

    Returns
    -------
    list of DatasetInfo
        One per name accepted by :func:`load_dataset` (besides ``"file"``), in a fixed
        order; ``n_samples``/``n_features`` are for the loader's default arguments.
    """
    return [
        DatasetInfo(
            name=name,
            kind=entry.kind,
            description=entry.description,
            available=entry.available(),
            install_hint=entry.install_hint(),
            n_samples=entry.shape[0],
            n_features=entry.shape[1],
            n_classes=entry.n_classes,
            n_outliers=entry.n_outliers,
        )
        for name, entry in _REGISTRY.items()
    ]


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Load a data set by name, offline.

    Parameters
    ----------
    name : str
        One of :func:`list_datasets` (case and ``_``/``-`` are not significant), or
        ``"file"`` to read a user's ``.csv``/``.npy``.
    **kwargs
        Passed to the loader: ``subset="train"|"test"|"all"`` for ``"fashion-mnist"``;
        ``window=``, ``stride=`` for ``"kdd-tsad-135"``; ``path=``, ``label_column=``,
        ``delimiter=`` for ``"file"`` (see :func:`fedgmm.datasets.load_file`).

    Returns
    -------
    Dataset
        ``X`` (n_samples, n_features) float64, ``y`` (n_samples,) int64, ``anomaly``
        (n_samples,) bool or None.

    Raises
    ------
    ValueError
        If the name is unknown (the message lists the names and the closest match).
    TypeError
        If a keyword argument is not accepted by that data set's loader.
    DatasetNotAvailableError
        If the data is not installed; the message names the command that installs it.
    DatasetFormatError
        If an installed or user file is malformed.
    """
    key = str(name).strip().lower().replace("_", "-")
    loader: Callable[..., Dataset]
    if key == FILE_NAME:
        loader = load_file
    elif key in _REGISTRY:
        loader = _REGISTRY[key].loader
    else:
        raise ValueError(_unknown_message(name))
    try:
        inspect.signature(loader).bind(**kwargs)
    except TypeError as exc:
        accepted = [p for p in inspect.signature(loader).parameters]
        raise TypeError(
            f"load_dataset({key!r}): {exc}; it accepts "
            f"{', '.join(accepted) if accepted else 'no keyword arguments'}."
        ) from None
    return loader(**kwargs)


def _unknown_message(name: str) -> str:
    names = [*_REGISTRY, FILE_NAME]
    key = str(name).strip().lower().replace("_", "-")
    close = difflib.get_close_matches(key, names, n=1)
    suggestion = f" Did you mean {close[0]!r}?" if close else ""
    return (
        f"Unknown dataset {name!r}.{suggestion} Known datasets: {', '.join(_REGISTRY)}, "
        f"and {FILE_NAME!r} (with path=... to a .csv or .npy file)."
    )

"""The Dataset record every loader returns, and the DatasetInfo listing entry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["Dataset", "DatasetInfo", "DatasetKind", "encode_labels"]

DatasetKind = Literal["image", "tabular", "time series", "synthetic"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded data set: a design matrix, class labels and optional anomaly flags.

    The constructor checks and normalizes the arrays, so every ``Dataset`` satisfies the
    invariants below whichever loader built it.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Finite float64 features, C-contiguous (converted if needed).
    y : ndarray of shape (n_samples,)
        int64 class labels in ``0 .. n_classes - 1``, used e.g. for Dirichlet partitioning.
        Single-class data sets use 0 everywhere.
    name : str
        Registry name (``"digits"``, ``"shuttle"``, ...) or the file name for user files.
    description : str
        One line saying what the rows, features and labels are.
    source : str
        Where the data was read from: a file or directory path, or a Python package.
    anomaly : ndarray of shape (n_samples,) of bool, or None
        ``True`` marks an outlier under the data set's standard definition (e.g. ODDS);
        ``None`` when the data set defines no outliers.
    class_names : tuple of str
        ``class_names[i]`` names label ``i``; empty when the source names no classes.
    """

    X: np.ndarray
    y: np.ndarray
    name: str
    description: str
    source: str
    anomaly: np.ndarray | None = None
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        X = np.ascontiguousarray(self.X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(
                f"Dataset {self.name!r}: X must be 2-D (n_samples, n_features), got shape {X.shape}."
            )
        n = X.shape[0]
        if n == 0 or X.shape[1] == 0:
            raise ValueError(f"Dataset {self.name!r}: X is empty (shape {X.shape}).")
        if not np.all(np.isfinite(X)):
            raise ValueError(f"Dataset {self.name!r}: X contains NaN or infinite values.")
        y = np.ascontiguousarray(self.y)
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"Dataset {self.name!r}: y must be integer labels of shape ({n},), "
                f"got dtype {y.dtype} shape {y.shape}."
            )
        y = y.astype(np.int64, copy=False)
        if y.min() < 0 or (self.class_names and y.max() >= len(self.class_names)):
            raise ValueError(
                f"Dataset {self.name!r}: labels must lie in 0..n_classes-1, "
                f"got {int(y.min())}..{int(y.max())} with {len(self.class_names)} class names."
            )
        anomaly = self.anomaly
        if anomaly is not None:
            anomaly = np.ascontiguousarray(anomaly)
            if anomaly.shape != (n,) or anomaly.dtype != np.bool_:
                raise ValueError(
                    f"Dataset {self.name!r}: anomaly must be bool of shape ({n},), "
                    f"got dtype {anomaly.dtype} shape {anomaly.shape}."
                )
        if "\n" in self.description:
            raise ValueError(f"Dataset {self.name!r}: description must be one line.")
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "anomaly", anomaly)
        object.__setattr__(self, "class_names", tuple(self.class_names))

    @property
    def n_samples(self) -> int:
        """Number of rows of ``X``."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of columns of ``X``."""
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes: ``len(class_names)`` when named, else ``max(y) + 1``."""
        return len(self.class_names) if self.class_names else int(self.y.max()) + 1

    @property
    def n_outliers(self) -> int | None:
        """Number of rows flagged in ``anomaly``, or None when there are no flags."""
        return None if self.anomaly is None else int(self.anomaly.sum())

    def __repr__(self) -> str:
        outliers = "" if self.anomaly is None else f", n_outliers={self.n_outliers}"
        return (
            f"Dataset(name={self.name!r}, n_samples={self.n_samples}, "
            f"n_features={self.n_features}, n_classes={self.n_classes}{outliers})"
        )


@dataclass(frozen=True)
class DatasetInfo:
    """One entry of :func:`fedgmm.datasets.list_datasets`.

    Attributes
    ----------
    name : str
        The name to pass to :func:`fedgmm.datasets.load_dataset`.
    kind : {"image", "tabular", "time series"}
    description : str
        One line.
    available : bool
        Whether the data files (or the package that bundles them) are present now.
    install_hint : str
        The exact command that installs the data when it is missing.
    n_samples, n_features : int
        Expected shape of ``X`` with the loader's default arguments.
    n_classes : int
        Expected number of distinct labels in ``y``.
    n_outliers : int or None
        Expected number of ``anomaly`` flags, None when the data set defines none.
    """

    name: str
    kind: DatasetKind
    description: str
    available: bool
    install_hint: str
    n_samples: int
    n_features: int
    n_classes: int
    n_outliers: int | None = None


def encode_labels(labels: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map arbitrary class labels to ``0 .. C-1`` in sorted order.

    Labels that all read as whole numbers (``"1"``, ``"2.0"``, ``3``) are sorted numerically
    and named by their integer value, anything else is sorted as strings.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
        Labels of any dtype.

    Returns
    -------
    y : ndarray of shape (n_samples,) of int64
        Codes ``0 .. C-1``.
    class_names : tuple of str, length C
        ``class_names[i]`` is the original label coded ``i``.
    """
    raw = np.asarray(labels)
    as_text = raw.astype(str)
    numbers = _whole_numbers(as_text)
    if numbers is None:
        names, y = np.unique(as_text, return_inverse=True)
        return y.astype(np.int64), tuple(str(v) for v in names)
    values, y = np.unique(numbers, return_inverse=True)
    return y.astype(np.int64), tuple(str(v) for v in values)


def _whole_numbers(text: np.ndarray) -> np.ndarray | None:
    """``text`` as int64 when every entry is a finite whole number, else None."""
    try:
        floats = np.array([float(v) for v in text], dtype=np.float64)
    except ValueError:
        return None
    if not np.all(np.isfinite(floats)) or not np.all(floats == np.round(floats)):
        return None
    return floats.astype(np.int64)

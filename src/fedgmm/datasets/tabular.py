"""ODDS outlier-detection tables (shuttle, satellite, breastw) built from the mlbench ``.rda`` files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedgmm._extras import require
from fedgmm.datasets.base import Dataset
from fedgmm.datasets.errors import DatasetFormatError
from fedgmm.datasets.locate import (
    MLBENCH_ENV,
    find_dir,
    mlbench_dirs,
    mlbench_install_hint,
    not_available,
)

__all__ = [
    "BREASTW_FEATURES",
    "BREASTW_LEVELS",
    "SATELLITE_LEVELS",
    "SHUTTLE_LEVELS",
    "load_breastw",
    "load_satellite",
    "load_shuttle",
    "read_mlbench",
]

# Factor levels as stored by mlbench, in the order of the original UCI class numbers.
# Shuttle: UCI classes 1..7.
SHUTTLE_LEVELS = (
    "Rad.Flow", "Fpv.Close", "Fpv.Open", "High", "Bypass", "Bpv.Close", "Bpv.Open",
)  # fmt: skip
# Satellite: UCI classes 1, 2, 3, 4, 5, 7 (class 6 "mixture" has no samples).
SATELLITE_LEVELS = (
    "red soil", "cotton crop", "grey soil", "damp grey soil", "vegetation stubble",
    "very damp grey soil",
)  # fmt: skip
BREASTW_FEATURES = (
    "Cl.thickness", "Cell.size", "Cell.shape", "Marg.adhesion", "Epith.c.size",
    "Bare.nuclei", "Bl.cromatin", "Normal.nucleoli", "Mitoses",
)  # fmt: skip
BREASTW_LEVELS = ("benign", "malignant")

_SHUTTLE_DROPPED = "High"  # ODDS drops UCI class 4
_SHUTTLE_INLIER = "Rad.Flow"  # UCI class 1; classes 2, 3, 5, 6, 7 are the outliers
_SATELLITE_OUTLIERS = ("cotton crop", "damp grey soil", "vegetation stubble")  # UCI 2, 4, 5


def load_shuttle() -> Dataset:
    """Statlog Shuttle in the ODDS outlier definition.

    mlbench ``Shuttle`` (train and test, 58,000 rows) with UCI class 4 (``High``) dropped;
    class 1 (``Rad.Flow``) are the inliers, classes 2, 3, 5, 6, 7 the outliers.

    Returns
    -------
    Dataset
        ``X`` of shape (49097, 9); ``y`` the 6 remaining classes coded 0..5 in UCI order
        (0 = ``Rad.Flow``); ``anomaly`` True for 3,511 rows.
    """
    frame, path = read_mlbench("Shuttle")
    codes = _factor(frame, "Class", SHUTTLE_LEVELS, path)
    keep = codes != SHUTTLE_LEVELS.index(_SHUTTLE_DROPPED)
    kept_levels = tuple(level for level in SHUTTLE_LEVELS if level != _SHUTTLE_DROPPED)
    recode = np.full(len(SHUTTLE_LEVELS), -1, dtype=np.int64)
    recode[[SHUTTLE_LEVELS.index(level) for level in kept_levels]] = np.arange(len(kept_levels))
    y = recode[codes[keep]]
    X = _numeric(frame, [f"V{i}" for i in range(1, 10)], path)[keep]
    return Dataset(
        X=X,
        y=y,
        name="shuttle",
        description=(
            "Statlog Shuttle (ODDS): 9 numeric attributes, class 4 dropped, class 1 inliers, "
            "classes 2,3,5,6,7 outliers"
        ),
        source=str(path),
        anomaly=y != kept_levels.index(_SHUTTLE_INLIER),
        class_names=kept_levels,
    )


def load_satellite() -> Dataset:
    """Statlog Landsat Satellite in the ODDS outlier definition.

    mlbench ``Satellite`` (train and test, 6,435 rows); the three smallest classes, UCI 2, 4
    and 5 (cotton crop, damp grey soil, vegetation stubble), are the outliers.

    Returns
    -------
    Dataset
        ``X`` of shape (6435, 36): 4 spectral bands × 3×3 pixels, values 0..255; ``y`` the
        6 classes coded 0..5 in UCI order; ``anomaly`` True for 2,036 rows.
    """
    frame, path = read_mlbench("Satellite")
    codes = _factor(frame, "classes", SATELLITE_LEVELS, path)
    outlier_codes = [SATELLITE_LEVELS.index(level) for level in _SATELLITE_OUTLIERS]
    return Dataset(
        X=_numeric(frame, [f"x.{i}" for i in range(1, 37)], path),
        y=codes,
        name="satellite",
        description=(
            "Statlog Landsat Satellite (ODDS): 36 multispectral pixel values, "
            "classes cotton crop, damp grey soil, vegetation stubble are outliers"
        ),
        source=str(path),
        anomaly=np.isin(codes, outlier_codes),
        class_names=SATELLITE_LEVELS,
    )


def load_breastw() -> Dataset:
    """Wisconsin Breast Cancer (original) in the ODDS outlier definition.

    mlbench ``BreastCancer`` (699 rows) without the ``Id`` column and without the 16 rows
    with a missing ``Bare.nuclei``; malignant tumours are the outliers.

    Returns
    -------
    Dataset
        ``X`` of shape (683, 9): cytology scores 1..10 as floats; ``y`` 0 = benign,
        1 = malignant; ``anomaly`` True (malignant) for 239 rows.
    """
    frame, path = read_mlbench("BreastCancer")
    codes = _factor(frame, "Class", BREASTW_LEVELS, path, allow_missing=False)
    X = _numeric(frame, list(BREASTW_FEATURES), path)
    complete = np.all(np.isfinite(X), axis=1)
    y = codes[complete]
    return Dataset(
        X=X[complete],
        y=y,
        name="breastw",
        description=(
            "Wisconsin Breast Cancer (ODDS breastw): 9 cytology scores 1..10, rows with "
            "missing values dropped, malignant are outliers"
        ),
        source=str(path),
        anomaly=y == BREASTW_LEVELS.index("malignant"),
        class_names=BREASTW_LEVELS,
    )


def read_mlbench(stem: str) -> tuple[Any, Path]:
    """Read the data frame ``stem`` from ``<stem>.rda`` of the mlbench R package.

    Parameters
    ----------
    stem : str
        Object and file name, e.g. ``"Shuttle"``.

    Returns
    -------
    frame : pandas.DataFrame
        As read by ``pyreadr`` (factors become categoricals).
    path : Path
        The ``.rda`` file read.

    Raises
    ------
    DatasetNotAvailableError
        If the file is in none of :func:`~fedgmm.datasets.locate.mlbench_dirs`.
    DatasetFormatError
        If the file cannot be read or does not hold the data frame ``stem``.
    """
    pyreadr = require("pyreadr", "the mlbench datasets")
    file_name = f"{stem}.rda"
    dirs = mlbench_dirs()
    directory = find_dir(dirs, [file_name])
    if directory is None:
        raise not_available(
            f"mlbench {stem} (Debian package r-cran-mlbench)",
            [file_name],
            dirs,
            MLBENCH_ENV,
            mlbench_install_hint(),
        )
    path = directory / file_name
    try:
        objects = pyreadr.read_r(str(path))
    except (pyreadr.custom_errors.PyreadrError, pyreadr.custom_errors.LibrdataError) as exc:
        raise DatasetFormatError(
            f"{path}: not a readable R data file ({exc}). Reinstall r-cran-mlbench "
            "(delete the file and run `./dev data`)."
        ) from exc
    if stem not in objects:
        raise DatasetFormatError(
            f"{path}: holds {sorted(objects)}, expected a data frame {stem!r}."
        )
    return objects[stem], path


def _column(frame: Any, name: str, path: Path) -> Any:
    if name not in frame.columns:
        raise DatasetFormatError(f"{path}: no column {name!r}; columns are {list(frame.columns)}.")
    return frame[name]


def _factor(
    frame: Any, name: str, levels: tuple[str, ...], path: Path, *, allow_missing: bool = False
) -> np.ndarray:
    """Integer codes ``(n,)`` of the factor column ``name``, whose levels must equal ``levels``."""
    column = _column(frame, name, path)
    found = tuple(str(level) for level in getattr(getattr(column, "cat", None), "categories", ()))
    if found != levels:
        raise DatasetFormatError(
            f"{path}: column {name!r} has levels {list(found)}, expected {list(levels)}; "
            "the outlier classes cannot be identified."
        )
    codes = np.asarray(column.cat.codes, dtype=np.int64)
    if not allow_missing and np.any(codes < 0):
        raise DatasetFormatError(f"{path}: column {name!r} has missing values.")
    return codes


def _numeric(frame: Any, names: list[str], path: Path) -> np.ndarray:
    """Columns ``names`` as float64 ``(n, len(names))``; missing values become NaN.

    Factors whose levels are numbers (mlbench stores the breastw scores that way) are
    converted by level value, not by level position.
    """
    out = np.empty((len(frame), len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        column = _column(frame, name, path)
        try:
            if hasattr(column, "cat"):
                levels = np.asarray([float(level) for level in column.cat.categories])
                codes = np.asarray(column.cat.codes, dtype=np.int64)
                out[:, j] = np.where(codes >= 0, levels[codes], np.nan)
            else:
                out[:, j] = np.asarray(column, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DatasetFormatError(f"{path}: column {name!r} is not numeric ({exc}).") from exc
    return out

"""User data files (``.csv`` and ``.npy``) loaded into a Dataset, with errors that name the bad cell."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedgmm.datasets.base import Dataset, encode_labels
from fedgmm.datasets.errors import DatasetFormatError

__all__ = ["FILE_SUFFIXES", "load_file"]

FILE_SUFFIXES = (".csv", ".npy")
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def load_file(
    path: str | Path, label_column: int | str | None = None, *, delimiter: str = ","
) -> Dataset:
    """Load a user's ``.csv`` or ``.npy`` file as a Dataset.

    CSV: fields separated by ``delimiter``, blank lines ignored. The first row is a header
    when none of its fields reads as a number. Every feature cell must be a finite number.
    NPY: a 2-D array of a numeric dtype, read with ``allow_pickle=False``.

    Parameters
    ----------
    path : str or Path
        A ``.csv`` or ``.npy`` file.
    label_column : int, str or None, default=None
        The column holding class labels, removed from the features: an index (0-based,
        negative counts from the end) or, for CSV files with a header, a column name.
        Labels may be whole numbers or (CSV only) strings; they are coded 0..C-1 in sorted
        order (see ``class_names``). None: every column is a feature and ``y`` is all 0.
    delimiter : str, default=","
        CSV field separator.

    Returns
    -------
    Dataset
        ``X`` of shape (n_rows, n_columns - (label_column is not None)); ``y`` of shape
        (n_rows,); no anomaly flags; ``name`` the file name.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    DatasetFormatError
        If the file is empty, ragged, has a non-numeric, empty, NaN or infinite feature
        value, or (NPY) is not 2-D or not of a numeric dtype. CSV messages give the column
        (name and 0-based index) and the row as the file's 1-based line number, e.g.
        ``data.csv: column 'foo' (3) row 7 is not a number: 'abc'``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise DatasetFormatError(
            f"{path}: unsupported file type {suffix or '(no suffix)'!r}; expected one of "
            f"{', '.join(FILE_SUFFIXES)}."
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    if suffix == ".csv":
        X, labels = _read_csv(path, label_column, delimiter)
    else:
        X, labels = _read_npy(path, label_column)
    class_names: tuple[str, ...] = ()
    if labels is None:
        y = np.zeros(X.shape[0], dtype=np.int64)
        what = "no labels"
    else:
        y, class_names = encode_labels(labels)
        what = f"{len(class_names)} classes from column {label_column!r}"
    return Dataset(
        X=X,
        y=y,
        name=path.name,
        description=f"user file {path.name}: {X.shape[0]} rows, {X.shape[1]} features, {what}",
        source=str(path.resolve()),
        class_names=class_names,
    )


# --- CSV ------------------------------------------------------------------------------------


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_rows(path: Path, delimiter: str) -> tuple[list[list[str]], list[int]]:
    """The non-blank rows of a CSV file (fields stripped) and each row's 1-based line number."""
    lines: list[int] = []
    rows: list[list[str]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.reader(stream, delimiter=delimiter)
            for row in reader:
                if any(field.strip() for field in row):
                    rows.append([field.strip() for field in row])
                    lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetFormatError(f"{path}: not a readable UTF-8 CSV file ({exc}).") from exc
    if not rows:
        raise DatasetFormatError(f"{path}: the file is empty (no data rows).")
    return rows, lines


def _read_csv(
    path: Path, label_column: int | str | None, delimiter: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Features ``(n, d)`` float64 and raw labels ``(n,)`` of str (or None) of a CSV file."""
    rows, lines = _csv_rows(path, delimiter)
    header: list[str] | None = None
    first_line = lines[0]
    if not any(_is_number(field) for field in rows[0]):
        header, rows, lines = rows[0], rows[1:], lines[1:]
        if not rows:
            raise DatasetFormatError(
                f"{path}: the file has a header (row {first_line}) but no data rows."
            )
    n_columns = len(header) if header is not None else len(rows[0])
    for row, line in zip(rows, lines, strict=True):
        if len(row) != n_columns:
            raise DatasetFormatError(
                f"{path}: row {line} has {len(row)} columns, expected {n_columns} "
                f"(as row {first_line}). Ragged rows are not supported."
            )

    label_index = _label_index(path, label_column, n_columns, header)
    features = [j for j in range(n_columns) if j != label_index]
    if not features:
        raise DatasetFormatError(f"{path}: no feature columns besides the label column.")

    def column(j: int) -> str:
        return f"column {header[j]!r} ({j})" if header is not None else f"column {j}"

    X = np.empty((len(rows), len(features)), dtype=np.float64)
    for i, (row, line) in enumerate(zip(rows, lines, strict=True)):
        try:
            X[i] = [float(row[j]) for j in features]
        except ValueError:
            j = next(j for j in features if not _is_number(row[j]))
            what = "is empty" if row[j] == "" else f"is not a number: {row[j]!r}"
            raise DatasetFormatError(f"{path}: {column(j)} row {line} {what}.") from None
    bad = np.argwhere(~np.isfinite(X))
    if bad.size:
        i, k = (int(v) for v in bad[0])
        j = features[k]
        raise DatasetFormatError(
            f"{path}: {column(j)} row {lines[i]} is not finite: {rows[i][j]!r}; "
            "NaN and infinite values are not supported (impute or drop them first)."
        )
    if label_index is None:
        return X, None
    labels = [row[label_index] for row in rows]
    for i, value in enumerate(labels):
        if value == "":
            raise DatasetFormatError(
                f"{path}: {column(label_index)} row {lines[i]} is empty (no label)."
            )
        if _is_number(value) and not _whole(float(value)):
            raise DatasetFormatError(
                f"{path}: {column(label_index)} row {lines[i]} is not a whole-number class "
                f"label: {value!r}."
            )
    return X, np.array(labels)


def _whole(value: float) -> bool:
    return math.isfinite(value) and value == round(value)


def _label_index(
    path: Path, label_column: int | str | None, n_columns: int, header: Sequence[str] | None
) -> int | None:
    """The 0-based index of ``label_column`` among ``n_columns`` columns, or None."""
    if label_column is None:
        return None
    if isinstance(label_column, str):
        if header is None:
            raise DatasetFormatError(
                f"{path}: label_column={label_column!r} names a column, but the file has no "
                "header row; pass the column's index instead."
            )
        if label_column not in header:
            raise DatasetFormatError(
                f"{path}: no column named {label_column!r}; the header has {list(header)}."
            )
        return list(header).index(label_column)
    if isinstance(label_column, bool) or not isinstance(label_column, int | np.integer):
        raise TypeError(
            f"label_column must be an int, a str or None, got {type(label_column).__name__}."
        )
    if not -n_columns <= label_column < n_columns:
        raise DatasetFormatError(
            f"{path}: label_column={label_column} is out of range for {n_columns} columns."
        )
    return int(label_column) % n_columns


# --- NPY ------------------------------------------------------------------------------------


def _read_npy(path: Path, label_column: int | str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Features ``(n, d)`` float64 and raw labels ``(n,)`` of int64 (or None) of a .npy file."""
    array = _read_npy_array(path)
    if array.ndim != 2:
        hint = " (one feature? save x.reshape(-1, 1))" if array.ndim == 1 else ""
        raise DatasetFormatError(
            f"{path}: the array is {array.ndim}-D with shape {array.shape}; expected 2-D "
            f"(n_samples, n_features){hint}."
        )
    if array.size == 0:
        raise DatasetFormatError(f"{path}: the array is empty (shape {array.shape}).")
    label_index = _label_index(path, label_column, array.shape[1], None)
    features = [j for j in range(array.shape[1]) if j != label_index]
    if not features:
        raise DatasetFormatError(f"{path}: no feature columns besides the label column.")
    X = np.ascontiguousarray(array[:, features], dtype=np.float64)
    bad = np.argwhere(~np.isfinite(X))
    if bad.size:
        i, k = (int(v) for v in bad[0])
        raise DatasetFormatError(
            f"{path}: column {features[k]} row {i} (0-based) is not finite: {float(X[i, k])}; "
            "NaN and infinite values are not supported (impute or drop them first)."
        )
    if label_index is None:
        return X, None
    labels = array[:, label_index].astype(np.float64)
    bad_labels = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
    if bad_labels.size:
        i = int(bad_labels[0])
        raise DatasetFormatError(
            f"{path}: column {label_index} row {i} (0-based) is not a whole-number class "
            f"label: {float(labels[i])}."
        )
    return X, labels.astype(np.int64)


def _read_npy_array(path: Path) -> np.ndarray:
    """The array of a .npy file, after checking its header: numeric dtype, complete payload.

    The header is read first so that an object array is refused before any payload is
    touched (nothing is ever unpickled) and a forged shape cannot cause a huge allocation.
    """
    header_readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    with path.open("rb") as stream:
        magic = stream.read(len(_NPY_MAGIC))
        if magic.startswith(_ZIP_MAGIC):
            raise DatasetFormatError(f"{path}: is an .npz archive, not a single .npy array.")
        if magic != _NPY_MAGIC:
            raise DatasetFormatError(
                f"{path}: not a valid or complete .npy file (it does not start with the "
                "NUMPY magic string)."
            )
        stream.seek(0)
        try:
            version = np.lib.format.read_magic(stream)
            read_header = header_readers.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _, dtype = read_header(stream)
        except (ValueError, EOFError) as exc:
            raise DatasetFormatError(f"{path}: not a valid or complete .npy file ({exc}).") from exc
        if dtype.hasobject:
            raise DatasetFormatError(
                f"{path}: holds an object array, which would need pickle to load (never "
                "done); save a numeric 2-D array instead."
            )
        if dtype.kind not in "biuf":
            raise DatasetFormatError(
                f"{path}: dtype {dtype} is not numeric; expected a bool, integer or float array."
            )
        needed = math.prod(shape) * dtype.itemsize
        available = path.stat().st_size - stream.tell()
        if available < needed:
            raise DatasetFormatError(
                f"{path}: not a valid or complete .npy file (truncated: shape {shape} of "
                f"{dtype} needs {needed} bytes of data, the file has {available})."
            )
        stream.seek(0)
        try:
            return np.lib.format.read_array(stream, allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise DatasetFormatError(f"{path}: not a valid or complete .npy file ({exc}).") from exc

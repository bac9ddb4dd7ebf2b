"""User .csv and .npy files: header detection, label columns, and every malformed-file error."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from fedgmm.datasets import DatasetFormatError, load_dataset, load_file


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def rejects(path: Path, message: str, **kwargs: object) -> None:
    """``load_file`` raises DatasetFormatError whose message contains ``message`` verbatim."""
    with pytest.raises(DatasetFormatError, match=re.escape(message)):
        load_file(path, **kwargs)  # type: ignore[arg-type]


# --- CSV ----------------------------------------------------------------------------------


def test_csv_with_header_and_named_string_labels(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b,kind\n1,2,dog\n3.5,-4e2,cat\n\n5,6,dog\n")
    ds = load_file(path, label_column="kind")
    np.testing.assert_array_equal(ds.X, [[1, 2], [3.5, -400], [5, 6]])
    assert ds.X.dtype == np.float64 and ds.X.flags.c_contiguous
    assert ds.y.tolist() == [1, 0, 1] and ds.class_names == ("cat", "dog")
    assert ds.anomaly is None and ds.name == "data.csv"
    assert ds.source == str(path.resolve())


def test_csv_without_header_and_numeric_labels(tmp_path: Path) -> None:
    path = write(tmp_path, "7,0.5,1\n2,1.5,3\n9,2.5,1.0\n")
    ds = load_file(path, label_column=-1)
    np.testing.assert_array_equal(ds.X, [[7, 0.5], [2, 1.5], [9, 2.5]])
    assert ds.y.tolist() == [0, 1, 0] and ds.class_names == ("1", "3")
    ds = load_file(path, label_column=0)
    assert ds.X.shape == (3, 2) and ds.class_names == ("2", "7", "9")


def test_csv_without_labels_is_one_class(tmp_path: Path) -> None:
    ds = load_file(write(tmp_path, "x;y\n1;2\n3;4\n"), delimiter=";")
    assert ds.X.shape == (2, 2) and ds.y.tolist() == [0, 0] and ds.n_classes == 1


def test_load_dataset_file(tmp_path: Path) -> None:
    path = write(tmp_path, "1,2,0\n3,4,1\n")
    ds = load_dataset("file", path=path, label_column=2)
    assert ds.X.shape == (2, 2) and ds.y.tolist() == [0, 1]


def test_csv_non_numeric_names_column_and_row(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i},{i},{i}" for i in range(5))
    path = write(tmp_path, f"w,x,y,foo\n{rows}\n1,2,3,abc\n")
    rejects(path, "data.csv: column 'foo' (3) row 7 is not a number: 'abc'.")


def test_csv_non_numeric_without_header(tmp_path: Path) -> None:
    rejects(write(tmp_path, "1,2\n3,x\n"), "column 1 row 2 is not a number: 'x'.")


def test_csv_first_row_partly_numeric_is_data_not_header(tmp_path: Path) -> None:
    rejects(write(tmp_path, "1,oops\n3,4\n"), "column 1 row 1 is not a number: 'oops'.")


def test_csv_empty_cell(tmp_path: Path) -> None:
    rejects(write(tmp_path, "a,b\n1,2\n3,\n"), "column 'b' (1) row 3 is empty.")


def test_csv_ragged_rows(tmp_path: Path) -> None:
    rejects(write(tmp_path, "a,b,c\n1,2,3\n\n4,5\n"), "row 4 has 2 columns, expected 3 (as row 1)")
    rejects(write(tmp_path, "1,2\n3,4,5\n"), "row 2 has 3 columns, expected 2 (as row 1)")


@pytest.mark.parametrize("text", ["", "\n\n", " , \n"])
def test_csv_empty_file(tmp_path: Path, text: str) -> None:
    rejects(write(tmp_path, text), "the file is empty (no data rows)")


def test_csv_header_only(tmp_path: Path) -> None:
    rejects(write(tmp_path, "a,b\n"), "the file has a header (row 1) but no data rows")


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-Infinity"])
def test_csv_non_finite(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"a,b\n1,2\n3,{value}\n")
    rejects(path, f"column 'b' (1) row 3 is not finite: '{value}'")


@pytest.mark.parametrize(
    ("text", "label_column", "message"),
    [
        ("1,2\n3,4\n", "a", "label_column='a' names a column, but the file has no header row"),
        ("a,b\n1,2\n", "c", "no column named 'c'; the header has ['a', 'b']"),
        ("1,2\n3,4\n", 2, "label_column=2 is out of range for 2 columns"),
        ("1,2\n3,4\n", -3, "label_column=-3 is out of range for 2 columns"),
        ("a,b\n1,2\n3,0.5\n", "b", "column 'b' (1) row 3 is not a whole-number class label: '0.5'"),
        ("a,b\n1,2\n3,\n", "b", "column 'b' (1) row 3 is empty (no label)"),
        ("a\n1\n2\n", "a", "no feature columns besides the label column"),
    ],
)
def test_csv_bad_label_column(
    tmp_path: Path, text: str, label_column: int | str, message: str
) -> None:
    rejects(write(tmp_path, text), message, label_column=label_column)


def test_label_column_type(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="label_column must be an int, a str or None"):
        load_file(write(tmp_path, "1,2\n"), label_column=1.0)  # type: ignore[arg-type]


def test_csv_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("a,b\n1,caf\xe9\n".encode("latin-1"))
    rejects(path, "not a readable UTF-8 CSV file")


def test_unsupported_suffix_and_missing_file(tmp_path: Path) -> None:
    rejects(
        write(tmp_path, "1,2\n", "data.txt"),
        "unsupported file type '.txt'; expected one of .csv, .npy",
    )
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_file(tmp_path / "missing.csv")


# --- NPY ----------------------------------------------------------------------------------


def save(tmp_path: Path, array: np.ndarray, name: str = "data.npy") -> Path:
    path = tmp_path / name
    np.save(path, array, allow_pickle=False)
    return path


def test_npy_numeric_and_label_column(tmp_path: Path) -> None:
    path = save(tmp_path, np.array([[1, 2, 5], [3, 4, 7], [5, 6, 5]], dtype=np.int16))
    ds = load_file(path)
    assert ds.X.dtype == np.float64 and ds.X.shape == (3, 3) and ds.y.tolist() == [0, 0, 0]
    ds = load_file(path, label_column=2)
    np.testing.assert_array_equal(ds.X, [[1, 2], [3, 4], [5, 6]])
    assert ds.y.tolist() == [0, 1, 0] and ds.class_names == ("5", "7")


def test_npy_object_dtype_is_refused_without_pickle(tmp_path: Path) -> None:
    # Hand-written header declaring an object array: nothing is ever pickled or unpickled.
    path = tmp_path / "objects.npy"
    with path.open("wb") as stream:
        np.lib.format.write_array_header_1_0(
            stream, {"descr": "|O", "fortran_order": False, "shape": (2, 2)}
        )
        stream.write(b"\x80\x04junk")
    rejects(path, "holds an object array, which would need pickle to load")


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (
            np.arange(3.0),
            "the array is 1-D with shape (3,); expected 2-D (n_samples, n_features) (one feature?",
        ),
        (np.zeros((2, 2, 2)), "the array is 3-D with shape (2, 2, 2)"),
        (np.zeros((0, 3)), "the array is empty (shape (0, 3))"),
        (np.array([["a", "b"]]), "dtype <U1 is not numeric"),
        (np.ones((2, 2), dtype=np.complex128), "dtype complex128 is not numeric"),
        (np.array([[1.0, 2.0], [3.0, np.nan]]), "column 1 row 1 (0-based) is not finite: nan"),
        (np.array([[1.0, -np.inf]]), "column 1 row 0 (0-based) is not finite: -inf"),
    ],
)
def test_npy_rejects(tmp_path: Path, array: np.ndarray, message: str) -> None:
    rejects(save(tmp_path, array), message)


def test_npy_bad_labels(tmp_path: Path) -> None:
    path = save(tmp_path, np.array([[1.0, 0.0], [2.0, 1.5]]))
    rejects(path, "column 1 row 1 (0-based) is not a whole-number class label: 1.5", label_column=1)
    rejects(
        path, "label_column='y' names a column, but the file has no header row", label_column="y"
    )


def test_npy_truncated_and_not_npy(tmp_path: Path) -> None:
    data = save(tmp_path, np.arange(100.0).reshape(10, 10)).read_bytes()
    cut = tmp_path / "cut.npy"
    cut.write_bytes(data[:-40])
    rejects(cut, "not a valid or complete .npy file")
    text = write(tmp_path, "1,2\n3,4\n", "text.npy")
    rejects(text, "not a valid or complete .npy file")
    empty = write(tmp_path, "", "empty.npy")
    rejects(empty, "not a valid or complete .npy file")


def test_npz_renamed_npy(tmp_path: Path) -> None:
    path = tmp_path / "archive.npz"
    np.savez(path, a=np.zeros((2, 2)))
    renamed = path.rename(tmp_path / "archive.npy")
    rejects(renamed, "is an .npz archive, not a single .npy array")

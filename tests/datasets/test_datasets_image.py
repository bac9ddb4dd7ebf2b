"""Fashion-MNIST: the real files, a tiny synthetic copy, the IDX reader's errors, missing data."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fedgmm.datasets import Dataset, DatasetFormatError, DatasetNotAvailableError, load_dataset
from fedgmm.datasets.idx import read_idx
from fedgmm.datasets.image import FASHION_MNIST_CLASSES, load_fashion_mnist
from fedgmm.datasets.locate import FASHION_MNIST_ENV

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def idx_bytes(array: np.ndarray, *, magic: int | None = None) -> bytes:
    """IDX encoding of a uint8 array (header ``0 0 0x08 ndim`` + big-endian dims + payload)."""
    head = magic if magic is not None else (0x0800 | array.ndim)
    dims = np.asarray(array.shape, dtype=">u4").tobytes()
    return head.to_bytes(4, "big") + dims + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_gz(path: Path, payload: bytes) -> Path:
    path.write_bytes(gzip.compress(payload))
    return path


def fake_fashion_dir(root: Path, n_train: int = 3, n_test: int = 2) -> Path:
    """A directory laid out like /usr/share/datasets/fashion-mnist, with tiny splits."""
    root.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_gz(root / f"{prefix}-images-idx3-ubyte.gz", idx_bytes(images))
        write_gz(root / f"{prefix}-labels-idx1-ubyte.gz", idx_bytes(labels))
    return root


# --- the installed data -------------------------------------------------------------------


def test_fashion_mnist_all(fashion_mnist: Dataset) -> None:
    ds = fashion_mnist
    assert ds.X.shape == (70000, 784) and ds.name == "fashion-mnist"
    assert ds.X.dtype == np.float64 and ds.X.flags.c_contiguous
    assert ds.X.min() == 0 and ds.X.max() == 255
    assert ds.y.dtype == np.int64 and np.bincount(ds.y).tolist() == [7000] * 10
    assert ds.anomaly is None and ds.class_names == FASHION_MNIST_CLASSES


def test_fashion_mnist_test_subset_is_the_tail(fashion_mnist: Dataset) -> None:
    test = load_fashion_mnist(subset="test")
    assert test.X.shape == (10000, 784)
    np.testing.assert_array_equal(test.X, fashion_mnist.X[60000:])
    np.testing.assert_array_equal(test.y, fashion_mnist.y[60000:])


# --- a tiny synthetic copy ----------------------------------------------------------------


def test_reads_a_synthetic_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_fashion_dir(tmp_path / "fm")
    monkeypatch.setenv(FASHION_MNIST_ENV, str(root))
    ds = load_dataset("fashion-mnist")
    assert ds.X.shape == (5, 784) and ds.source == str(root)
    assert ds.y.tolist() == [0, 1, 2, 0, 1]
    train = read_idx(root / "train-images-idx3-ubyte.gz", magic=IMAGES_MAGIC)
    np.testing.assert_array_equal(ds.X[:3], train.reshape(3, 784))
    assert load_dataset("fashion_mnist", subset="train").n_samples == 3
    assert load_dataset("fashion-mnist", subset="test").n_samples == 2


def test_bad_subset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FASHION_MNIST_ENV, str(fake_fashion_dir(tmp_path / "fm")))
    with pytest.raises(ValueError, match="subset must be 'train', 'test' or 'all'"):
        load_dataset("fashion-mnist", subset="validation")


def test_missing_names_the_install_command(no_data_env: Path) -> None:
    with pytest.raises(DatasetNotAvailableError) as info:
        load_dataset("fashion-mnist")
    message = str(info.value)
    assert "`./dev data`" in message
    assert "apt-get install -y dataset-fashion-mnist" in message
    assert f"${FASHION_MNIST_ENV}={no_data_env}" in message
    assert "train-images-idx3-ubyte.gz" in message


def test_partial_install_needs_only_the_subset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = fake_fashion_dir(tmp_path / "fm")
    (root / "train-images-idx3-ubyte.gz").unlink()
    monkeypatch.setenv(FASHION_MNIST_ENV, str(root))
    assert load_fashion_mnist("test").n_samples == 2
    with pytest.raises(DatasetNotAvailableError, match=r"train-images-idx3-ubyte\.gz"):
        load_fashion_mnist("all")


# --- the IDX reader -----------------------------------------------------------------------


def test_read_idx_round_trip_plain_and_gz(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    plain = tmp_path / "a-idx3-ubyte"
    plain.write_bytes(idx_bytes(array))
    np.testing.assert_array_equal(read_idx(plain, magic=IMAGES_MAGIC), array)
    gz = write_gz(tmp_path / "a-idx3-ubyte.gz", idx_bytes(array))
    np.testing.assert_array_equal(read_idx(gz), array)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "truncated: 0 bytes"),
        (
            idx_bytes(np.zeros((2, 28, 28)), magic=LABELS_MAGIC),
            "magic number 0x00000801, expected 0x00000803",
        ),
        (b"\x1f\x8b\x08\x03" + b"\x00" * 12, "magic number 0x1f8b0803, expected"),
        (idx_bytes(np.zeros((2, 28, 28)))[:10], "announces 3 dimensions but the file ends"),
        (idx_bytes(np.zeros((2, 28, 28)))[:-1], "truncated: dims \\(2, 28, 28\\)"),
        (idx_bytes(np.zeros((2, 28, 28))) + b"\x00", "has trailing bytes"),
    ],
)
def test_read_idx_rejects(tmp_path: Path, payload: bytes, match: str) -> None:
    path = write_gz(tmp_path / "x-idx3-ubyte.gz", payload)
    with pytest.raises(DatasetFormatError, match=match):
        read_idx(path, magic=IMAGES_MAGIC)


def test_read_idx_rejects_non_idx_type(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "x.gz", b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"\x00")
    with pytest.raises(DatasetFormatError, match="is not an IDX header"):
        read_idx(path)


def test_read_idx_rejects_bad_gzip(tmp_path: Path) -> None:
    not_gzip = tmp_path / "a.gz"
    not_gzip.write_bytes(idx_bytes(np.zeros((1, 28, 28))))
    with pytest.raises(DatasetFormatError, match="not a complete gzip file"):
        read_idx(not_gzip)
    cut = tmp_path / "b.gz"
    cut.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 28, 28))))[:-20])
    with pytest.raises(DatasetFormatError, match="not a complete gzip file"):
        read_idx(cut)


@pytest.mark.parametrize(
    ("file_name", "payload", "match"),
    [
        ("train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(2)), "holds 3 images but .* 2 labels"),
        ("train-images-idx3-ubyte.gz", idx_bytes(np.zeros((3, 27, 28))), r"images are \(27, 28\)"),
        ("train-labels-idx1-ubyte.gz", idx_bytes(np.array([0, 1, 10])), "label 10 is outside 0..9"),
        ("train-images-idx3-ubyte.gz", idx_bytes(np.zeros((3, 28, 28)))[:-5], "truncated"),
    ],
)
def test_corrupt_installed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file_name: str, payload: bytes, match: str
) -> None:
    root = fake_fashion_dir(tmp_path / "fm")
    write_gz(root / file_name, payload)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(root))
    with pytest.raises(DatasetFormatError, match=match) as info:
        load_dataset("fashion-mnist")
    assert "apt-get install --reinstall -y dataset-fashion-mnist" in str(info.value)

"""Image data sets: scikit-learn's bundled digits and the Debian-packaged Fashion-MNIST."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from fedgmm.datasets.base import Dataset
from fedgmm.datasets.errors import DatasetFormatError
from fedgmm.datasets.idx import read_idx
from fedgmm.datasets.locate import (
    FASHION_MNIST_ENV,
    fashion_mnist_dirs,
    fashion_mnist_install_hint,
    find_dir,
    not_available,
)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "FashionMnistSubset",
    "load_digits",
    "load_fashion_mnist",
]

FashionMnistSubset = Literal["train", "test", "all"]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# subset -> (images file, labels file), as shipped by the Debian package dataset-fashion-mnist.
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions (n, rows, cols)
_LABELS_MAGIC = 0x00000801  # uint8, 1 dimension (n,)
_SIDE = 28


def load_digits() -> Dataset:
    """The 8×8 handwritten digits bundled in scikit-learn: the fast default.

    Returns
    -------
    Dataset
        ``X`` of shape (1797, 64): pixel intensities 0..16; ``y`` digits 0..9; no anomalies.
    """
    import sklearn
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    return Dataset(
        X=bunch.data,
        y=bunch.target.astype(np.int64),
        name="digits",
        description="8x8 handwritten digits (UCI optdigits test set): 64 pixel intensities 0..16, 10 classes",
        source=f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__})",
        class_names=tuple(str(d) for d in range(10)),
    )


def load_fashion_mnist(subset: FashionMnistSubset = "all") -> Dataset:
    """Fashion-MNIST (Zalando article images) from the IDX files of ``dataset-fashion-mnist``.

    Looked for in ``$FEDGMM_FASHION_MNIST_DIR`` when set, else
    ``/usr/share/datasets/fashion-mnist``.

    Parameters
    ----------
    subset : {"all", "train", "test"}, default="all"
        ``"all"`` is the 60,000 training images followed by the 10,000 test images.

    Returns
    -------
    Dataset
        ``X`` of shape (70000, 784) for ``"all"`` ((60000, 784) train, (10000, 784) test):
        raw pixel intensities 0..255 as float64, row-major 28×28; ``y`` classes 0..9
        (names in :data:`FASHION_MNIST_CLASSES`); no anomalies.

    Raises
    ------
    DatasetNotAvailableError
        If the files are not installed; the message names the install command.
    DatasetFormatError
        If a file is not valid IDX, truncated, or images and labels disagree.
    """
    if subset not in ("all", "train", "test"):
        raise ValueError(f"subset must be 'train', 'test' or 'all', got {subset!r}.")
    parts = ("train", "test") if subset == "all" else (subset,)
    names = [name for part in parts for name in FASHION_MNIST_FILES[part]]
    dirs = fashion_mnist_dirs()
    directory = find_dir(dirs, names)
    if directory is None:
        raise not_available(
            "Fashion-MNIST (Debian package dataset-fashion-mnist)",
            names,
            dirs,
            FASHION_MNIST_ENV,
            fashion_mnist_install_hint(),
        )
    images, labels = zip(*(_read_part(directory, part) for part in parts), strict=True)
    X = np.concatenate(images).reshape(-1, _SIDE * _SIDE).astype(np.float64)
    return Dataset(
        X=X,
        y=np.concatenate(labels).astype(np.int64),
        name="fashion-mnist",
        description=(
            f"Fashion-MNIST {subset}: 28x28 grey-level article images, 784 raw pixel "
            "intensities 0..255, 10 classes"
        ),
        source=str(directory),
        class_names=FASHION_MNIST_CLASSES,
    )


def _read_part(directory: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 28, 28)`` uint8 and labels ``(n,)`` uint8 of one split, cross-checked."""
    images_name, labels_name = FASHION_MNIST_FILES[part]
    remedy = " Reinstall it: apt-get install --reinstall -y dataset-fashion-mnist (as root)."
    try:
        images = read_idx(directory / images_name, magic=_IMAGES_MAGIC)
        labels = read_idx(directory / labels_name, magic=_LABELS_MAGIC)
    except DatasetFormatError as exc:
        raise DatasetFormatError(f"{exc}{remedy}") from exc
    if images.shape[1:] != (_SIDE, _SIDE):
        raise DatasetFormatError(
            f"{directory / images_name}: images are {images.shape[1:]}, expected (28, 28).{remedy}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DatasetFormatError(
            f"{directory}: {images_name} holds {images.shape[0]} images but {labels_name} "
            f"{labels.shape[0]} labels.{remedy}"
        )
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise DatasetFormatError(
            f"{directory / labels_name}: label {int(labels.max())} is outside 0..9.{remedy}"
        )
    return images, labels

"""Offline data sets: bundled and Debian-packaged benchmarks, and user ``.csv``/``.npy`` files."""

from __future__ import annotations

from fedgmm.datasets.base import Dataset, DatasetInfo, DatasetKind
from fedgmm.datasets.errors import DatasetFormatError, DatasetNotAvailableError
from fedgmm.datasets.files import load_file
from fedgmm.datasets.registry import list_datasets, load_dataset

__all__ = [
    "Dataset",
    "DatasetFormatError",
    "DatasetInfo",
    "DatasetKind",
    "DatasetNotAvailableError",
    "list_datasets",
    "load_dataset",
    "load_file",
]

"""A node's data: its partition of a named dataset, or its own file, from the node and run config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from fedgmm.flower.settings import DATA_KEYS, DataSettings, RunSettings, SettingsError, get_int


@dataclass(frozen=True)
class NodeData:
    """The rows a node answers from, and the client id it reports.

    Attributes
    ----------
    X : ndarray of shape (n_c, d)
        Read-only; it never leaves the node (only statistics do).
    client_id : int
    description : str
        Where the rows came from (for error messages and logs).
    """

    X: np.ndarray
    client_id: int
    description: str


def _load(data: DataSettings) -> Any:
    from fedgmm.datasets import load_dataset

    return load_dataset(data.dataset, **dict(data.dataset_args))


@lru_cache(maxsize=4)
def partition_rows(data: DataSettings, partition_id: int, num_partitions: int) -> np.ndarray:
    """Partition ``partition_id`` of the dataset's training split, as the study runner makes it.

    The dataset is split into training and test rows with
    :func:`fedgmm.datasets.split.split_dataset` (seed ``data.seed``) and the training
    rows are partitioned by :func:`fedgmm.datasets.recipe.partition_rows`, the recipe the
    studies use, so the result is the in-process client array ``clients[partition_id]``.

    Raises
    ------
    SettingsError
        If ``partition_id`` is not in ``[0, num_partitions)``.
    """
    from fedgmm.datasets.recipe import partition_rows as recipe
    from fedgmm.datasets.split import split_dataset

    if not 0 <= partition_id < num_partitions:
        raise SettingsError(f"partition-id must be in [0, num-partitions={num_partitions}), got {partition_id}.")
    X_train, y_train, _, _ = split_dataset(_load(data), test_fraction=data.test_fraction, seed=data.seed)
    rows = recipe(
        X_train, y_train, partitioner=data.partitioner, num_partitions=num_partitions, alpha=data.alpha,
        min_partition_size=data.min_partition_size, regimes=data.regimes, seed=data.seed,
        extra=dict(data.partitioner_args),
    )[partition_id]
    rows.setflags(write=False)
    return rows


def client_partitions(data: DataSettings, num_partitions: int) -> list[np.ndarray]:
    """Every partition (what the in-process runner's clients hold for the same settings)."""
    return [np.array(partition_rows(data, i, num_partitions)) for i in range(num_partitions)]


def held_out_rows(data: DataSettings) -> np.ndarray:
    """The held-out test rows of the dataset's split (the study runner's test set)."""
    from fedgmm.datasets.split import split_dataset

    return split_dataset(_load(data), test_fraction=data.test_fraction, seed=data.seed)[2]


@lru_cache(maxsize=4)
def _file_rows(path: str, label_column: int | str | None, mtime: float) -> np.ndarray:
    from fedgmm.datasets import load_file

    rows = load_file(path, label_column=label_column).X
    rows.setflags(write=False)
    return rows


def file_rows(path: str | Path, label_column: int | str | None = None) -> np.ndarray:
    """The feature rows of a ``.csv``/``.npy`` file (the label column removed if named)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data-path {str(path)!r}: no such file (relative paths are read from the SuperNode's working directory).")
    return _file_rows(str(path.resolve()), label_column, path.stat().st_mtime)


def _label_column(node_config: Mapping[str, Any]) -> int | str | None:
    label = node_config.get("label-column", "")
    if isinstance(label, bool) or not isinstance(label, int | str):
        raise SettingsError(f"node config 'label-column' must be a column index or name, got {label!r}.")
    return None if label == "" else label


def node_data(node_config: Mapping[str, Any], run_config: Mapping[str, Any]) -> NodeData:
    """The data a node answers from, chosen by its node config.

    Two kinds of node:

    - **file node** (deployment, data stays on the node): ``data-path`` names a
      ``.csv``/``.npy`` file, ``label-column`` optionally names a column to drop, and
      ``client-id`` (or ``partition-id``) is the id it reports;
    - **partition node** (simulation, or demos): ``partition-id`` and
      ``num-partitions`` select a partition of a named dataset; the data settings
      (:data:`~fedgmm.flower.settings.DATA_KEYS`) come from the node config when set
      there, else from the run config (simulated nodes only have the two ids).

    Raises
    ------
    SettingsError
        Missing or invalid keys.
    FileNotFoundError, fedgmm.datasets.DatasetFormatError
        For an unreadable ``data-path``.
    """
    where = "node config"
    if "data-path" in node_config:
        path = node_config["data-path"]
        if not isinstance(path, str) or not path:
            raise SettingsError(f"node config 'data-path' must be a quoted path, got {path!r}.")
        key = "client-id" if "client-id" in node_config else "partition-id"
        if key not in node_config:
            raise SettingsError("a node with 'data-path' needs 'client-id' (or 'partition-id') in its node config.")
        client_id = get_int(node_config, key, where, low=0)
        rows = file_rows(path, _label_column(node_config))
        return NodeData(rows, client_id, f"file {path}")
    for key in ("partition-id", "num-partitions"):
        if key not in node_config:
            raise SettingsError(
                f"node config lacks {key!r}: start the SuperNode with --node-config "
                "\"partition-id=<i> num-partitions=<n>\" (or data-path=\"/abs/file.csv\" client-id=<i>)."
            )
    partition_id = get_int(node_config, "partition-id", where, low=0)
    num_partitions = get_int(node_config, "num-partitions", where, low=1)
    merged = {k: run_config[k] for k in DATA_KEYS if k in run_config}
    merged.update({k: node_config[k] for k in DATA_KEYS if k in node_config})
    data = DataSettings.from_config(merged, "node/run config")
    rows = partition_rows(data, partition_id, num_partitions)
    return NodeData(rows, partition_id, f"partition {partition_id}/{num_partitions} of {data.dataset}")


def evaluation_rows(settings: RunSettings) -> tuple[np.ndarray, str] | None:
    """The server's evaluation set, or None when the run config names none.

    ``eval-dataset``: the held-out test split of that dataset with the run's split
    settings (``dataset-args`` apply when it is the run's ``dataset``); ``eval-path``: every
    row of a ``.csv``/``.npy`` file (``eval-label-column`` dropped).
    """
    if settings.eval_path:
        return np.array(file_rows(settings.eval_path, settings.eval_label_column)), f"file {settings.eval_path}"
    if settings.eval_dataset:
        data = settings.data
        args = data.dataset_args if settings.eval_dataset == data.dataset else ()
        data = DataSettings(
            dataset=settings.eval_dataset, dataset_args=args, test_fraction=data.test_fraction, seed=data.seed,
        )
        if data.test_fraction <= 0:
            raise SettingsError("eval-dataset needs test-fraction > 0 (the evaluation rows are its held-out split).")
        return held_out_rows(data), f"test split of {settings.eval_dataset}"
    return None

"""The one split → partition recipe: the clients' rows of a dataset, as studies and Flower nodes both make them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedgmm.datasets.partition import make_partitioner, partitioner_arguments
from fedgmm.datasets.split import partition_labels


def partition_rows(
    X_train: np.ndarray,
    y_train: np.ndarray,
    *,
    partitioner: str,
    num_partitions: int,
    alpha: float | None,
    min_partition_size: int | None,
    regimes: int | str,
    seed: int,
    extra: Mapping[str, Any] | None = None,
) -> list[np.ndarray]:
    """Split training rows over ``num_partitions`` clients.

    The rows are labelled by :func:`~fedgmm.datasets.split.partition_labels` (classes, or
    k-means regimes, seeded by ``seed``) and split by the named partitioner with
    :func:`~fedgmm.datasets.partition.partitioner_arguments` (seeded by ``seed``).

    Parameters
    ----------
    X_train : ndarray of shape (n, d)
    y_train : ndarray of shape (n,)
    partitioner : str
        A name of :data:`~fedgmm.datasets.partition.PARTITIONERS`.
    num_partitions, alpha, min_partition_size, extra
        The partitioner's settings (those it does not take are left out).
    regimes : int or {"auto", "classes"}
    seed : int

    Returns
    -------
    list of ndarray of shape (n_c, d)
        One array per client, in partition order.
    """
    split = make_partitioner(partitioner, **partitioner_arguments(
        partitioner, num_partitions=num_partitions, alpha=alpha, min_partition_size=min_partition_size,
        seed=seed, extra=dict(extra or {}),
    ))  # fmt: skip
    return [X_train[idx] for idx in split.split(partition_labels(X_train, y_train, regimes, seed))]

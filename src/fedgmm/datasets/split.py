"""Train / test / out-of-distribution split of a dataset, reproducible by seed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedgmm.datasets.base import Dataset


def split_dataset(
    ds: Dataset, *, test_fraction: float, seed: int, ood_classes: Sequence[int] = ()
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Training rows and labels, test inliers, and the out-of-distribution rows (or None).

    Anomalies (where the dataset defines them) and rows of ``ood_classes`` never reach
    training; they are the positives of detection metrics. The inliers are split per
    class, ``test_fraction`` of each held out, with a Generator seeded by ``seed``.

    Returns
    -------
    X_train : ndarray of shape (n_train, d)
    y_train : ndarray of shape (n_train,)
    X_test : ndarray of shape (n_test, d)
    X_ood : ndarray of shape (n_ood, d) or None
    """
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}.")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7E57]))
    ood = np.zeros(ds.n_samples, dtype=bool)
    if ds.anomaly is not None:
        ood |= ds.anomaly
    if len(ood_classes):
        ood |= np.isin(ds.y, list(ood_classes))
    inliers = np.flatnonzero(~ood)
    test_mask = np.zeros(ds.n_samples, dtype=bool)
    for cls in np.unique(ds.y[inliers]):
        rows = inliers[ds.y[inliers] == cls]
        n_test = round(test_fraction * rows.size)
        test_mask[rng.permutation(rows)[:n_test]] = True
    train = np.flatnonzero(~ood & ~test_mask)
    X_ood = ds.X[ood] if ood.any() else None
    return ds.X[train], ds.y[train], ds.X[test_mask & ~ood], X_ood


#: With fewer classes than this, ``regimes="auto"`` partitions by k-means regimes instead.
MIN_CLASSES_FOR_LABEL_SKEW = 5
#: Number of k-means regimes ``regimes="auto"`` uses.
DEFAULT_REGIMES = 10


def partition_labels(X: np.ndarray, y: np.ndarray, regimes: int | str, seed: int) -> np.ndarray:
    """The labels a label-skew partitioner splits on: classes, or feature-space regimes.

    The paper's heterogeneity is feature skew, ``p_c(x) = Σ_m π_cm p_m(x)`` over classes
    or *regimes* ``m``. A set with one or two classes (shuttle's inliers, KDD-TSAD
    windows) has no classes to skew, so its regimes are k-means clusters of the
    standardised training rows (seeded).

    Parameters
    ----------
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,)
    regimes : int or {"auto", "classes"}
        ``"classes"``: ``y``; an int ``R``: ``R`` k-means regimes; ``"auto"``: ``y`` when it
        has at least :data:`MIN_CLASSES_FOR_LABEL_SKEW` classes, else
        :data:`DEFAULT_REGIMES` k-means regimes.
    seed : int
    """
    if regimes == "classes" or (regimes == "auto" and np.unique(y).size >= MIN_CLASSES_FOR_LABEL_SKEW):
        return y
    if regimes == "auto":
        regimes = DEFAULT_REGIMES
    if isinstance(regimes, str) or isinstance(regimes, bool) or int(regimes) < 1:
        raise ValueError(f"regimes must be 'auto', 'classes' or an int >= 1, got {regimes!r}.")
    from sklearn.cluster import KMeans

    std = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
    k = min(int(regimes), X.shape[0])
    return np.asarray(KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(Z), dtype=np.int64)

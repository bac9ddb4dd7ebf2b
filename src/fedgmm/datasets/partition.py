"""Split data into federated client partitions: IID, Dirichlet, shard, pathological, quantity."""

from __future__ import annotations

import inspect
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np

__all__ = [
    "DirichletPartitioner",
    "IidPartitioner",
    "Partitioner",
    "PathologicalPartitioner",
    "QuantitySkewPartitioner",
    "ShardPartitioner",
    "make_partitioner",
    "partition_data",
]

Seed = int | np.random.Generator | None
ClassAssignmentMode = Literal["random", "first-deterministic", "deterministic"]
SizeDistribution = Literal["dirichlet", "power"]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def _check_seed(seed: Any) -> Seed:
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(
            f"seed must be an int, a numpy.random.Generator or None, got {type(seed).__name__}."
        )
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}.")
    return int(seed)


def _check_labels(y: Any) -> np.ndarray:
    """Validate a label vector: 1-D, non-empty, no NaN / None."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(
            f"y must be a 1-D array of labels of shape (n_samples,), got shape {y.shape}."
        )
    if y.shape[0] == 0:
        raise ValueError("y is empty: cannot partition zero samples.")
    if y.dtype.kind in "fc" and np.any(np.isnan(y)):
        raise ValueError("y contains NaN labels; drop or impute the unlabelled samples first.")
    if y.dtype.kind == "O":
        if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in y):
            raise ValueError("y contains missing labels (None/NaN); drop those samples first.")
        try:
            np.unique(y)
        except TypeError as exc:
            raise ValueError(
                "y holds labels of mixed, non-comparable types; use integer or string labels."
            ) from exc
    if y.dtype.kind not in "biufcUSO":
        raise ValueError(f"y must hold integer, float or string labels, got dtype {y.dtype}.")
    return y


def _finalize(parts: Sequence[np.ndarray | list[int]]) -> list[np.ndarray]:
    """Convert each partition to a sorted int64 index array."""
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


# ---------------------------------------------------------------------------
# base class
# ---------------------------------------------------------------------------


class Partitioner(ABC):
    """Base class of the partitioners: validated hyper-parameters and :meth:`split`.

    Subclasses take keyword-only hyper-parameters, store them unchanged, and draw
    their randomness from ``seed``:

    - an ``int`` gives a fresh ``numpy.random.default_rng(seed)`` at every call of
      :meth:`split`, so repeated calls on the same input return the same partition;
    - a ``numpy.random.Generator`` is used as is (its state advances, so two calls
      give two different partitions);
    - ``None`` draws fresh OS entropy at every call.
    """

    #: Whether :meth:`split` needs labels (``y``); IID and quantity skew do not.
    requires_labels: ClassVar[bool] = True
    #: Whether some samples may be left out of every partition (documented per class).
    may_drop_samples: ClassVar[bool] = False

    def __init__(self, *, num_partitions: int, seed: Seed = None) -> None:
        self.num_partitions = _check_int("num_partitions", num_partitions, 1)
        self.seed = _check_seed(seed)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as passed to the constructor."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def _rng(self) -> np.random.Generator:
        if isinstance(self.seed, np.random.Generator):
            return self.seed
        return np.random.default_rng(self.seed)

    def _resolve_input(self, y: Any, n_samples: int | None) -> tuple[np.ndarray | None, int]:
        """Return ``(labels or None, n)`` after checking ``y`` / ``n_samples``."""
        labels: np.ndarray | None = None
        if y is not None:
            labels = _check_labels(y)
        if n_samples is not None:
            n_samples = _check_int("n_samples", n_samples, 1)
            if labels is not None and labels.shape[0] != n_samples:
                raise ValueError(
                    f"n_samples={n_samples} disagrees with len(y)={labels.shape[0]}; pass one of them."
                )
        if labels is None:
            if self.requires_labels:
                raise ValueError(
                    f"{type(self).__name__} partitions by label: pass the labels y of shape (n_samples,)."
                )
            if n_samples is None:
                raise ValueError("pass either the labels y or n_samples.")
            n = n_samples
        else:
            n = int(labels.shape[0])
        if self.num_partitions > n:
            raise ValueError(
                f"num_partitions={self.num_partitions} is larger than the number of samples ({n}); "
                "use fewer partitions or more data."
            )
        return labels, n

    def split(self, y: Any = None, *, n_samples: int | None = None) -> list[np.ndarray]:
        """Assign sample indices to partitions.

        Parameters
        ----------
        y : array-like of shape (n_samples,), optional
            Labels (int, float or str). Required by the label-based partitioners.
        n_samples : int, optional
            Number of samples; enough for partitioners that ignore labels.

        Returns
        -------
        partitions : list of ndarray of int64
            ``num_partitions`` arrays of row indices, each sorted ascending; they are
            disjoint and, unless the class documents that it drops samples, their
            union is ``range(n_samples)``.
        """
        labels, n = self._resolve_input(y, n_samples)
        return _finalize(self._split(labels, n, self._rng()))

    @abstractmethod
    def _split(
        self, y: np.ndarray | None, n: int, rng: np.random.Generator
    ) -> Sequence[np.ndarray | list[int]]:
        """Compute the partitions (unsorted) from validated input."""


# ---------------------------------------------------------------------------
# partitioners
# ---------------------------------------------------------------------------


class IidPartitioner(Partitioner):
    """Uniformly random partitions of (near) equal size.

    The rows are shuffled and cut into ``num_partitions`` contiguous blocks whose
    sizes differ by at most one (Flower Datasets' ``IidPartitioner``).

    Parameters
    ----------
    num_partitions : int
        Number of partitions (clients), ``>= 1``.
    seed : int, numpy.random.Generator or None, default=None
        Source of randomness; see :class:`Partitioner`.
    """

    requires_labels = False

    def __init__(self, *, num_partitions: int, seed: Seed = None) -> None:
        super().__init__(num_partitions=num_partitions, seed=seed)

    def _split(
        self, y: np.ndarray | None, n: int, rng: np.random.Generator
    ) -> Sequence[np.ndarray | list[int]]:
        return np.array_split(rng.permutation(n), self.num_partitions)


class DirichletPartitioner(Partitioner):
    """Label-distribution skew: class proportions over partitions drawn from Dir(α).

    For every class ``k`` (in sorted label order) the fractions
    ``p_k ~ Dir(α_1, …, α_P)`` of its samples going to each of the ``P`` partitions
    are drawn, and the (shuffled) samples of class ``k`` are cut at
    ``floor(cumsum(p_k) · n_k)``. With ``self_balancing`` a partition that already
    holds more than ``n / P`` samples gets no share of the later classes (its
    fraction is set to zero and the others renormalised), as in the reference code
    of Yurochkin et al. (2019) and Flower Datasets' ``DirichletPartitioner``. If
    any partition ends with fewer than ``min_partition_size`` samples the whole draw
    is repeated, up to ``max_attempts`` times. Small α gives very different clients,
    large α nearly IID ones.

    Parameters
    ----------
    num_partitions : int
        Number of partitions (clients), ``>= 1``.
    alpha : float or sequence of float of length num_partitions
        Dirichlet concentration, ``> 0``; a sequence gives each partition its own.
    min_partition_size : int, default=10
        Smallest number of samples a partition may receive.
    self_balancing : bool, default=True
        Stop giving samples to a partition once it exceeds the average size ``n / P``.
    max_attempts : int, default=10
        Number of Dirichlet draws tried before giving up with a ``ValueError``.
    seed : int, numpy.random.Generator or None, default=None
        Source of randomness; see :class:`Partitioner`.
    """

    def __init__(
        self,
        *,
        num_partitions: int,
        alpha: float | Sequence[float] | np.ndarray,
        min_partition_size: int = 10,
        self_balancing: bool = True,
        max_attempts: int = 10,
        seed: Seed = None,
    ) -> None:
        super().__init__(num_partitions=num_partitions, seed=seed)
        self.alpha = alpha
        self._alpha = self._check_alpha(alpha)
        self.min_partition_size = _check_int("min_partition_size", min_partition_size, 0)
        self.self_balancing = bool(self_balancing)
        self.max_attempts = _check_int("max_attempts", max_attempts, 1)

    def _check_alpha(self, alpha: Any) -> np.ndarray:
        if isinstance(alpha, bool):
            raise TypeError("alpha must be a positive float or a sequence of positive floats.")
        arr = np.asarray(alpha, dtype=np.float64)
        if arr.ndim == 0:
            arr = np.full(self.num_partitions, float(arr))
        elif arr.ndim != 1 or arr.shape[0] != self.num_partitions:
            raise ValueError(
                f"alpha must be a float or a sequence of num_partitions={self.num_partitions} "
                f"floats, got shape {arr.shape}."
            )
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0.0):
            raise ValueError(f"alpha must be finite and > 0, got {alpha!r}.")
        return arr

    def _split(
        self, y: np.ndarray | None, n: int, rng: np.random.Generator
    ) -> Sequence[np.ndarray | list[int]]:
        assert y is not None
        p = self.num_partitions
        if self.min_partition_size * p > n:
            raise ValueError(
                f"min_partition_size={self.min_partition_size} times num_partitions={p} exceeds "
                f"the number of samples ({n}); lower min_partition_size or num_partitions."
            )
        classes, y_idx = np.unique(y, return_inverse=True)
        class_members = [np.flatnonzero(y_idx == k) for k in range(classes.shape[0])]
        average = n / p
        sizes = np.zeros(p, dtype=np.int64)
        for _ in range(self.max_attempts):
            parts: list[list[np.ndarray]] = [[] for _ in range(p)]
            sizes[:] = 0
            for members in class_members:
                members = rng.permutation(members)
                proportions = rng.dirichlet(self._alpha)
                if self.self_balancing:
                    proportions = np.where(sizes > average, 0.0, proportions)
                total = proportions.sum()
                if not np.isfinite(total) or total <= 0.0:
                    # Tiny α can underflow every open share to 0: fall back to equal shares.
                    open_ = sizes <= average if self.self_balancing else np.ones(p, dtype=bool)
                    proportions = open_.astype(np.float64)
                    total = proportions.sum()
                proportions = proportions / total
                cuts = (np.cumsum(proportions) * members.shape[0]).astype(np.int64)[:-1]
                for j, chunk in enumerate(np.split(members, cuts)):
                    parts[j].append(chunk)
                    sizes[j] += chunk.shape[0]
            if sizes.min() >= self.min_partition_size:
                return [np.concatenate(chunks) for chunks in parts]
        raise ValueError(
            f"DirichletPartitioner could not give every partition at least "
            f"min_partition_size={self.min_partition_size} samples in {self.max_attempts} "
            f"attempts (alpha={self.alpha!r}, num_partitions={p}, n_samples={n}; smallest "
            f"partition in the last attempt: {int(sizes.min())}). Lower min_partition_size, "
            "raise alpha, use fewer partitions, or raise max_attempts."
        )


class ShardPartitioner(Partitioner):
    """Label skew by shards of label-sorted data (McMahan et al., 2017).

    The rows are sorted by label (stable sort) and cut into
    ``num_partitions * num_shards_per_partition`` contiguous shards; the shards are
    shuffled and every partition receives ``num_shards_per_partition`` of them, so
    each client sees only a few classes.

    - ``shard_size=None`` (default): the shards have near-equal sizes (differing by
      at most one) and cover every row — no sample is dropped.
    - ``shard_size=s``: every shard holds exactly ``s`` rows; the ``P · m`` shards
      are drawn at random from the ``floor(n / s)`` available ones and the rows in
      the other shards are **dropped** (Flower Datasets' behaviour with both
      ``num_shards_per_partition`` and ``shard_size`` given).

    Parameters
    ----------
    num_partitions : int
        Number of partitions (clients), ``>= 1``.
    num_shards_per_partition : int, default=2
        Shards per partition, ``>= 1``.
    shard_size : int or None, default=None
        Rows per shard; ``None`` splits all rows into equal shards.
    seed : int, numpy.random.Generator or None, default=None
        Source of randomness; see :class:`Partitioner`.
    """

    may_drop_samples = True

    def __init__(
        self,
        *,
        num_partitions: int,
        num_shards_per_partition: int = 2,
        shard_size: int | None = None,
        seed: Seed = None,
    ) -> None:
        super().__init__(num_partitions=num_partitions, seed=seed)
        self.num_shards_per_partition = _check_int(
            "num_shards_per_partition", num_shards_per_partition, 1
        )
        self.shard_size = None if shard_size is None else _check_int("shard_size", shard_size, 1)

    def _split(
        self, y: np.ndarray | None, n: int, rng: np.random.Generator
    ) -> Sequence[np.ndarray | list[int]]:
        assert y is not None
        m = self.num_shards_per_partition
        n_shards = self.num_partitions * m
        order = np.argsort(y, kind="stable")
        if self.shard_size is None:
            if n_shards > n:
                raise ValueError(
                    f"num_partitions * num_shards_per_partition = {n_shards} shards exceed the "
                    f"number of samples ({n}); lower num_shards_per_partition or num_partitions."
                )
            shards = np.array_split(order, n_shards)
            chosen = rng.permutation(n_shards)
        else:
            s = self.shard_size
            available = n // s
            if n_shards > available:
                raise ValueError(
                    f"{n_shards} shards of shard_size={s} need {n_shards * s} samples but only {n} "
                    "are given; lower shard_size, num_shards_per_partition or num_partitions."
                )
            shards = [order[i * s : (i + 1) * s] for i in range(available)]
            chosen = rng.permutation(available)[:n_shards]
        return [
            np.concatenate([shards[i] for i in chosen[j * m : (j + 1) * m]])
            for j in range(self.num_partitions)
        ]


class PathologicalPartitioner(Partitioner):
    """Every partition holds exactly ``num_classes_per_partition`` classes (Li et al., 2022).

    First each partition is given its set of classes, by ``class_assignment_mode``
    (labels are taken in sorted order; ``c_i`` is the i-th class):

    - ``"random"``: ``num_classes_per_partition`` classes drawn without replacement;
    - ``"first-deterministic"``: partition ``j`` gets ``c_{j mod C}`` plus randomly
      drawn other classes (so every class is used when ``num_partitions >= C``);
      this is the original paper's setting;
    - ``"deterministic"``: partition ``j`` gets ``c_{(j+i) mod C}`` for
      ``i < num_classes_per_partition``.

    The (shuffled) samples of each class are then split into near-equal parts among
    the partitions holding that class. Samples of classes held by no partition are
    **dropped**, with a warning.

    Parameters
    ----------
    num_partitions : int
        Number of partitions (clients), ``>= 1``.
    num_classes_per_partition : int
        Number of distinct classes per partition, ``1 <= · <= n_classes``.
    class_assignment_mode : {"random", "first-deterministic", "deterministic"}, default="random"
    seed : int, numpy.random.Generator or None, default=None
        Source of randomness; see :class:`Partitioner`.
    """

    may_drop_samples = True
    _MODES: ClassVar[tuple[str, ...]] = ("random", "first-deterministic", "deterministic")

    def __init__(
        self,
        *,
        num_partitions: int,
        num_classes_per_partition: int,
        class_assignment_mode: ClassAssignmentMode = "random",
        seed: Seed = None,
    ) -> None:
        super().__init__(num_partitions=num_partitions, seed=seed)
        self.num_classes_per_partition = _check_int(
            "num_classes_per_partition", num_classes_per_partition, 1
        )
        if class_assignment_mode not in self._MODES:
            raise ValueError(
                f"class_assignment_mode must be one of {list(self._MODES)}, "
                f"got {class_assignment_mode!r}."
            )
        self.class_assignment_mode = class_assignment_mode

    def _assign_classes(self, n_classes: int, rng: np.random.Generator) -> list[np.ndarray]:
        m, p = self.num_classes_per_partition, self.num_partitions
        if self.class_assignment_mode == "deterministic":
            return [(j + np.arange(m)) % n_classes for j in range(p)]
        if self.class_assignment_mode == "first-deterministic":
            out = []
            for j in range(p):
                first = j % n_classes
                others = np.delete(np.arange(n_classes), first)
                out.append(np.concatenate([[first], rng.choice(others, size=m - 1, replace=False)]))
            return out
        return [rng.choice(n_classes, size=m, replace=False) for _ in range(p)]

    def _split(
        self, y: np.ndarray | None, n: int, rng: np.random.Generator
    ) -> Sequence[np.ndarray | list[int]]:
        assert y is not None
        classes, y_idx = np.unique(y, return_inverse=True)
        n_classes = classes.shape[0]
        if self.num_classes_per_partition > n_classes:
            raise ValueError(
                f"num_classes_per_partition={self.num_classes_per_partition} exceeds the number "
                f"of classes in y ({n_classes}); lower num_classes_per_partition."
            )
        assignment = self._assign_classes(n_classes, rng)
        holders: list[list[int]] = [[] for _ in range(n_classes)]
        for j, cls in enumerate(assignment):
            for k in cls:
                holders[int(k)].append(j)
        counts = np.bincount(y_idx, minlength=n_classes)
        for k in range(n_classes):
            if len(holders[k]) > counts[k]:
                raise ValueError(
                    f"class {classes[k]!r} has {counts[k]} samples but is assigned to "
                    f"{len(holders[k])} partitions; lower num_partitions or "
                    "num_classes_per_partition, or use class_assignment_mode='deterministic'."
                )
        parts: list[list[np.ndarray]] = [[] for _ in range(self.num_partitions)]
        unused = []
        for k in range(n_classes):
            if not holders[k]:
                unused.append(classes[k].item())
                continue
            members = rng.permutation(np.flatnonzero(y_idx == k))
            for j, chunk in zip(holders[k], np.array_split(members, len(holders[k])), strict=True):
                parts[j].append(chunk)
        if unused:
            warnings.warn(
                f"PathologicalPartitioner: classes {unused} are held by no partition and their "
                "samples are dropped; use class_assignment_mode='first-deterministic' with "
                "num_partitions >= n_classes to use every class.",
                UserWarning,
                stacklevel=3,
            )
        return [np.concatenate(chunks) for chunks in parts]


class QuantitySkewPartitioner(Partitioner):
    """Quantity skew: IID content, very different partition sizes.

    The sizes ``n_j`` are drawn, then the shuffled rows are cut into blocks of those
    sizes (so label distributions stay IID):

    - ``distribution="dirichlet"`` (NIID-Bench, Li et al. 2022, who call the
      concentration β): shares ``q ~ Dir(alpha · 1_P)``; small ``alpha`` gives a few
      large clients and many tiny ones, large ``alpha`` near-equal sizes;
    - ``distribution="power"``: deterministic ``n_j ∝ (j + 1) ** exponent`` —
      ``exponent=1`` is Flower Datasets' ``LinearPartitioner``, ``0.5`` its
      ``SquareRootPartitioner``, ``0`` equal sizes.

    In both cases each partition first receives ``min_partition_size`` rows and the
    remaining ``n - P · min_partition_size`` rows are shared in proportion to ``q``
    (largest-remainder rounding), so the sizes sum to ``n`` exactly.

    Parameters
    ----------
    num_partitions : int
        Number of partitions (clients), ``>= 1``.
    alpha : float, default=0.5
        Dirichlet concentration over partitions, ``> 0`` (used by ``"dirichlet"``).
    distribution : {"dirichlet", "power"}, default="dirichlet"
    exponent : float, default=1.0
        Power-law exponent, ``>= 0`` (used by ``"power"``).
    min_partition_size : int, default=1
        Smallest partition size.
    seed : int, numpy.random.Generator or None, default=None
        Source of randomness; see :class:`Partitioner`.
    """

    requires_labels = False
    _DISTRIBUTIONS: ClassVar[tuple[str, ...]] = ("dirichlet", "power")

    def __init__(
        self,
        *,
        num_partitions: int,
        alpha: float = 0.5,
        distribution: SizeDistribution = "dirichlet",
        exponent: float = 1.0,
        min_partition_size: int = 1,
        seed: Seed = None,
    ) -> None:
        super().__init__(num_partitions=num_partitions, seed=seed)
        if distribution not in self._DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {list(self._DISTRIBUTIONS)}, got {distribution!r}."
            )
        if isinstance(alpha, bool) or not np.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha must be finite and > 0, got {alpha!r}.")
        if isinstance(exponent, bool) or not np.isfinite(exponent) or exponent < 0:
            raise ValueError(f"exponent must be finite and >= 0, got {exponent!r}.")
        self.alpha = float(alpha)
        self.distribution = distribution
        self.exponent = float(exponent)
        self.min_partition_size = _check_int("min_partition_size", min_partition_size, 0)

    def partition_sizes(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw the partition sizes, shape ``(num_partitions,)``, summing to ``n``."""
        p = self.num_partitions
        base = self.min_partition_size
        if base * p > n:
            raise ValueError(
                f"min_partition_size={base} times num_partitions={p} exceeds the number of "
                f"samples ({n}); lower min_partition_size or num_partitions."
            )
        if self.distribution == "dirichlet":
            shares = rng.dirichlet(np.full(p, self.alpha))
            if not np.all(np.isfinite(shares)) or shares.sum() <= 0.0:
                shares = np.full(p, 1.0 / p)
        else:
            shares = np.arange(1, p + 1, dtype=np.float64) ** self.exponent
        shares = shares / shares.sum()
        rest = n - base * p
        exact = shares * rest
        extra = np.floor(exact).astype(np.int64)
        leftover = rest - int(extra.sum())
        if leftover > 0:
            # Largest-remainder rounding; ties broken by partition index (stable sort).
            extra[np.argsort(-(exact - extra), kind="stable")[:leftover]] += 1
        return base + extra

    def _split(
        self, y: np.ndarray | None, n: int, rng: np.random.Generator
    ) -> Sequence[np.ndarray | list[int]]:
        sizes = self.partition_sizes(n, rng)
        return np.split(rng.permutation(n), np.cumsum(sizes)[:-1])


# ---------------------------------------------------------------------------
# factory and convenience
# ---------------------------------------------------------------------------

PARTITIONERS: dict[str, type[Partitioner]] = {
    "iid": IidPartitioner,
    "dirichlet": DirichletPartitioner,
    "shard": ShardPartitioner,
    "pathological": PathologicalPartitioner,
    "quantity": QuantitySkewPartitioner,
}


def make_partitioner(name: str, **params: Any) -> Partitioner:
    """Build a partitioner by name.

    Parameters
    ----------
    name : {"iid", "dirichlet", "shard", "pathological", "quantity"}
    **params
        Keyword arguments of the partitioner's constructor (``num_partitions``, ``seed``, …).

    Returns
    -------
    partitioner : Partitioner

    Raises
    ------
    ValueError
        If the name is unknown, a parameter is not accepted by that partitioner, or a
        required one is missing; the message lists the valid choices.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in PARTITIONERS:
        raise ValueError(f"Unknown partitioner {name!r}: expected one of {sorted(PARTITIONERS)}.")
    cls = PARTITIONERS[key]
    signature = inspect.signature(cls.__init__)
    accepted = [p for p in signature.parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"Partitioner {key!r} does not accept {unknown}; valid parameters are {accepted}."
        )
    missing = [
        p
        for p, spec in signature.parameters.items()
        if p != "self" and spec.default is inspect.Parameter.empty and p not in params
    ]
    if missing:
        raise ValueError(f"Partitioner {key!r} needs {missing}; valid parameters are {accepted}.")
    return cls(**params)


def partitioner_arguments(
    name: str,
    *,
    num_partitions: int,
    alpha: float | None = None,
    min_partition_size: int | None = None,
    seed: Seed = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The keyword arguments ``make_partitioner(name, ...)`` accepts, from a flat settings record.

    Settings a partitioner does not take (``alpha`` for ``"iid"``, say) are left out, so
    one config record can name any partitioner.
    """
    args: dict[str, Any] = {"num_partitions": num_partitions, "seed": seed}
    extra = dict(extra or {})
    if name in ("dirichlet", "quantity"):
        args["alpha"] = alpha
        if min_partition_size is not None:
            args["min_partition_size"] = min_partition_size
    if name == "dirichlet":
        for key in ("self_balancing", "max_attempts"):
            if key in extra:
                args[key] = extra[key]
    if name == "shard" and "num_shards_per_partition" in extra:
        args["num_shards_per_partition"] = extra["num_shards_per_partition"]
    if name == "pathological":
        args["num_classes_per_partition"] = extra.get("num_classes_per_partition", 2)
        if "class_assignment_mode" in extra:
            args["class_assignment_mode"] = extra["class_assignment_mode"]
    return args


def partition_data(X: Any, y: Any, partitioner: Partitioner) -> list[np.ndarray]:
    """Split the rows of ``X`` into client data sets.

    Parameters
    ----------
    X : array-like of shape (n_samples, ...)
    y : array-like of shape (n_samples,) or None
        Labels; may be ``None`` for partitioners that do not need them.
    partitioner : Partitioner

    Returns
    -------
    client_X : list of ndarray
        ``num_partitions`` arrays ``X[idx_j]`` of shape ``(n_j, ...)``.
    """
    if not isinstance(partitioner, Partitioner):
        raise TypeError(
            f"partitioner must be a fedgmm.datasets.partition.Partitioner, got {type(partitioner).__name__}."
        )
    X = np.asarray(X)
    if X.ndim < 1:
        raise ValueError("X must have at least one dimension (rows = samples).")
    n = X.shape[0]
    if y is not None and np.asarray(y).shape[:1] != (n,):
        raise ValueError(f"X has {n} rows but y has shape {np.asarray(y).shape}.")
    if y is None:
        indices = partitioner.split(n_samples=n)
    else:
        indices = partitioner.split(y)
    return [X[idx] for idx in indices]

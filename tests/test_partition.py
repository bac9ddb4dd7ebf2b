"""Tests of fedgmm.partition: covering, disjointness, determinism, skew and validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedgmm.partition import (
    DirichletPartitioner,
    IidPartitioner,
    PathologicalPartitioner,
    QuantitySkewPartitioner,
    ShardPartitioner,
    make_partitioner,
    partition_data,
)

HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def labels(n: int, n_classes: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_classes, size=n)


def assert_valid(
    parts: list[np.ndarray], n: int, num_partitions: int, complete: bool = True
) -> None:
    assert len(parts) == num_partitions
    for p in parts:
        assert p.dtype == np.int64
        assert p.ndim == 1
        assert np.all(np.diff(p) > 0), "indices must be sorted ascending and unique"
        if p.size:
            assert 0 <= p[0] and p[-1] < n
    union = np.concatenate(parts)
    assert np.unique(union).size == union.size, "partitions must be disjoint"
    if complete:
        assert union.size == n


def mean_tv_distance(parts: list[np.ndarray], y: np.ndarray) -> float:
    classes = np.unique(y)
    global_hist = np.array([np.mean(y == c) for c in classes])
    tvs = []
    for p in parts:
        hist = np.array([np.mean(y[p] == c) for c in classes])
        tvs.append(0.5 * np.abs(hist - global_hist).sum())
    return float(np.mean(tvs))


# --------------------------------------------------------------------------- properties


@HYPOTHESIS
@given(n=st.integers(1, 300), p=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_iid_cover_and_sizes(n: int, p: int, seed: int) -> None:
    if p > n:
        with pytest.raises(ValueError, match="num_partitions"):
            IidPartitioner(num_partitions=p, seed=seed).split(n_samples=n)
        return
    parts = IidPartitioner(num_partitions=p, seed=seed).split(n_samples=n)
    assert_valid(parts, n, p)
    sizes = [len(x) for x in parts]
    assert max(sizes) - min(sizes) <= 1


@HYPOTHESIS
@given(
    n=st.integers(20, 400),
    p=st.integers(1, 8),
    n_classes=st.integers(1, 6),
    alpha=st.floats(0.05, 100.0),
    min_size=st.integers(0, 5),
    balancing=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_dirichlet_cover_and_min_size(
    n: int, p: int, n_classes: int, alpha: float, min_size: int, balancing: bool, seed: int
) -> None:
    y = labels(n, n_classes, seed)
    part = DirichletPartitioner(
        num_partitions=p,
        alpha=alpha,
        min_partition_size=min_size,
        self_balancing=balancing,
        max_attempts=200,
        seed=seed,
    )
    try:
        parts = part.split(y)
    except ValueError as exc:
        assert "min_partition_size" in str(exc)
        return
    assert_valid(parts, n, p)
    assert min(len(x) for x in parts) >= min_size


@HYPOTHESIS
@given(
    n=st.integers(10, 300),
    p=st.integers(1, 10),
    m=st.integers(1, 4),
    n_classes=st.integers(1, 10),
    seed=st.integers(0, 2**16),
)
def test_shard_cover(n: int, p: int, m: int, n_classes: int, seed: int) -> None:
    y = labels(n, n_classes, seed)
    part = ShardPartitioner(num_partitions=p, num_shards_per_partition=m, seed=seed)
    if p * m > n:
        with pytest.raises(ValueError, match="shards"):
            part.split(y)
        return
    parts = part.split(y)
    assert_valid(parts, n, p)


@pytest.mark.filterwarnings("ignore:.*held by no partition")
@HYPOTHESIS
@given(
    n=st.integers(30, 300),
    p=st.integers(1, 10),
    n_classes=st.integers(1, 6),
    k=st.integers(1, 6),
    mode=st.sampled_from(["random", "first-deterministic", "deterministic"]),
    seed=st.integers(0, 2**16),
)
def test_pathological_classes_and_disjoint(
    n: int, p: int, n_classes: int, k: int, mode: Any, seed: int
) -> None:
    y = np.arange(n) % n_classes  # every class has >= 5 samples
    part = PathologicalPartitioner(
        num_partitions=p, num_classes_per_partition=k, class_assignment_mode=mode, seed=seed
    )
    if k > n_classes:
        with pytest.raises(ValueError, match="num_classes_per_partition"):
            part.split(y)
        return
    try:
        parts = part.split(y)
    except ValueError as exc:
        assert "assigned to" in str(exc)
        return
    # every sample either kept once or dropped because nobody holds its class
    used = set(np.unique(y[np.concatenate(parts)]).tolist())
    assert_valid(parts, n, p, complete=False)
    assert np.concatenate(parts).size == np.isin(y, list(used)).sum()
    for x in parts:
        assert np.unique(y[x]).size == k


@HYPOTHESIS
@given(
    n=st.integers(1, 500),
    p=st.integers(1, 15),
    alpha=st.floats(0.01, 50.0),
    dist=st.sampled_from(["dirichlet", "power"]),
    min_size=st.integers(0, 10),
    seed=st.integers(0, 2**16),
)
def test_quantity_cover_and_min_size(
    n: int, p: int, alpha: float, dist: Any, min_size: int, seed: int
) -> None:
    part = QuantitySkewPartitioner(
        num_partitions=p, alpha=alpha, distribution=dist, min_partition_size=min_size, seed=seed
    )
    if p > n or p * min_size > n:
        with pytest.raises(ValueError):
            part.split(n_samples=n)
        return
    parts = part.split(n_samples=n)
    assert_valid(parts, n, p)
    assert min(len(x) for x in parts) >= min_size


# --------------------------------------------------------------------------- determinism


@pytest.mark.filterwarnings("ignore:.*held by no partition")
@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("iid", {}),
        ("dirichlet", {"alpha": 0.5, "min_partition_size": 5}),
        ("shard", {"num_shards_per_partition": 2}),
        ("pathological", {"num_classes_per_partition": 2}),
        ("quantity", {"alpha": 1.0}),
    ],
)
def test_same_seed_same_partition_other_seed_differs(name: str, params: dict) -> None:
    y = labels(600, 10)
    a = make_partitioner(name, num_partitions=5, seed=3, **params)
    b = make_partitioner(name, num_partitions=5, seed=3, **params)
    c = make_partitioner(name, num_partitions=5, seed=4, **params)
    pa, pb, pc = a.split(y), b.split(y), c.split(y)
    assert all(np.array_equal(u, v) for u, v in zip(pa, pb, strict=True))
    assert all(np.array_equal(u, v) for u, v in zip(pa, a.split(y), strict=True)), (
        "int seed is repeatable"
    )
    assert not all(np.array_equal(u, v) for u, v in zip(pa, pc, strict=True))


def test_generator_seed_advances() -> None:
    rng = np.random.default_rng(0)
    part = IidPartitioner(num_partitions=3, seed=rng)
    first, second = part.split(n_samples=30), part.split(n_samples=30)
    assert not all(np.array_equal(u, v) for u, v in zip(first, second, strict=True))
    again = IidPartitioner(num_partitions=3, seed=np.random.default_rng(0)).split(n_samples=30)
    assert all(np.array_equal(u, v) for u, v in zip(first, again, strict=True))


# --------------------------------------------------------------------------- semantics


def test_small_alpha_is_more_skewed_than_large_alpha() -> None:
    y = labels(5000, 10)
    skewed = [
        mean_tv_distance(
            DirichletPartitioner(num_partitions=10, alpha=0.1, min_partition_size=0, seed=s).split(
                y
            ),
            y,
        )
        for s in range(5)
    ]
    mild = [
        mean_tv_distance(
            DirichletPartitioner(
                num_partitions=10, alpha=100.0, min_partition_size=0, seed=s
            ).split(y),
            y,
        )
        for s in range(5)
    ]
    assert np.mean(skewed) > 0.4
    assert np.mean(mild) < 0.1
    assert np.mean(skewed) > 4 * np.mean(mild)


def test_dirichlet_without_balancing_follows_proportions() -> None:
    y = np.zeros(10_000, dtype=int)  # one class: sizes follow one Dir(alpha) draw
    parts = DirichletPartitioner(
        num_partitions=4, alpha=1000.0, min_partition_size=0, self_balancing=False, seed=0
    ).split(y)
    sizes = np.array([len(p) for p in parts])
    assert np.all(np.abs(sizes - 2500) < 250)


def test_dirichlet_self_balancing_limits_sizes() -> None:
    y = labels(2000, 20)
    for seed in range(5):
        parts = DirichletPartitioner(
            num_partitions=5, alpha=0.3, min_partition_size=0, self_balancing=True, seed=seed
        ).split(y)
        unbalanced = DirichletPartitioner(
            num_partitions=5, alpha=0.3, min_partition_size=0, self_balancing=False, seed=seed
        ).split(y)
        assert np.std([len(p) for p in parts]) <= np.std([len(p) for p in unbalanced]) + 50


def test_dirichlet_impossible_min_size_raises_actionable() -> None:
    y = labels(200, 2)
    with pytest.raises(ValueError, match=r"Lower min_partition_size, raise alpha"):
        DirichletPartitioner(
            num_partitions=10, alpha=0.01, min_partition_size=15, max_attempts=3, seed=0
        ).split(y)
    with pytest.raises(ValueError, match="exceeds the number of samples"):
        DirichletPartitioner(num_partitions=10, alpha=1.0, min_partition_size=30, seed=0).split(y)


def test_dirichlet_alpha_vector() -> None:
    y = labels(500, 5)
    parts = DirichletPartitioner(
        num_partitions=3, alpha=[0.5, 1.0, 2.0], min_partition_size=1, seed=0
    ).split(y)
    assert_valid(parts, 500, 3)
    with pytest.raises(ValueError, match="sequence of num_partitions=3"):
        DirichletPartitioner(num_partitions=3, alpha=[1.0, 1.0])


def test_dirichlet_string_labels() -> None:
    y = np.array(["cat", "dog", "bird"] * 50)
    parts = DirichletPartitioner(num_partitions=3, alpha=1.0, min_partition_size=1, seed=0).split(y)
    assert_valid(parts, 150, 3)


def test_shard_partitions_see_few_classes() -> None:
    y = np.repeat(np.arange(10), 100)
    parts = ShardPartitioner(num_partitions=10, num_shards_per_partition=2, seed=0).split(y)
    assert_valid(parts, 1000, 10)
    assert all(np.unique(y[p]).size <= 2 for p in parts)
    assert all(len(p) == 100 for p in parts)


def test_shard_with_shard_size_drops_remainder() -> None:
    y = np.repeat(np.arange(5), 41)  # n = 205
    part = ShardPartitioner(num_partitions=4, num_shards_per_partition=2, shard_size=20, seed=0)
    parts = part.split(y)
    assert_valid(parts, 205, 4, complete=False)
    assert [len(p) for p in parts] == [40] * 4
    assert ShardPartitioner.may_drop_samples
    with pytest.raises(ValueError, match="need 400 samples"):
        ShardPartitioner(num_partitions=4, num_shards_per_partition=2, shard_size=50).split(y)


def test_pathological_first_deterministic_uses_every_class() -> None:
    y = np.repeat(np.arange(5), 40)
    parts = PathologicalPartitioner(
        num_partitions=10,
        num_classes_per_partition=2,
        class_assignment_mode="first-deterministic",
        seed=0,
    ).split(y)
    assert_valid(parts, 200, 10)
    for j, p in enumerate(parts):
        assert j % 5 in set(y[p].tolist())


def test_pathological_deterministic_assignment() -> None:
    y = np.repeat(np.arange(4), 30)
    parts = PathologicalPartitioner(
        num_partitions=4, num_classes_per_partition=2, class_assignment_mode="deterministic"
    ).split(y)
    for j, p in enumerate(parts):
        assert set(y[p].tolist()) == {j % 4, (j + 1) % 4}


def test_pathological_warns_when_classes_unused() -> None:
    y = np.repeat(np.arange(6), 20)
    with pytest.warns(UserWarning, match="dropped"):
        parts = PathologicalPartitioner(
            num_partitions=2, num_classes_per_partition=1, class_assignment_mode="deterministic"
        ).split(y)
    assert_valid(parts, 120, 2, complete=False)


def test_pathological_too_many_holders() -> None:
    y = np.array([0] * 50 + [1] * 2)
    with pytest.raises(ValueError, match="assigned to"):
        PathologicalPartitioner(
            num_partitions=5, num_classes_per_partition=2, class_assignment_mode="random", seed=0
        ).split(y)


def test_quantity_dirichlet_skew_and_power_law() -> None:
    skewed = QuantitySkewPartitioner(num_partitions=10, alpha=0.1, seed=0).split(n_samples=10_000)
    flat = QuantitySkewPartitioner(num_partitions=10, alpha=1000.0, seed=0).split(n_samples=10_000)
    assert np.std([len(p) for p in skewed]) > 5 * np.std([len(p) for p in flat])
    linear = QuantitySkewPartitioner(
        num_partitions=4, distribution="power", exponent=1.0, min_partition_size=0
    )
    assert [len(p) for p in linear.split(n_samples=100)] == [10, 20, 30, 40]
    equal = QuantitySkewPartitioner(num_partitions=4, distribution="power", exponent=0.0)
    assert [len(p) for p in equal.split(n_samples=101)] == [26, 25, 25, 25]


def test_label_free_partitioners_accept_labels_or_count() -> None:
    y = labels(50, 3)
    a = IidPartitioner(num_partitions=5, seed=1).split(y)
    b = IidPartitioner(num_partitions=5, seed=1).split(n_samples=50)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="disagrees"):
        IidPartitioner(num_partitions=5).split(y, n_samples=49)
    with pytest.raises(ValueError, match="either the labels y or n_samples"):
        IidPartitioner(num_partitions=5).split()


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("cls", [IidPartitioner, QuantitySkewPartitioner])
def test_num_partitions_validation(cls: type) -> None:
    with pytest.raises(ValueError, match="num_partitions must be >= 1"):
        cls(num_partitions=0)
    with pytest.raises(TypeError, match="num_partitions must be an integer"):
        cls(num_partitions=2.5)
    with pytest.raises(ValueError, match="larger than the number of samples"):
        cls(num_partitions=11).split(n_samples=10)


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_alpha_validation(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        DirichletPartitioner(num_partitions=3, alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
        QuantitySkewPartitioner(num_partitions=3, alpha=alpha)


def test_label_validation() -> None:
    part = DirichletPartitioner(num_partitions=2, alpha=1.0, min_partition_size=0)
    with pytest.raises(ValueError, match="1-D"):
        part.split(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="NaN"):
        part.split(np.array([0.0, 1.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="missing labels"):
        part.split(np.array([0, 1, None, 1], dtype=object))
    with pytest.raises(ValueError, match="empty"):
        part.split(np.array([], dtype=int))
    with pytest.raises(ValueError, match="partitions by label"):
        part.split(n_samples=10)


def test_other_parameter_validation() -> None:
    with pytest.raises(ValueError, match="class_assignment_mode"):
        bad_mode: Any = "nope"
        PathologicalPartitioner(
            num_partitions=2, num_classes_per_partition=1, class_assignment_mode=bad_mode
        )
    with pytest.raises(ValueError, match="distribution"):
        QuantitySkewPartitioner(num_partitions=2, distribution="zipf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exponent"):
        QuantitySkewPartitioner(num_partitions=2, distribution="power", exponent=-1.0)
    with pytest.raises(TypeError, match="seed"):
        IidPartitioner(num_partitions=2, seed="abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_shards_per_partition"):
        ShardPartitioner(num_partitions=2, num_shards_per_partition=0)


# --------------------------------------------------------------------------- factory


def test_make_partitioner_by_name() -> None:
    p = make_partitioner("dirichlet", num_partitions=10, alpha=0.5, seed=0)
    assert isinstance(p, DirichletPartitioner)
    assert p.num_partitions == 10 and p.alpha == 0.5
    assert isinstance(make_partitioner("IID", num_partitions=2), IidPartitioner)
    assert "DirichletPartitioner(num_partitions=10, alpha=0.5" in repr(p)


def test_make_partitioner_errors_list_valid_choices() -> None:
    with pytest.raises(
        ValueError,
        match=r"expected one of \['dirichlet', 'iid', 'pathological', 'quantity', 'shard'\]",
    ):
        make_partitioner("label-skew", num_partitions=2)
    with pytest.raises(
        ValueError,
        match=r"does not accept \['alpha'\]; valid parameters are \['num_partitions', 'seed'\]",
    ):
        make_partitioner("iid", num_partitions=2, alpha=1.0)
    with pytest.raises(ValueError, match=r"needs \['alpha'\]"):
        make_partitioner("dirichlet", num_partitions=2)


def test_partition_data() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = labels(300, 3)
    parts = partition_data(X, y, make_partitioner("dirichlet", num_partitions=4, alpha=1.0, seed=0))
    assert len(parts) == 4
    assert sum(len(p) for p in parts) == 300
    assert np.allclose(np.sort(np.concatenate(parts), axis=0), np.sort(X, axis=0))
    iid = partition_data(X, None, IidPartitioner(num_partitions=3, seed=0))
    assert [p.shape for p in iid] == [(100, 4)] * 3
    with pytest.raises(ValueError, match="rows"):
        partition_data(X, y[:-1], IidPartitioner(num_partitions=3))
    with pytest.raises(TypeError, match="Partitioner"):
        partition_data(X, y, "iid")  # type: ignore[arg-type]

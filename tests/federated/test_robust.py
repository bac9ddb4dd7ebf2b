"""Robust server steps: every hostile row of issue 11's table is flagged, honest clients kept, results bounded."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import pytest
from flwr.app import RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto

from fedgmm.attacks import (
    Attack,
    ForgedMoments,
    ForgedStatistics,
    InflatedCount,
    ScaledCovariances,
    ScaledMeans,
    ScaledStatistics,
    ShiftedComponents,
)
from fedgmm.datasets.partition import DirichletPartitioner, partition_data
from fedgmm.datasets.synthetic import load_blobs
from fedgmm.em.mstep import m_step
from fedgmm.em.stats import SufficientStatistics
from fedgmm.federated.client import (
    EM_STATISTICS,
    FIT_LOCAL,
    MOMENTS,
    handle_request,
    local_fit_config,
)
from fedgmm.federated.local import LocalFitSettings
from fedgmm.federated.messages import (
    decode_local_model,
    decode_moments,
    decode_statistics,
    encode_request,
    state_arrays,
)
from fedgmm.federated.robust import (
    DEFAULT_MAX_COUNT_RATIO,
    MAX_SYNTHETIC_ROWS,
    RobustSettings,
    bounded_synthetic_size,
    cap_counts,
    check_mixtures,
    check_statistics,
    combine_moments,
    combine_statistics,
    distance_filter,
    expected_complete_loglik,
    merge_decisions,
    screen_local_models,
)
from fedgmm.federated.robust.records import ClientDecision, median_of_others
from fedgmm.federated.union import union_mixture
from fedgmm.mixture import MixtureState

REG = 0.05
R = DEFAULT_MAX_COUNT_RATIO


def largest_share(others: np.ndarray) -> float:
    """The most weight one client can get next to ``others`` (counted at most R × their median)."""
    return float(R * np.median(others) / (others.sum() + R * np.median(others)))
LOCAL = LocalFitSettings(k_min=6, k_max=6, reg_covar=REG)


def wire(content: RecordDict) -> RecordDict:
    return recorddict_from_proto(recorddict_to_proto(content))


@lru_cache(maxsize=8)
def federation(alpha: float, n_clients: int, seed: int, d: int = 4) -> tuple[np.ndarray, ...]:
    """Standardised 10-blob data split by a Dirichlet(α) partition."""
    ds = load_blobs(n_samples=300 * n_clients, n_features=d, n_classes=10, seed=seed)
    X = (ds.X - ds.X.mean(axis=0)) / ds.X.std(axis=0)
    part = DirichletPartitioner(num_partitions=n_clients, alpha=alpha, seed=seed, min_partition_size=10, max_attempts=100)
    return tuple(partition_data(X, ds.y, part))


def serve(client: np.ndarray | Attack, kind: str, request: RecordDict, client_id: int) -> RecordDict:
    """Answer as the in-process transport does: honest reply on ``.data``, then the tamper hook, then the wire."""
    data = client.data if isinstance(client, Attack) else client
    reply = handle_request(request, data, client_id)
    if isinstance(client, Attack):
        reply = client.tamper(kind, reply)
    return wire(reply)


def upload(clients: list) -> tuple[list[MixtureState], list[int]]:  # type: ignore[type-arg]
    request = encode_request(FIT_LOCAL, local_fit_config(LOCAL, seed=0))
    replies = [decode_local_model(serve(c, FIT_LOCAL, request, i), covariance_type="full") for i, c in enumerate(clients)]
    return [r.state for r in replies], [r.n_samples for r in replies]  # type: ignore[misc]


@lru_cache(maxsize=8)
def honest_upload(alpha: float, n_clients: int, seed: int) -> tuple[tuple[MixtureState, ...], tuple[int, ...]]:
    states, counts = upload(list(federation(alpha, n_clients, seed)))
    return tuple(states), tuple(counts)


def with_attacker(
    alpha: float, attack: Attack, position: int = 3, n_clients: int = 12, seed: int = 0
) -> tuple[list[MixtureState], list[int]]:
    """Honest uploads with client ``position``'s replaced by its attacked upload."""
    honest_states, honest_counts = honest_upload(alpha, n_clients, seed)
    states, counts = list(honest_states), list(honest_counts)
    forged_states, forged_counts = upload([attack])
    states[position], counts[position] = forged_states[0], forged_counts[0]
    return states, counts


def rejected(result) -> set[int]:  # type: ignore[no-untyped-def]
    return {d.client_id for d in result.decisions if d.action == "rejected"}


# ---------------------------------------------------------------------------- records
def test_median_of_others_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4, 7, 10):
        values = rng.integers(0, 5, size=n).astype(float)  # ties included
        expected = [np.median(np.delete(values, i)) if n > 1 else values[0] for i in range(n)]
        np.testing.assert_array_equal(median_of_others(values), expected)


def test_merge_decisions_keeps_the_most_severe_action() -> None:
    merged = merge_decisions([1, 2], [ClientDecision(1, "capped", "a")], [ClientDecision(1, "rejected", "b")])
    assert merged == (ClientDecision(1, "rejected", "a; b"), ClientDecision(2, "kept", ""))


# ---------------------------------------------------------------------------- honest heterogeneity
@pytest.mark.parametrize(("alpha", "seed"), [(0.1, 0), (0.1, 1), (1.0, 0)])
def test_honest_clients_are_all_kept(alpha: float, seed: int) -> None:
    states, counts = honest_upload(alpha, 20, seed)
    screened = screen_local_models(states, counts, reg_covar=REG)
    assert [d.action for d in screened.decisions] == ["kept"] * 20
    assert screened.kept == tuple(range(20))
    np.testing.assert_array_equal(screened.counts, counts)


def test_nothing_flagged_gives_the_plain_union_exactly() -> None:
    states, counts = honest_upload(0.1, 20, 0)
    screened = screen_local_models(states, counts, reg_covar=REG)
    plain = union_mixture(list(states), list(counts))
    robust = union_mixture([states[i] for i in screened.kept], list(screened.counts))
    np.testing.assert_array_equal(robust.weights, plain.weights)
    np.testing.assert_array_equal(robust.covariances, plain.covariances)


# ---------------------------------------------------------------------------- table: local models
@pytest.mark.parametrize(
    "make", [lambda X: ScaledMeans(X, 1e15), lambda X: ScaledMeans(X, 1e200), lambda X: ScaledCovariances(X, 1e300)],
    ids=["means-1e15", "means-1e200", "cov-1e300"],
)
@pytest.mark.parametrize("alpha", [0.1, 1.0])
def test_implausible_local_models_are_rejected_and_the_union_is_finite(make, alpha: float) -> None:  # type: ignore[no-untyped-def]
    X = federation(alpha, 12, 0)[3]
    states, counts = with_attacker(alpha, make(X))
    screened = screen_local_models(states, counts, reg_covar=REG)
    assert rejected(screened) == {3}
    union = union_mixture([states[i] for i in screened.kept], list(screened.counts))
    assert np.all(np.isfinite(union.means)) and np.abs(union.means).max() < 100
    sample, _ = union.sample(2000, np.random.default_rng(0))
    assert np.all(np.isfinite(sample))


@pytest.mark.parametrize("reg_covar", [REG, 0.0])
def test_vanishing_covariance_is_rejected(reg_covar: float) -> None:
    X = federation(1.0, 12, 0)[3]
    states, _ = with_attacker(1.0, ScaledCovariances(X, 1e-300))
    plaus = check_mixtures(states, reg_covar=reg_covar)
    assert rejected(plaus) == {3}
    reason = plaus.decisions[3].reason
    assert ("reg_covar" in reason) if reg_covar else ("eigenvalues" in reason)


@pytest.mark.parametrize("claimed", [300, 3_000, 100_000])
def test_shifted_components_are_filtered_whatever_they_claim(claimed: int) -> None:
    X = federation(1.0, 12, 0)[3]
    states, counts = with_attacker(1.0, InflatedCount(ShiftedComponents(X, 50.0), claimed / len(X)))
    screened = screen_local_models(states, counts, reg_covar=REG)
    assert rejected(screened) == {3}
    assert "nearest half" in screened.decisions[3].reason


@pytest.mark.parametrize("claimed", [3_000, 100_000])
def test_without_the_filter_a_shifted_clients_weight_is_still_bounded(claimed: int) -> None:
    X = federation(1.0, 12, 0)[3]
    states, counts = with_attacker(1.0, InflatedCount(ShiftedComponents(X, 50.0), claimed / len(X)))
    screened = screen_local_models(states, counts, reg_covar=REG, distance_filtering=False)
    share = screened.counts[3] / screened.counts.sum()
    others = np.delete(np.asarray(counts, dtype=float), 3)
    assert share <= largest_share(others) + 1e-12
    assert screened.decisions[3].action == "capped"


def test_two_shifted_and_inflated_clients_are_both_filtered() -> None:
    parts = federation(1.0, 20, 0)
    honest_states, honest_counts = honest_upload(1.0, 20, 0)
    states, counts = list(honest_states), list(honest_counts)
    for i in (4, 11):
        (states[i],), (counts[i],) = upload([InflatedCount(ShiftedComponents(parts[i], 50.0), 100)])
    screened = screen_local_models(states, counts, reg_covar=REG)
    assert rejected(screened) == {4, 11}


@pytest.mark.parametrize("claimed", [1e7, 1e8, 1e12])
def test_claimed_counts_never_size_the_synthetic_set(claimed: float) -> None:
    X = federation(1.0, 12, 0)[3]
    states, counts = with_attacker(1.0, InflatedCount(X, claimed / len(X)))
    screened = screen_local_models(states, counts, reg_covar=REG)
    assert screened.decisions[3].action == "capped" and 3 in screened.kept
    honest = np.delete(np.asarray(counts, dtype=float), 3)
    assert screened.total <= honest.sum() + R * np.median(honest) + 1e-6
    size = bounded_synthetic_size(5.0, screened.total, n_features=4, n_components=10)
    assert size.rows <= 5 * (honest.sum() + R * np.median(honest)) + 1
    assert size.rows <= MAX_SYNTHETIC_ROWS


def test_synthetic_size_has_an_absolute_ceiling() -> None:
    assert bounded_synthetic_size(5.0, 1000, n_features=4).rows == 5000
    assert bounded_synthetic_size(7000, 1e12, n_features=4).rows == 7000
    big = bounded_synthetic_size(5.0, 1e12, n_features=4, max_rows=10_000)
    assert big.rows == 10_000 and big.requested == 5 * 10**12 and "bounded" in big.reason
    assert bounded_synthetic_size(5.0, 1e12, n_features=1000, n_components=24, max_elements=1_024_000).rows == 1000
    with pytest.raises(ValueError, match="synthetic_size"):
        bounded_synthetic_size(0.0, 10, n_features=2)


# ---------------------------------------------------------------------------- counts
def test_uncapped_counts_are_the_claims() -> None:
    caps = cap_counts([100, 120, 90, 180])
    assert all(d.action == "kept" for d in caps.decisions)
    np.testing.assert_array_equal(caps.counts, [100, 120, 90, 180])
    np.testing.assert_array_equal(caps.factors, 1.0)


def test_count_cap_is_relative_to_the_others_median() -> None:
    caps = cap_counts([100, 120, 90, 10**12], max_client_weight=None)  # alike clients: the tightest cap, 2x
    assert caps.counts[3] == 2 * 100 and caps.decisions[3].action == "capped"
    assert caps.total == 100 + 120 + 90 + 200
    fixed = cap_counts([100, 120, 90, 10**12], max_client_weight=None, min_ratio=5.0)
    assert fixed.counts[3] == 5 * 100


def test_count_cap_adapts_to_honest_quantity_skew() -> None:
    skewed = [30, 60, 120, 250, 500, 1000, 1500]
    assert all(d.action == "kept" for d in cap_counts(skewed, max_client_weight=None).decisions)
    alike = cap_counts([100, 110, 120, 130, 1000], max_client_weight=None)
    assert alike.counts[4] == 2 * 115 and alike.decisions[4].action == "capped"
    assert cap_counts([*skewed, 10**9], max_client_weight=None).counts[-1] <= R * 250


def test_weight_share_cap_redistributes_the_excess() -> None:
    caps = cap_counts([10, 10, 100], max_ratio=None, max_client_weight=0.5)
    np.testing.assert_allclose(caps.weights, [0.25, 0.25, 0.5])
    assert np.all(caps.counts <= [10, 10, 100]) and caps.counts[0] == 10
    few = cap_counts([1, 1000], max_client_weight=0.3)  # 2 clients cannot both stay below 0.3
    np.testing.assert_allclose(few.weights, [0.5, 0.5])


# ---------------------------------------------------------------------------- DFMR specifics
def random_mixture(rng: np.random.Generator, center: np.ndarray, k: int = 3) -> MixtureState:
    d = center.shape[0]
    a = rng.normal(size=(k, d, d)) / np.sqrt(d)
    covs = 0.3 * (a @ a.transpose(0, 2, 1)) + 0.2 * np.eye(d)
    return MixtureState.from_covariances(rng.dirichlet(np.ones(k)), center + rng.normal(size=(k, d)), covs, "full")


def test_distance_filter_on_a_large_federation_uses_references() -> None:
    rng = np.random.default_rng(1)
    centers = rng.normal(scale=3.0, size=(5, 3))
    states = [random_mixture(rng, centers[i % 5]) for i in range(120)]
    for i in (7, 50, 99):
        states[i] = random_mixture(rng, np.full(3, 60.0))
    result = distance_filter(states)
    assert rejected(result) == {7, 50, 99}


def test_distance_filter_never_rejects_a_majority() -> None:
    rng = np.random.default_rng(2)
    states = [random_mixture(rng, np.zeros(3)) for _ in range(2)] + [random_mixture(rng, np.full(3, 40.0 * i)) for i in range(1, 4)]
    assert len(rejected(distance_filter(states))) <= 2
    assert rejected(distance_filter(states[:2])) == set()


# ---------------------------------------------------------------------------- federated EM statistics
def em_round(clients: list[Any], state: MixtureState) -> tuple[list[SufficientStatistics], dict[str, Any]]:
    shift = np.asarray(state.weights @ state.means)
    request = encode_request(EM_STATISTICS, {"covariance-type": state.covariance_type}, {**state_arrays(state), "shift": shift})
    kwargs: dict[str, Any] = {"covariance_type": state.covariance_type, "n_components": state.n_components, "n_features": state.n_features, "shift": shift}
    out = [decode_statistics(serve(c, EM_STATISTICS, request, i), **kwargs).stats for i, c in enumerate(clients)]
    assert all(s is not None for s in out)
    return [s for s in out if s is not None], {"shift": shift}


@lru_cache(maxsize=4)
def broadcast_state(alpha: float, covariance_type: str = "full") -> MixtureState:
    X = np.vstack(federation(alpha, 12, 0))
    from fedgmm.gaussian_mixture import GaussianMixture

    gm = GaussianMixture(5, covariance_type=covariance_type, max_iter=5, tol=1e9, random_state=0, reg_covar=1e-3)  # type: ignore[arg-type]
    gm.fit(X)
    return gm.state_


def plain_sum(stats: list[SufficientStatistics]) -> SufficientStatistics:
    first = stats[0]
    return sum(stats, SufficientStatistics.zeros(first.n_components, first.n_features, first.covariance_type, first.shift))


def assert_same(a: SufficientStatistics, b: SufficientStatistics) -> None:
    for key in ("nk", "sx", "sxx"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert a.log_likelihood == b.log_likelihood and a.n_samples == b.n_samples


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("alpha", [0.1, 1.0])
def test_honest_statistics_give_exactly_the_plain_sum(alpha: float, covariance_type: str) -> None:
    state = broadcast_state(alpha, covariance_type)
    stats, _ = em_round(list(federation(alpha, 12, 0)), state)
    combined = combine_statistics(stats, state=state)
    assert not combined.flagged, combined.decisions
    assert combined.total is not None
    assert_same(combined.total, plain_sum(stats))


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_honest_log_likelihood_lies_between_q_and_q_plus_n_log_k(covariance_type: str) -> None:
    state = broadcast_state(1.0, covariance_type)
    for s in em_round(list(federation(1.0, 12, 0)), state)[0]:
        q, _ = expected_complete_loglik(s, state)
        assert q <= s.log_likelihood + 1e-6 * abs(q) <= q + s.n_samples * math.log(state.n_components) + 2e-6 * abs(q)


@pytest.mark.parametrize(
    "make",
    [
        lambda X: ForgedStatistics(X, "sxx-offdiag", 1e6),
        lambda X: ForgedStatistics(X, "sx", 1e200),
        lambda X: ForgedStatistics(X, "log-likelihood", 1e308),
        lambda X: ScaledMeans(X, 1e15),
        lambda X: ScaledCovariances(X, 1e300),
        lambda X: ShiftedComponents(X, 50.0),
    ],
    ids=["sxx-offdiag", "sx-1e200", "loglik-1e308", "means-1e15", "cov-1e300", "shift-50"],
)
@pytest.mark.parametrize("alpha", [0.1, 1.0])
def test_forged_statistics_are_rejected_and_the_rest_summed_exactly(make, alpha: float) -> None:  # type: ignore[no-untyped-def]
    state = broadcast_state(alpha)
    parts = federation(alpha, 12, 0)
    clients: list[Any] = list(parts)
    clients[3] = make(parts[3])
    stats, _ = em_round(clients, state)
    combined = combine_statistics(stats, state=state)
    assert rejected(combined) == {3}
    honest = [s for i, s in enumerate(stats) if i != 3]
    assert combined.total is not None
    assert_same(combined.total, plain_sum(honest))
    new = m_step(combined.total, 1e-3)
    assert np.all(np.isfinite(new.covariances))


def test_alternating_log_likelihood_is_rejected_every_round() -> None:
    state = broadcast_state(1.0)
    parts = federation(1.0, 12, 0)
    clients: list[Any] = list(parts)
    clients[5] = ForgedStatistics(parts[5], "alternating", 1e6)
    for _ in range(3):
        stats, _ = em_round(clients, state)
        combined = combine_statistics(stats, state=state)
        assert rejected(combined) == {5}
        assert combined.total is not None and abs(combined.total.log_likelihood / combined.total.n_samples) < 50


@pytest.mark.parametrize("factor", [1e6, 1e12])
def test_scaled_statistics_get_a_bounded_weight(factor: float) -> None:
    state = broadcast_state(1.0)
    parts = federation(1.0, 12, 0)
    clients: list[Any] = list(parts)
    clients[2] = ScaledStatistics(parts[2], factor)
    stats, _ = em_round(clients, state)
    combined = combine_statistics(stats, state=state)
    assert combined.decisions[2].action == "capped" and 2 in combined.kept
    assert combined.total is not None
    others = np.array([s.n_samples for i, s in enumerate(stats) if i != 2], dtype=float)
    share = (combined.total.nk.sum() - others.sum()) / combined.total.nk.sum()
    assert share <= largest_share(others) + 1e-9
    honest, _ = em_round(list(parts), state)
    np.testing.assert_allclose(m_step(combined.total, 1e-3).means, m_step(plain_sum(honest), 1e-3).means, atol=0.5)


def test_statistics_checks_without_the_broadcast_state_still_catch_impossible_moments() -> None:
    state = broadcast_state(1.0)
    parts = federation(1.0, 12, 0)
    clients: list[Any] = list(parts)
    clients[1] = ForgedStatistics(parts[1], "sxx-offdiag", 1e6)
    clients[4] = ForgedStatistics(parts[4], "sx", 1e200)
    stats, _ = em_round(clients, state)
    assert rejected(check_statistics(stats)) == {1, 4}


def test_component_share_cap_is_opt_in_and_down_weights() -> None:
    state = broadcast_state(0.1)
    stats, _ = em_round(list(federation(0.1, 12, 0)), state)
    combined = combine_statistics(stats, state=state, max_component_share=0.3)
    assert any(d.action == "down-weighted" for d in combined.decisions)
    assert combined.total is not None
    shares = np.array([s.nk for s in stats]) / combined.total.nk
    assert np.all(np.isfinite(m_step(combined.total, 1e-3).covariances)) and shares.shape == (12, 5)


# ---------------------------------------------------------------------------- preprocessing moments
def moments_round(clients: list) -> list:  # type: ignore[type-arg]
    request = encode_request(MOMENTS, {})
    return [decode_moments(serve(c, MOMENTS, request, i)) for i, c in enumerate(clients)]


def combine(replies: list):  # type: ignore[no-untyped-def,type-arg]
    return combine_moments([r.count for r in replies], [r.total for r in replies], [r.outer for r in replies])


@pytest.mark.parametrize("alpha", [0.1, 1.0])
def test_forged_moment_count_is_rejected(alpha: float) -> None:
    parts = [p * 3.0 + 10.0 for p in federation(alpha, 12, 0)]  # raw, unstandardised coordinates
    clients: list[Any] = list(parts)
    clients[6] = ForgedMoments(parts[6], 1e12)
    result = combine(moments_round(clients))
    assert rejected(result) == {6}
    honest = np.vstack([p for i, p in enumerate(parts) if i != 6])
    assert result.total is not None
    np.testing.assert_allclose(result.total / result.count, honest.mean(axis=0))


@pytest.mark.parametrize("alpha", [0.1, 1.0])
def test_honest_moments_give_the_plain_sums(alpha: float) -> None:
    replies = moments_round(list(federation(alpha, 12, 0)))
    result = combine(replies)
    assert all(d.action == "kept" for d in result.decisions)
    np.testing.assert_array_equal(result.total, np.sum([r.total for r in replies], axis=0))
    np.testing.assert_array_equal(result.outer, np.sum([r.outer for r in replies], axis=0))
    assert result.count == sum(r.count for r in replies)


@pytest.mark.parametrize(
    ("make", "action"),
    [
        (lambda X: InflatedCount(X, 1e4), "capped"),
        (lambda X: ScaledMeans(X, 1e15), "rejected"),
        (lambda X: ScaledCovariances(X, 1e300), "rejected"),
    ],
)
def test_moment_attacks_are_capped_or_rejected(make, action: str) -> None:  # type: ignore[no-untyped-def]
    parts = federation(1.0, 12, 0)
    clients: list[Any] = list(parts)
    clients[2] = make(parts[2])
    result = combine(moments_round(clients))
    assert result.decisions[2].action == action
    assert [d.action for i, d in enumerate(result.decisions) if i != 2] == ["kept"] * 11
    assert result.total is not None
    honest = np.vstack(parts)
    assert np.abs(result.total / result.count - honest.mean(axis=0)).max() < 0.5


def test_robust_settings_validate() -> None:
    assert RobustSettings().enabled and RobustSettings().max_client_weight == 0.5
    for bad in ({"max_client_weight": 0.0}, {"max_count_ratio": 0.5}, {"max_component_share": 2.0}, {"max_synthetic_rows": 0}):
        with pytest.raises(ValueError, match="must be"):
            RobustSettings(**bad)  # type: ignore[arg-type]


def _spread_client(rng: np.random.Generator, far: float | None = None) -> MixtureState:
    """Three unit-covariance components near the origin in 2-D; with ``far``, a fourth (weight 0.01) at ``far``."""
    means = rng.normal(size=(3, 2))
    weights = np.full(3, 1 / 3)
    if far is not None:
        means = np.vstack([means, [far, 0.0]])
        weights = np.r_[weights * 0.99, 0.01]
    return MixtureState.from_covariances(weights, means, np.broadcast_to(np.eye(2), (len(weights), 2, 2)).copy(), "full")


def test_an_honest_far_component_passes_the_location_check_a_gross_one_does_not() -> None:
    # Issue 9: detailed local models put components on single rows, and honest non-IID
    # clients of the Fashion-MNIST regime sat 124–190 robust scales out (rejected at 100).
    rng = np.random.default_rng(0)
    honest = [_spread_client(rng) for _ in range(6)]
    for far, kept in ((300.0, True), (1e4, False)):
        states = [*honest, _spread_client(np.random.default_rng(1), far)]
        plaus = check_mixtures(states)
        assert (6 in plaus.kept) is kept, far
        if not kept:
            assert "robust scales" in plaus.decisions[6].reason
    strict = check_mixtures([*honest, _spread_client(np.random.default_rng(1), 300.0)], location_threshold=100.0)
    assert 6 not in strict.kept  # the old threshold stays available

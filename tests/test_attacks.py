"""The attack kit: every forgery reaches the server's decoder as a valid-looking payload, and attacks compose."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto

from fedgmm.attacks import (
    ATTACKS,
    ForgedMoments,
    ForgedStatistics,
    InflatedCount,
    ScaledCovariances,
    ScaledMeans,
    ScaledStatistics,
    ShiftedComponents,
    innermost_data,
    parse_attack,
)
from fedgmm.em.stats import SufficientStatistics
from fedgmm.federated.client import (
    DOWNLOAD,
    EM_STATISTICS,
    FIT_LOCAL,
    MOMENTS,
    handle_request,
    local_fit_config,
)
from fedgmm.federated.local import LocalFitSettings
from fedgmm.federated.messages import (
    MAX_CLIENT_SAMPLES,
    decode_local_model,
    decode_moments,
    decode_statistics,
    encode_ack,
    encode_request,
    state_arrays,
)
from fedgmm.mixture import MixtureState


def wire(content: RecordDict) -> RecordDict:
    """What the server receives: the record serialised and parsed as Flower's protobuf."""
    return recorddict_from_proto(recorddict_to_proto(content))


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.vstack([rng.normal(size=(150, 3)), rng.normal(loc=4.0, size=(150, 3))])


def local_reply(X: np.ndarray, covariance_type: str = "full") -> RecordDict:
    settings = LocalFitSettings(covariance_type=covariance_type, k_min=2, k_max=2)  # type: ignore[arg-type]
    return handle_request(encode_request(FIT_LOCAL, local_fit_config(settings, seed=0)), X, 7)


def decode_model(content: RecordDict, covariance_type: str = "full"):  # type: ignore[no-untyped-def]
    return decode_local_model(wire(content), covariance_type=covariance_type, n_features=3)


def stats_request(state: MixtureState) -> tuple[RecordDict, dict]:
    shift = np.asarray(state.weights @ state.means)
    request = encode_request(EM_STATISTICS, {"covariance-type": state.covariance_type}, {**state_arrays(state), "shift": shift})
    kwargs = {"covariance_type": state.covariance_type, "n_components": state.n_components, "n_features": 3, "shift": shift}
    return request, kwargs


@pytest.fixture(scope="module", params=["full", "tied", "diag", "spherical"])
def stats_case(request, data):  # type: ignore[no-untyped-def]
    ctype = request.param
    state = decode_model(local_reply(data, ctype), ctype).state
    req, kwargs = stats_request(state)
    reply = handle_request(req, data, 7)
    honest = read_stats(reply, **kwargs)
    return reply, kwargs, honest


def read_stats(content: RecordDict, **kwargs: Any) -> SufficientStatistics:
    stats = decode_statistics(wire(content), **kwargs).stats
    assert stats is not None
    return stats


def read_moments(content: RecordDict) -> tuple[int, np.ndarray, np.ndarray]:
    reply = decode_moments(wire(content))
    assert reply.total is not None and reply.outer is not None
    return reply.count, reply.total, reply.outer


def implied(stats):  # type: ignore[no-untyped-def]
    return stats.shift + stats.sx / stats.nk[:, None]


# ---------------------------------------------------------------------------- local-model uploads
def test_inflated_count_claims_factor_rows_with_the_honest_model(data: np.ndarray) -> None:
    reply = local_reply(data)
    honest, forged = decode_model(reply), decode_model(InflatedCount(data, 1e4).tamper(FIT_LOCAL, reply))
    assert forged.n_samples == 300 * 10_000
    np.testing.assert_array_equal(forged.state.means, honest.state.means)


def test_inflated_count_is_clipped_to_the_decoders_cap(data: np.ndarray) -> None:
    forged = decode_model(InflatedCount(data, 1e12).tamper(FIT_LOCAL, local_reply(data)))
    assert forged.n_samples == MAX_CLIENT_SAMPLES


@pytest.mark.parametrize("scale", [1e15, 1e200])
def test_scaled_means_pass_the_wire_checks(data: np.ndarray, scale: float) -> None:
    reply = local_reply(data)
    forged = decode_model(ScaledMeans(data, scale).tamper(FIT_LOCAL, reply))
    np.testing.assert_allclose(forged.state.means, decode_model(reply).state.means * scale)


@pytest.mark.parametrize("scale", [1e300, 1e-300])
@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
def test_scaled_covariances_pass_the_wire_checks(data: np.ndarray, scale: float, ctype: str) -> None:
    reply = local_reply(data, ctype)
    forged = decode_model(ScaledCovariances(data, scale).tamper(FIT_LOCAL, reply), ctype)
    np.testing.assert_allclose(forged.state.covariances, decode_model(reply, ctype).state.covariances * scale)


def test_composition_applies_the_inner_attack_first(data: np.ndarray) -> None:
    attack = InflatedCount(ShiftedComponents(data, 50.0), 100)
    assert attack.data is data and innermost_data(attack) is data
    reply = local_reply(data)
    honest, forged = decode_model(reply), decode_model(attack.tamper(FIT_LOCAL, reply))
    np.testing.assert_allclose(forged.state.means, honest.state.means + 50.0)
    np.testing.assert_array_equal(forged.state.covariances, honest.state.covariances)
    assert forged.n_samples == 300 * 100
    assert attack.spec == "shifted-components:50.0+inflated-count:100"


def test_excluded_replies_and_downloads_pass_unchanged(data: np.ndarray) -> None:
    excluded = local_reply(data[:1])  # one row cannot support a mixture: the client excludes itself
    assert decode_model(excluded).status == "excluded"
    assert InflatedCount(data, 100).tamper(FIT_LOCAL, excluded) is excluded
    ack = encode_ack(7)
    assert ScaledMeans(data, 1e15).tamper(DOWNLOAD, ack) is ack


# ---------------------------------------------------------------------------- statistics replies
def test_statistics_forgeries_keep_the_decoders_invariants(stats_case) -> None:  # type: ignore[no-untyped-def]
    reply, kwargs, honest = stats_case
    inflated = read_stats(InflatedCount(np.zeros((1, 3)), 1e6).tamper(EM_STATISTICS, reply), **kwargs)
    assert inflated.n_samples == honest.n_samples * 10**6
    np.testing.assert_allclose(inflated.nk, honest.nk * 1e6)
    np.testing.assert_allclose(inflated.log_likelihood, honest.log_likelihood * 1e6)
    np.testing.assert_allclose(implied(inflated), implied(honest))
    scaled = read_stats(ScaledStatistics(np.zeros((1, 3)), 1e6).tamper(EM_STATISTICS, reply), **kwargs)
    np.testing.assert_allclose(scaled.sxx, honest.sxx * 1e6)


def test_shifted_and_scaled_means_in_statistics_keep_covariances(stats_case) -> None:  # type: ignore[no-untyped-def]
    from fedgmm.em.mstep import m_step

    reply, kwargs, honest = stats_case
    X = np.zeros((1, 3))
    shifted = read_stats(ShiftedComponents(X, 5.0).tamper(EM_STATISTICS, reply), **kwargs)
    np.testing.assert_allclose(implied(shifted), implied(honest) + 5.0)
    np.testing.assert_allclose(m_step(shifted, 1e-6).covariances, m_step(honest, 1e-6).covariances, rtol=1e-6, atol=1e-9)
    scaled = read_stats(ScaledMeans(X, 10.0).tamper(EM_STATISTICS, reply), **kwargs)
    np.testing.assert_allclose(implied(scaled), implied(honest) * 10.0, rtol=1e-9)
    wide = read_stats(ScaledCovariances(X, 4.0).tamper(EM_STATISTICS, reply), **kwargs)
    np.testing.assert_allclose(implied(wide), implied(honest))
    np.testing.assert_allclose(m_step(wide, 0.0).covariances, 4.0 * m_step(honest, 0.0).covariances, rtol=1e-6)


@pytest.mark.parametrize(("target", "value"), [("sxx-offdiag", 1e6), ("sx", 1e200), ("log-likelihood", 1e308)])
def test_forged_statistics_reach_the_server(stats_case, target: str, value: float) -> None:  # type: ignore[no-untyped-def]
    reply, kwargs, honest = stats_case
    forged = read_stats(ForgedStatistics(np.zeros((1, 3)), target, value).tamper(EM_STATISTICS, reply), **kwargs)
    if target == "sxx-offdiag" and honest.covariance_type in ("diag", "spherical"):
        # These statistics hold no off-diagonal entries: the forgery leaves them as they were.
        np.testing.assert_array_equal(forged.sxx, honest.sxx)
    elif target == "sxx-offdiag":
        off = forged.sxx - honest.sxx
        assert np.allclose(np.diagonal(off, axis1=-2, axis2=-1), 0.0) and np.isclose(off.max(), value)
    elif target == "sx":
        assert np.all(forged.sx == value)
    else:
        assert forged.log_likelihood == value


def test_alternating_log_likelihood_changes_sign_every_round(stats_case) -> None:  # type: ignore[no-untyped-def]
    reply, kwargs, _ = stats_case
    attack = ForgedStatistics(np.zeros((1, 3)), "alternating", 1e6)
    lls = [read_stats(attack.tamper(EM_STATISTICS, reply), **kwargs).log_likelihood for _ in range(4)]
    assert lls == [1e6, -1e6, 1e6, -1e6]


# ---------------------------------------------------------------------------- moments replies
def moments_reply(X: np.ndarray) -> RecordDict:
    return handle_request(encode_request(MOMENTS, {}), X, 7)


def test_forged_moments_collapse_the_mean(data: np.ndarray) -> None:
    count, total, _ = read_moments(ForgedMoments(data, 1e12).tamper(MOMENTS, moments_reply(data)))
    assert count == 10**12
    np.testing.assert_allclose(total, data.sum(axis=0))


def test_moment_attacks_are_consistent(data: np.ndarray) -> None:
    reply = moments_reply(data)
    count, total, _ = read_moments(InflatedCount(data, 1e3).tamper(MOMENTS, reply))
    assert count == 300_000
    np.testing.assert_allclose(total / count, data.mean(axis=0))
    count, total, outer = read_moments(ShiftedComponents(data, 50.0).tamper(MOMENTS, reply))
    np.testing.assert_allclose(total / count, data.mean(axis=0) + 50.0)
    centred = outer / count - np.outer(total, total) / count**2
    np.testing.assert_allclose(centred, np.cov(data.T, bias=True), atol=1e-8)


def test_statistics_only_attacks_leave_other_replies_alone(data: np.ndarray) -> None:
    reply = local_reply(data)
    assert ScaledStatistics(data, 1e6).tamper(FIT_LOCAL, reply) is reply
    assert ForgedStatistics(data).tamper(FIT_LOCAL, reply) is reply
    assert ForgedMoments(data).tamper(FIT_LOCAL, reply) is reply


# ---------------------------------------------------------------------------- parse_attack
def test_parse_attack_builds_the_same_stack(data: np.ndarray) -> None:
    attack = parse_attack("shifted-components:50+inflated-count:100")(data)
    assert isinstance(attack, InflatedCount) and isinstance(attack.inner, ShiftedComponents)
    assert attack.factor == 100.0 and attack.inner.shift == 50.0 and attack.data is data
    assert parse_attack(attack.spec)(data).spec == attack.spec
    forged = parse_attack("forged-statistics:log-likelihood:1e308")(data)
    assert forged.target == "log-likelihood" and forged.value == 1e308
    assert parse_attack("forged-moments:count=1e12")(data).count == 1e12


@pytest.mark.parametrize("spec", ["", "none", "honest"])
def test_parse_attack_none_returns_the_data(data: np.ndarray, spec: str) -> None:
    assert parse_attack(spec)(data) is data
    assert not parse_attack(spec)


@pytest.mark.parametrize("spec", ["inflated", "inflated-count:1:2:3", "forged-statistics:nonsense", "scaled-means:scale=1:2"])
def test_parse_attack_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError, match=r"attack|argument|target"):
        parse_attack(spec)


def test_every_attack_has_a_parseable_name() -> None:
    assert set(ATTACKS) == {
        "inflated-count", "shifted-components", "scaled-means", "scaled-covariances", "scaled-statistics",
        "forged-statistics", "forged-moments",
    }

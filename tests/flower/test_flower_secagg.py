"""Secure aggregation of federated EM through Flower's SecAgg+: the sum, its quantisation error, dropouts, real processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flower_testing import FakeGrid, partition_nodes
from flwr.app import Context, Message

from fedgmm.em.stats import SufficientStatistics, e_step, score_samples
from fedgmm.federated.client import EM_STATISTICS
from fedgmm.federated.fedem import reference_point, run_federated_em
from fedgmm.federated.messages import decode_statistics, encode_request, state_arrays
from fedgmm.flower.secure import (
    AGGREGATE_CLIENT_ID,
    MODULUS,
    SecureFlowerTransport,
    SecureSettings,
    block_scales,
    decode_limbs,
    encode_limbs,
    error_bounds,
    loglik_range,
    quantization_range,
    statistics_from_vector,
    statistics_vector,
)
from fedgmm.flower.settings import DEFAULTS, DataSettings, RunSettings, SettingsError
from fedgmm.flower.task import client_partitions
from fedgmm.flower.transport import FlowerTransport
from fedgmm.mixture import MixtureState

#: Blobs rows lie within a norm of ~15; the bound must hold for every row.
ROW_BOUND = 30.0
MAX_SAMPLES = 1000


def mixture(rng: np.random.Generator, k: int = 3, d: int = 2) -> MixtureState:
    a = rng.normal(size=(k, d, d))
    return MixtureState.from_covariances(np.full(k, 1.0 / k), rng.normal(scale=3.0, size=(k, d)),
                                         a @ np.swapaxes(a, 1, 2) + np.eye(d), "full")  # fmt: skip


def clients(config: dict[str, Any], n: int = 3) -> list[np.ndarray]:
    return [np.asarray(c) for c in client_partitions(DataSettings.from_config(config), n)]


def test_the_sum_of_quantised_entries_never_wraps_the_modulus() -> None:
    for n in (1, 2, 3, 4, 7, 20, 1000):
        q = quantization_range(n)
        assert n * q < MODULUS and q <= 2**31 - 1  # Flower's stochastic rounding casts to int32
    with pytest.raises(ValueError, match="n_clients"):
        quantization_range(0)


def test_two_limbs_put_the_high_limb_exactly_on_flowers_grid_and_sum_below_the_bound() -> None:
    from flwr.common.secure_aggregation.quantization import dequantize, quantize

    rng = np.random.default_rng(4)
    n, q = 3, quantization_range(3)
    vectors = [np.concatenate([rng.uniform(-1, 1, 500), [-1.0, 1.0, 0.0]]) for _ in range(n)]
    encoded = [encode_limbs(v, q, 2) for v in vectors]
    for e in encoded:
        high = e[: e.size // 2]
        assert np.all(np.abs(e) <= 1.0)
        levels = (high + 1.0) * (q / 2)
        assert np.array_equal(levels, np.round(levels))  # on the grid: Flower's rounding is exact
        assert np.array_equal(quantize([high], 1.0, q)[0], levels.astype(np.int64))
    summed_q = sum(quantize([e], 1.0, q)[0].astype(np.int64) for e in encoded)
    assert summed_q.max() < MODULUS
    dequantised = dequantize([summed_q], 1.0, q)[0] - (n - 1)  # as the unmask stage does
    truth = np.sum(vectors, axis=0)
    two = np.abs(decode_limbs(dequantised, q, 2, n) - truth).max()
    one = np.abs(dequantize([sum(quantize([v], 1.0, q)[0].astype(np.int64) for v in vectors)], 1.0, q)[0] - (n - 1) - truth)
    assert two <= n * (2.0 / q**2 + 64 * np.finfo(float).eps)
    assert one.max() <= n * 2.0 / q and one.max() > 100 * two  # one limb: coarser, within its bound


def test_loglik_range_holds_for_rows_within_the_bound() -> None:
    rng = np.random.default_rng(0)
    state = mixture(rng)
    x = rng.normal(size=(4000, 2))
    x = x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(0, 5.0, size=(4000, 1))
    low, high = loglik_range(state, 5.0)
    scores = score_samples(x, state)
    assert low <= scores.min() and scores.max() <= high


def test_a_client_vector_unscales_exactly_and_out_of_bound_clients_refuse() -> None:
    rng = np.random.default_rng(1)
    state = mixture(rng)
    x = rng.normal(size=(50, 2))
    shift = reference_point(state)
    stats = e_step(x, state, shift=shift)
    settings = SecureSettings(row_bound=5.0, max_samples=100)
    scales = block_scales(state, shift, settings)
    offset = loglik_range(state, 5.0)[1]
    shape = (3, 2, "full")
    vector = statistics_vector(stats, scales, offset, shape)
    assert np.max(np.abs(vector)) <= 1.0
    back, rows = statistics_from_vector(vector, scales, offset, shift, shape)
    assert rows == pytest.approx(50) and back.n_samples == 50
    for name in ("nk", "sx", "sxx"):
        np.testing.assert_allclose(getattr(back, name), getattr(stats, name), rtol=1e-12, atol=1e-12)
    assert back.log_likelihood == pytest.approx(stats.log_likelihood, rel=1e-12)
    with pytest.raises(ValueError, match="secure-max-samples"):
        statistics_vector(stats, block_scales(state, shift, SecureSettings(5.0, 10)), offset, shape)
    far = e_step(x * 100, state, shift=shift)
    with pytest.raises(ValueError, match="secure-row-bound"):
        statistics_vector(far, scales, offset, shape)
    assert not statistics_vector(None, scales, offset, shape).any()  # an excluded client adds zeros


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize("limbs", [1, 2])
def test_secure_sum_over_the_client_app_equals_the_plain_sum_within_the_bound(blobs_config: dict[str, Any], limbs: int) -> None:
    rng = np.random.default_rng(2)
    state = MixtureState.from_covariances(np.full(4, 0.25), rng.normal(scale=5.0, size=(4, 2)), np.ones((4, 2)) * 4.0, "diag")
    shift = reference_point(state)
    request = encode_request(EM_STATISTICS, {"covariance-type": "diag"}, {**state_arrays(state), "shift": shift})
    grid = FakeGrid(partition_nodes(), blobs_config)
    transport = SecureFlowerTransport(grid, list(grid.contexts), timeout=5.0,
                                      secure=SecureSettings(ROW_BOUND, MAX_SAMPLES, limbs=limbs))  # fmt: skip
    replies = transport.exchange(EM_STATISTICS, request)
    assert len(replies) == 1 and replies[0].n_clients == 3 and replies[0].client_id is None
    got = decode_statistics(replies[0].content, covariance_type="diag", n_components=4, n_features=2, shift=shift)
    assert got.client_id == AGGREGATE_CLIENT_ID and got.stats is not None
    parts = [e_step(x, state, shift=shift) for x in clients(blobs_config)]
    plain = sum(parts, SufficientStatistics.zeros(4, 2, "diag", shift))
    bound = error_bounds(block_scales(state, shift, transport.secure), 3, quantization_range(3), limbs)
    assert got.stats.n_samples == plain.n_samples
    assert np.max(np.abs(got.stats.nk - plain.nk)) <= 6 * bound["nk"]  # K + 2 steps: floor and rescale to N
    assert np.max(np.abs(got.stats.sx - plain.sx)) <= bound["first_moment"]
    assert np.max(np.abs(got.stats.sxx - plain.sxx)) <= bound["second_moment"]
    assert abs(got.stats.log_likelihood - plain.log_likelihood) <= bound["log_likelihood"]
    assert not np.array_equal(got.stats.sx, plain.sx)  # it went through the quantiser
    record = transport.secure_rounds[0]
    assert record.contributors == [0, 1, 2] and record.failed == {} and record.messages == 4 and record.limbs == limbs
    assert record.quantization_range == quantization_range(3)
    plain_bytes = FlowerTransport(FakeGrid(partition_nodes(), blobs_config), list(grid.contexts), timeout=5.0)
    plain_bytes.exchange(EM_STATISTICS, request)
    assert transport.communication.bytes_up > plain_bytes.communication.bytes_up


@pytest.mark.usefixtures("task_identity")
def test_a_client_that_drops_out_is_recorded_and_the_sum_is_over_the_others(blobs_config: dict[str, Any]) -> None:
    def boom(message: Message, context: Context) -> Message:
        raise ValueError("boom from partition 1")

    nodes = partition_nodes(4)
    grid = FakeGrid(nodes, blobs_config)
    transport = SecureFlowerTransport(grid, list(grid.contexts), timeout=5.0, secure=SecureSettings(ROW_BOUND, MAX_SAMPLES))
    rng = np.random.default_rng(3)
    state = MixtureState.from_covariances(np.full(2, 0.5), rng.normal(size=(2, 2)), np.ones((2, 2)) * 9.0, "diag")
    shift = reference_point(state)
    request = encode_request(EM_STATISTICS, {"covariance-type": "diag"}, {**state_arrays(state), "shift": shift})
    transport.exchange(EM_STATISTICS, request)  # learns the client ids
    from fedgmm.flower import client_app

    real = client_app.app

    def fails_when_masking(message: Message, context: Context) -> Message:
        if "fitins.config" in message.content.config_records:  # the collect stage: its statistics are needed
            raise ValueError("boom from partition 1")
        return real(message, context)

    grid.faults[8000] = fails_when_masking
    replies = transport.exchange(EM_STATISTICS, request)
    failed = [r for r in replies if r.content is None]
    assert [r.source for r in failed] == ["client 1"] and "boom from partition 1" in failed[0].error
    (aggregate,) = [r for r in replies if r.content is not None]
    assert aggregate.n_clients == 3
    got = decode_statistics(aggregate.content, covariance_type="diag", n_components=2, n_features=2, shift=shift).stats
    xs = clients(blobs_config, 4)
    plain = sum((e_step(xs[i], state, shift=shift) for i in (0, 2, 3)), SufficientStatistics.zeros(2, 2, "diag", shift))
    assert got is not None and got.n_samples == plain.n_samples
    bound = error_bounds(block_scales(state, shift, transport.secure), 3, quantization_range(4))
    assert np.max(np.abs(got.sx - plain.sx)) <= bound["first_moment"]
    assert transport.secure_rounds[-1].contributors == [0, 2, 3]
    assert "boom from partition 1" in transport.secure_rounds[-1].failed["client 1"]


@pytest.mark.usefixtures("task_identity")
def test_fewer_than_three_nodes_get_no_secure_round(blobs_config: dict[str, Any]) -> None:
    grid = FakeGrid(partition_nodes(2), blobs_config)
    transport = SecureFlowerTransport(grid, list(grid.contexts), timeout=5.0, secure=SecureSettings(ROW_BOUND, MAX_SAMPLES))
    state = MixtureState.from_covariances(np.full(2, 0.5), np.zeros((2, 2)), np.ones((2, 2)), "diag")
    request = encode_request(EM_STATISTICS, {"covariance-type": "diag"}, {**state_arrays(state), "shift": np.zeros(2)})
    replies = transport.exchange(EM_STATISTICS, request)
    assert [r.content for r in replies] == [None, None] and grid.sent == []
    assert all("at least 3 nodes online, 2 are" in r.error for r in replies)


@pytest.mark.usefixtures("task_identity")
def test_secure_federated_em_matches_the_plain_run(blobs_config: dict[str, Any]) -> None:
    runs = {}
    for secure in (False, True):
        grid = FakeGrid(partition_nodes(), blobs_config)
        transport: FlowerTransport = (
            SecureFlowerTransport(grid, list(grid.contexts), timeout=5.0, secure=SecureSettings(ROW_BOUND, MAX_SAMPLES))
            if secure else FlowerTransport(grid, list(grid.contexts), timeout=5.0)
        )  # fmt: skip
        runs[secure] = run_federated_em(transport, n_components=4, covariance_type="full", max_rounds=4, tol=1e-12,
                                        min_clients=3)  # fmt: skip
    plain, secure = runs[False], runs[True]
    assert [h.n_clients for h in secure.history] == [3, 3, 3, 3]
    ll = np.array([h.log_likelihood for h in plain.history]) - np.array([h.log_likelihood for h in secure.history])
    assert np.max(np.abs(ll)) < 1e-5  # per row; the bound of one round's sum is ~2e-6 per row here
    np.testing.assert_allclose(secure.state.means, plain.state.means, atol=1e-4)
    np.testing.assert_allclose(secure.state.covariances, plain.state.covariances, atol=1e-3)
    np.testing.assert_allclose(secure.state.weights, plain.state.weights, atol=1e-6)


@pytest.mark.usefixtures("task_identity")
def test_a_forged_contribution_fails_the_secure_round_where_the_plain_one_rejects_just_it(
    blobs_config: dict[str, Any],
) -> None:
    from fedgmm.exceptions import FederationError

    nodes = partition_nodes()
    nodes[8000] = {**nodes[8000], "attack": "forged-statistics:sxx-offdiag:1e4"}  # within the bounds
    plain = run_federated_em(FlowerTransport(FakeGrid(nodes, blobs_config), list(nodes), timeout=5.0),
                             n_components=4, max_rounds=2, min_clients=2)  # fmt: skip
    assert plain.records["client 1"].status == "rejected" and [h.n_clients for h in plain.history] == [2, 2]
    grid = FakeGrid(nodes, blobs_config)
    transport = SecureFlowerTransport(grid, list(nodes), timeout=5.0, secure=SecureSettings(ROW_BOUND, MAX_SAMPLES))
    with pytest.raises(FederationError, match="robust checks kept no client"):  # the culprit cannot be told apart
        run_federated_em(transport, n_components=4, max_rounds=2, min_clients=2)
    assert transport.secure_rounds[-1].projected is False  # beyond the quantisation error: passed on as sent


@pytest.mark.usefixtures("task_identity")
def test_the_job_records_secure_aggregation_in_its_summary(blobs_config: dict[str, Any]) -> None:
    from fedgmm.flower.job import run_job

    config = {**blobs_config, "algorithm": "fedem", "max-rounds": 2, "secure-aggregation": True,
              "secure-row-bound": ROW_BOUND, "secure-max-samples": MAX_SAMPLES}  # fmt: skip
    summary = run_job(FakeGrid(partition_nodes(), config), config)
    assert summary["status"] == "completed" and summary["clients_used"] == 3
    secure = summary["secure_aggregation"]
    assert (secure["row_bound"], secure["max_samples"], secure["limbs"]) == (ROW_BOUND, MAX_SAMPLES, 2)
    assert [r["contributors"] for r in secure["rounds"]] == [[0, 1, 2]] * 2
    assert [h["n_clients"] for h in summary["history"]] == [3, 3]
    sums = [c for c in summary["clients"] if c["client_id"] == AGGREGATE_CLIENT_ID]
    assert [c["source"] for c in sums] == ["secure sum of 3 client(s)"] and sums[0]["status"] == "ok"
    json.dumps(summary)  # JSON-ready


def test_run_config_secure_aggregation_is_for_federated_em_with_a_row_bound() -> None:
    base = {**DEFAULTS, "algorithm": "fedem"}
    assert RunSettings.from_run_config(base).secure_aggregation is False
    on = RunSettings.from_run_config({**base, "secure-aggregation": True, "secure-row-bound": 8.0})
    assert (on.secure_aggregation, on.secure_row_bound, on.secure_max_samples) == (True, 8.0, 10000)
    with pytest.raises(SettingsError, match="secure-row-bound"):
        RunSettings.from_run_config({**base, "secure-aggregation": True})
    with pytest.raises(SettingsError, match="use algorithm 'fedem' or 'hybrid'"):
        RunSettings.from_run_config({**DEFAULTS, "secure-aggregation": True, "secure-row-bound": 8.0})
    with pytest.raises(SettingsError, match="secure-max-samples"):
        RunSettings.from_run_config({**base, "secure-max-samples": 0})
    with pytest.raises(SettingsError, match="'secure-limbs' must be 1 or 2"):
        RunSettings.from_run_config({**base, "secure-limbs": 3})
    assert RunSettings.from_run_config({**base, "secure-limbs": 1}).secure_limbs == 1


# ----------------------------------------------------------------------------- real processes
@pytest.mark.flower
def test_secagg_on_real_processes_gives_the_plain_sum_and_model_within_the_bound(
    tmp_path: Path, blobs_config: dict[str, Any]
) -> None:
    """A SuperLink and 3 SuperNodes on loopback; the plain run is the in-process runner's (the deployment tests
    show it equals the plain Flower run to 1e-8)."""
    from flower_testing import inprocess_reference
    from test_flower_deployment import partition_configs, running

    from fedgmm.flower.control import COMPLETED
    from fedgmm.flower.federation import LocalFederation
    from fedgmm.model_io import load_mixture

    base = {**blobs_config, "algorithm": "fedem", "covariance-type": "full", "max-rounds": 1, "round-tol": 1e-12,
            "wait-timeout": 60.0, "round-timeout": 120.0, "min-replies": 3}  # fmt: skip
    config = {**base, "secure-aggregation": True, "secure-row-bound": ROW_BOUND, "secure-max-samples": MAX_SAMPLES,
              "output-dir": str(tmp_path / "secure")}  # fmt: skip
    with running(LocalFederation(tmp_path / "fed", partition_configs(3))) as fed:
        run_id = fed.submit(config)
        record = fed.wait(run_id, timeout=400, output_dir=tmp_path / "secure")
        assert record["status"] == COMPLETED, (record, (tmp_path / "secure" / "summary.json").read_text()[-2000:])
    secure = json.loads((tmp_path / "secure" / "summary.json").read_text())
    a = load_mixture(tmp_path / "secure" / "model.npz")[0]
    plain_run, _, _ = inprocess_reference(base)
    b = plain_run.model.state_
    assert secure["clients_used"] == 3
    (round_,) = secure["secure_aggregation"]["rounds"]
    assert round_["contributors"] == [0, 1, 2] and round_["failed"] == {} and round_["limbs"] == 2
    assert round_["messages"] == 4  # setup, share keys, collect masked vectors, unmask
    bound = round_["error_bounds"]
    # Both runs start from the same mixture (the initialisation upload), so round 1 sums the same statistics.
    n = sum(len(x) for x in clients(base))
    assert round_["n_samples"] == n
    n_plain = plain_run.history[0].log_likelihood * n
    assert abs(round_["log_likelihood"] - n_plain) <= bound["log_likelihood"]
    assert abs(secure["history"][0]["log_likelihood"] * n - n_plain) <= bound["log_likelihood"]
    # The model is one M-step of the sum: weights N_k / N and means s + Σ r x̃ / N_k, with |Σ r x̃ / N_k| <= R.
    k = a.n_components
    nk = np.asarray(b.weights) * n
    assert np.max(np.abs(np.asarray(a.weights) - b.weights)) <= (k + 2) * bound["nk"] / n + 1e-15
    reach = ROW_BOUND + float(np.linalg.norm(b.means, axis=1).max())
    tol_means = (bound["first_moment"] + reach * (k + 2) * bound["nk"]) / nk + 1e-12
    assert np.all(np.max(np.abs(a.means - b.means), axis=1) <= tol_means)
    # Bytes: the initialisation round is the plain one; the EM round carries all four SecAgg+ stages.
    plain_em = [r for r in plain_run.communication.per_round if r.kind == EM_STATISTICS]
    secure_em = [r for r in secure["per_round"] if r["kind"] == EM_STATISTICS]
    assert secure_em[0]["bytes_up"] > plain_em[0].bytes_up and secure_em[0]["bytes_down"] > plain_em[0].bytes_down
    assert secure["per_round"][0]["bytes_up"] == plain_run.communication.per_round[0].bytes_up

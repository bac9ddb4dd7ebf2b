"""DP noisy counts: the count cap knows their noise, the synthetic set is floored, the server's σ is the mechanism's."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from fedgmm.em.stats import SufficientStatistics
from fedgmm.federated.fedgengmm import GlobalFitSettings, synthetic_count, synthetic_rows
from fedgmm.federated.local import LocalFitSettings
from fedgmm.federated.private import INIT_LOCAL_COMPONENTS, upload_count_noise
from fedgmm.federated.private_rounds import combine_noisy_statistics, round_plan
from fedgmm.federated.robust import cap_counts
from fedgmm.federated.spec import MethodSpec
from fedgmm.inprocess import run_inprocess
from fedgmm.privacy.dpem import NoiseScales, fit_dp_local, noisy_count_noise

pytest.importorskip("dp_accounting")

#: σ of a FedGenGMM upload's noisy count at ε = 1, δ = 1e-5, local K = 8 (the tiny privacy study's).
SIGMA = noisy_count_noise(1.0, 1e-5, 8)


def test_server_count_noise_is_the_mechanisms() -> None:
    # The σ the server computes from public constants is the σ the client's DP-EM fit used:
    # K noisy N_k of σ noise.count each, summed.
    res = fit_dp_local(np.random.default_rng(0).normal(size=(50, 2)), n_components=8, epsilon=1.0, delta=1e-5,
                       bound=6.0, random_state=0)  # fmt: skip
    assert SIGMA == pytest.approx(math.sqrt(8) * res.noise.count, rel=1e-12)
    assert 100 < SIGMA < 200  # ~153 rows: as large as the tiny study's clients
    assert upload_count_noise(LocalFitSettings(k_max=12, epsilon=1.0)) == pytest.approx(SIGMA, rel=1e-12)
    assert upload_count_noise(LocalFitSettings(k_max=12)) is None  # not private: exact counts
    # K = min(k_max, the DP local K); per-client ranges: the largest.
    assert upload_count_noise(LocalFitSettings(k_min=1, k_max=2, epsilon=1.0)) == pytest.approx(
        noisy_count_noise(1.0, 1e-5, 2), rel=1e-12)
    per_client = LocalFitSettings(k_max=2, epsilon=1.0, per_client=((1, 2), (1, 4), (1, 3)))
    assert upload_count_noise(per_client) == pytest.approx(noisy_count_noise(1.0, 1e-5, 4), rel=1e-12)
    # Federated EM's initialisation upload: the plan's per-N_k σ, times sqrt(K = 4).
    plan = round_plan(1.0, 1e-5, 4, "full", True)
    init = LocalFitSettings(k_max=12, epsilon=plan.init_epsilon)
    assert upload_count_noise(init, local_components=INIT_LOCAL_COMPONENTS) == pytest.approx(
        2.0 * plan.init_count_noise(), rel=1e-12)


def test_noise_floored_counts_do_not_crush_an_honest_client() -> None:
    # The tiny study at dp_noise_seed 4: two honest ~150-row clients' noisy counts floored at 1.
    claims = [1.0, 1.0, 311.0]
    blind = cap_counts(claims, max_client_weight=None)
    assert blind.counts[2] == 2.0  # without the noise: 2 x the others' median, the bug
    aware = cap_counts(claims, max_client_weight=None, count_noise=SIGMA)
    assert list(aware.counts) == claims and aware.total == 313.0
    assert [d.action for d in aware.decisions] == ["kept"] * 3
    # The share cap (influence, not plausibility) still applies, and cuts to a share, not to noise.
    shared = cap_counts(claims, count_noise=SIGMA)
    assert shared.weights[2] == pytest.approx(0.5) and shared.total == 313.0


@pytest.mark.parametrize("claimed", [1e4, 1e12])
def test_a_huge_claim_is_still_capped_under_dp(claimed: float) -> None:
    caps = cap_counts([150.0, 170.0, claimed], max_client_weight=None, count_noise=SIGMA)
    limit = 160.0 + 4.0 * SIGMA  # the others' median + noise_z σ (above 2 x the median here)
    assert caps.counts[2] == pytest.approx(limit) and caps.total == pytest.approx(320.0 + limit)
    assert caps.decisions[2].action == "capped" and "DP count noise" in caps.decisions[2].reason
    assert [d.action for d in caps.decisions[:2]] == ["kept", "kept"]


def test_the_multiplicative_cap_binds_when_it_is_the_looser() -> None:
    # Large clients, small noise: 10 x the median is above median + 4σ, and that is the cap.
    caps = cap_counts([1e5, 1.1e5, 1e9], max_client_weight=None, count_noise=10.0)
    assert caps.counts[2] < 1e9 and caps.counts[2] >= 2 * 1.05e5


@pytest.mark.parametrize("seed", range(5))
def test_no_count_noise_is_exactly_the_exact_count_caps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    claims = np.exp(rng.normal(5, 1.5, 7))
    claims[seed % 7] *= 1e6
    plain = cap_counts(claims)
    for noise in (None, 0.0):
        other = cap_counts(claims, count_noise=noise)
        assert np.array_equal(plain.counts, other.counts) and np.array_equal(plain.weights, other.weights)
        assert plain.total == other.total and plain.decisions == other.decisions


def test_count_noise_is_checked() -> None:
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="count_noise"):
            cap_counts([1.0, 2.0, 3.0], count_noise=bad)
    with pytest.raises(ValueError, match="noise_z"):
        cap_counts([1.0, 2.0, 3.0], count_noise=1.0, noise_z=-1.0)


def test_a_dp_synthetic_set_is_floored_not_refused() -> None:
    settings = GlobalFitSettings(n_components=3)  # needs 30 rows; 5 x a noisy total of 4 gives 20
    floored = synthetic_rows(settings, 4.0, 2, noisy_total=True)
    assert floored.rows == 30 and floored.requested == 20 and "DP noisy total" in floored.reason
    assert synthetic_count(settings, 4.0, 2, noisy_total=True) == 30
    assert synthetic_rows(settings, 400.0, 2, noisy_total=True).reason == ""  # large enough: untouched
    with pytest.raises(ValueError, match="at least 30 rows"):  # exact counts: the user's setting is too small
        synthetic_count(settings, 4.0, 2)
    with pytest.raises(ValueError, match="at least 30 rows"):  # a row count the user gave: too small either way
        synthetic_count(GlobalFitSettings(n_components=3, synthetic_size=20), 400.0, 2, noisy_total=True)


def test_fedgengmm_with_every_count_noise_floored_still_fits() -> None:
    # Three 20-row clients at ε = 1 (σ ≈ 153): noise seed 5 floors all three noisy counts at 1.
    rng = np.random.default_rng(0)
    clients = [rng.normal(size=(20, 2)) + 3 * i for i in range(3)]
    spec = MethodSpec("fedgengmm", n_components=3, epsilon=1.0, clip_bound=6.0, dp_noise_seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = run_inprocess(spec, clients, seed=0)
    assert [r.n_samples for r in run.records] == [1, 1, 1]
    assert run.extra["synthetic_size"] == 30 and "raised to 30 rows" in run.extra["synthetic_note"]
    assert run.model is not None and run.model.n_components == 3 and np.all(np.isfinite(run.model.means_))


def _round_stats(n_samples: int, k: int = 3, d: int = 2) -> SufficientStatistics:
    nk = np.full(k, n_samples / k)
    return SufficientStatistics(nk, np.zeros((k, d)), nk[:, None, None] * np.eye(d), n_samples, 0.0, np.zeros(d), "full")


def test_a_private_round_does_not_crush_an_honest_client_either() -> None:
    # A round's noisy totals, two floored at 1 on the wire: the third's statistics keep their weight.
    noise = NoiseScales(count=40.0, first=60.0, second=100.0, scatter=100.0)
    stats = [_round_stats(1), _round_stats(1), _round_stats(150)]
    out = combine_noisy_statistics(stats, [0, 1, 2], noise=noise, bound=2.0, robust=True,
                                   max_client_weight=None, max_count_ratio=10.0)  # fmt: skip
    assert [d.action for d in out.decisions] == ["kept"] * 3
    assert out.total is not None and out.total.nk.sum() == pytest.approx(152.0)
    forged = combine_noisy_statistics([_round_stats(100), _round_stats(120), _round_stats(10**9)], [0, 1, 2],
                                      noise=noise, bound=2.0, robust=True, max_client_weight=None,
                                      max_count_ratio=10.0)  # fmt: skip
    assert forged.decisions[2].action == "capped"

"""Local DP for federated EM: the plan, the client's ledger and refusals, the server's checks and M-step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedgmm.em.stats import SufficientStatistics
from fedgmm.exceptions import FederationError
from fedgmm.federated.client import EM_STATISTICS, handle_request
from fedgmm.federated.fedem import run_federated_em
from fedgmm.federated.local import LocalFitSettings
from fedgmm.federated.messages import encode_request, state_arrays
from fedgmm.federated.private_rounds import (
    PRIOR_PREVIOUS_SHARE,
    STORE_LEDGER,
    combine_noisy_statistics,
    decode_noisy_statistics,
    drop_weak_components,
    noisy_m_step,
    round_config,
    round_plan,
)
from fedgmm.federated.spec import MethodSpec
from fedgmm.federated.union import full_covariances
from fedgmm.inprocess import FederatedEM, InProcessTransport, run_inprocess
from fedgmm.mixture import MixtureState
from fedgmm.model_io import read_metadata
from fedgmm.privacy.accounting import epsilon_spent
from fedgmm.privacy.dpem import (
    NoiseScales,
    prior_initial_state,
    reseed_weak_components,
    weak_threshold,
)

pytest.importorskip("dp_accounting")


def _clients(seed: int = 0, n: int = 300, d: int = 3, m: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.vstack([rng.normal(-2, 1, (n // 2, d)), rng.normal(2, 1, (n // 2, d))]) for _ in range(m)]


def _round_request(state: MixtureState, epsilon: float = 2.0, max_rounds: int = 3, **over: Any) -> Any:
    plan = round_plan(epsilon, 1e-5, max_rounds, state.covariance_type, False)
    cfg = {"covariance-type": state.covariance_type, **round_config(plan, seed=0, clip_bound=6.0, feature_scale=()), **over}
    return encode_request(EM_STATISTICS, cfg, {**state_arrays(state), "shift": np.zeros(state.n_features)})


@pytest.mark.parametrize(("ctype", "private_init"), [("full", True), ("diag", False)])
def test_plan_composes_within_the_target(ctype: str, private_init: bool) -> None:
    plan = round_plan(8.0, 1e-5, 10, ctype, private_init)
    everything = plan.init_releases() + plan.round_releases() * 10
    spent = epsilon_spent(everything, 1e-5)
    assert 7.9 < spent <= 8.0
    assert bool(plan.init_releases()) == private_init and (plan.init_epsilon > 0) == private_init
    # Fewer rounds in the same budget: less noise per round.
    assert round_plan(8.0, 1e-5, 3, ctype, private_init).round_scale < plan.round_scale


def test_federated_em_eps8_spends_at_most_8_per_client() -> None:
    clients = _clients()
    model = FederatedEM(2, epsilon=8.0, max_rounds=10, clip_bound=6.0, random_state=0, dp_noise_seed=0).fit(clients)
    assert model.n_rounds_ == 10 and not model.converged_  # every round of the budget runs
    assert model.privacy_client_ids_ == [0, 1, 2, 3]
    assert len(model.privacy_spent_) == len(clients)
    for eps, delta in model.privacy_spent_:
        assert 7.9 < eps <= 8.0 and delta == 1e-5
    assert model.privacy_ is not None and model.privacy_["noise"] == "local" and model.privacy_["max_rounds"] == 10
    assert all(np.isnan(h.log_likelihood) for h in model.history_)
    assert np.isfinite(model.score(np.vstack(clients)))


def test_the_default_round_limit_with_epsilon_is_the_measured_one() -> None:
    # Under DP every round runs and the budget is split over them: the default limit is
    # the 10 rounds the privacy figures were measured with, not the non-private 40.
    clients = _clients()
    default = FederatedEM(2, epsilon=8.0, clip_bound=6.0, random_state=0, dp_noise_seed=0).fit(clients)
    explicit = FederatedEM(2, epsilon=8.0, max_rounds=10, clip_bound=6.0, random_state=0, dp_noise_seed=0).fit(clients)
    assert default.max_rounds is None  # the parameter is left as given (scikit-learn's convention)
    assert default.n_rounds_ == 10 and default.privacy_ is not None and default.privacy_["max_rounds"] == 10
    np.testing.assert_array_equal(default.global_model_.means_, explicit.global_model_.means_)
    assert default.privacy_spent_ == explicit.privacy_spent_
    plain = FederatedEM(2, round_tol=0.0, random_state=0).fit(clients)
    assert plain.n_rounds_ == 40  # without DP the limit stays 40


def test_federated_em_eps8_finds_the_two_blobs() -> None:
    clients = _clients()
    model = FederatedEM(2, epsilon=8.0, max_rounds=10, clip_bound=6.0, random_state=0, dp_noise_seed=0).fit(clients)
    np.testing.assert_allclose(np.sort(model.global_model_.means_[:, 0]), [-2.0, 2.0], atol=0.5)


def _finds_both_blobs(ctype: str, noise_seed: int) -> bool:
    model = FederatedEM(2, covariance_type=ctype, epsilon=8.0, max_rounds=10, clip_bound=6.0, random_state=0,
                        dp_noise_seed=noise_seed).fit(_clients())  # fmt: skip
    means = model.global_model_.means_
    return bool(np.allclose(means[np.argsort(means[:, 0])], [[-2.0] * 3, [2.0] * 3], atol=0.5))


def test_federated_em_eps8_finds_the_two_blobs_over_noise_seeds() -> None:
    # Measured: 12 of 12 (before the weak-component handling: 5-6 of 12 collapsed to one).
    found = [_finds_both_blobs("full", s) for s in range(12)]
    assert sum(found) >= 11, found


@pytest.mark.parametrize("ctype", ["tied", "diag", "spherical"])
def test_federated_em_eps8_finds_the_two_blobs_for_every_covariance_type(ctype: str) -> None:
    # Measured over noise seeds 0..11: 12 of 12 for each type.
    found = [_finds_both_blobs(ctype, s) for s in range(4)]
    assert sum(found) >= 3, found


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
def test_reseeding_splits_the_heaviest_component_for_a_weak_one(ctype: str) -> None:
    rng = np.random.default_rng(4)
    k, d = 3, 4
    white = prior_initial_state(k, d, ctype, 6.0, rng)  # type: ignore[arg-type]
    counts = np.array([900.0, 3.0, 300.0])
    weights = counts / counts.sum()
    w, mu, cov, done = reseed_weak_components(weights, white.means, white.covariances, counts, ctype, 20.0)  # type: ignore[arg-type]
    assert done == [1]
    kept = weights[0] + weights[2]  # the weak component's own weight is dropped
    np.testing.assert_allclose(w, [weights[0] / 2 / kept, weights[0] / 2 / kept, weights[2] / kept])
    assert np.isclose(w.sum(), 1.0)
    # The pair sits symmetrically about the split component's mean, apart along its principal axis.
    np.testing.assert_allclose(0.5 * (mu[0] + mu[1]), white.means[0])
    assert np.linalg.norm(mu[0] - mu[1]) > 0.5
    np.testing.assert_array_equal(mu[2], white.means[2])
    if ctype in ("full", "diag"):  # the pair keeps the split component's covariance (second moment)
        spread = mu[0] - white.means[0]
        pair = cov[0] + (np.outer(spread, spread) if ctype == "full" else spread**2)
        np.testing.assert_allclose(pair, white.covariances[0], atol=1e-12)
    MixtureState.from_covariances(w, mu, cov, ctype)  # type: ignore[arg-type]  # still a valid mixture
    # No donor with enough rows: nothing is split.
    _, _, _, none = reseed_weak_components(weights, white.means, white.covariances, counts, ctype, 20.0,  # type: ignore[arg-type]
                                           donor_count=1000.0)  # fmt: skip
    assert none == []


def test_weak_init_upload_components_are_dropped_before_the_union() -> None:
    state = prior_initial_state(4, 3, "diag", 6.0, np.random.default_rng(0))
    state = MixtureState.from_covariances(np.array([0.6, 0.3, 0.05, 0.05]), state.means, state.covariances, "diag")
    kept = drop_weak_components(state, 400.0, weak_threshold(30.0))  # 60-row threshold: 240 and 120 rows stay
    np.testing.assert_allclose(kept.weights, [2 / 3, 1 / 3])
    np.testing.assert_array_equal(kept.means, state.means[:2])
    only = drop_weak_components(state, 10.0, 60.0)  # every component weak: the heaviest stays
    assert only.n_components == 1 and np.array_equal(only.means, state.means[:1])


def test_private_model_file_records_the_guarantee(tmp_path: Any) -> None:
    model = FederatedEM(2, epsilon=8.0, max_rounds=3, clip_bound=6.0, random_state=0).fit(_clients())
    priv = read_metadata(model.save(tmp_path / "m.npz"))["extra"]["privacy"]
    assert priv["epsilon"] == 8.0 and priv["noise"] == "local" and len(priv["spent"]) == 4
    assert all(e <= 8.0 for e, _ in priv["spent"])


def test_round_beyond_the_budget_is_refused_and_nothing_is_recorded() -> None:
    X = _clients(m=1)[0]
    state = prior_initial_state(2, 3, "full", 6.0, np.random.default_rng(0))
    store: dict[str, Any] = {}
    request = _round_request(state, max_rounds=3)
    for _ in range(3):
        reply = handle_request(request, X, 0, store)
        got = decode_noisy_statistics(reply, covariance_type="full", n_components=2, n_features=3)
        assert got.status == "ok" and got.privacy is not None and got.privacy[0] <= 2.0
    ledger = store[STORE_LEDGER].copy()
    refused = decode_noisy_statistics(handle_request(request, X, 0, store), covariance_type="full", n_components=2, n_features=3)
    assert refused.status == "excluded" and "budget exhausted" in refused.reason and "3 rounds" in refused.reason
    np.testing.assert_array_equal(store[STORE_LEDGER], ledger)
    # A request that claims another budget after first contact is refused too.
    other = decode_noisy_statistics(
        handle_request(_round_request(state, max_rounds=3, **{"dp-max-rounds": 4}), X, 0, store),
        covariance_type="full", n_components=2, n_features=3,
    )
    assert other.status == "excluded" and "fixed at first contact" in other.reason


def test_a_second_run_on_the_same_clients_is_refused_with_a_record() -> None:
    clients = _clients()
    local = LocalFitSettings(k_min=2, k_max=2, epsilon=8.0, clip_bound=6.0)
    with InProcessTransport(clients) as transport:
        first = run_federated_em(transport, n_components=2, max_rounds=3, local=local, seed=0)
        assert len(first.privacy_spent) == 4
        with pytest.raises(FederationError, match="privacy budget"):
            run_federated_em(transport, n_components=2, max_rounds=3, local=local, seed=1)


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
def test_noisy_m_step_is_always_a_valid_mixture(ctype: str) -> None:
    rng = np.random.default_rng(0)
    k, d = 5, 4
    white = prior_initial_state(k, d, ctype, 6.0, rng)  # type: ignore[arg-type]
    zero = SufficientStatistics.zeros(k, d, ctype, np.zeros(d))  # type: ignore[arg-type]
    for trial in range(20):
        big = 10.0 ** rng.uniform(0, 4)
        noisy = SufficientStatistics(
            zero.nk + rng.normal(0, big, k), zero.sx + rng.normal(0, big, zero.sx.shape),
            zero.sxx + rng.normal(0, big * 10, zero.sxx.shape), 1, 0.0, np.zeros(d), ctype,  # type: ignore[arg-type]
        )
        state = noisy_m_step(noisy, white, np.full(d, 1.0 + trial), 6.0, 1e-6)
        assert np.all(np.isfinite(state.means)) and np.isclose(state.weights.sum(), 1.0) and np.all(state.weights > 0)
        MixtureState.from_arrays(state.to_arrays(), ctype)  # type: ignore[arg-type]  # validates positive definiteness


def _honest_noisy(rng: np.random.Generator, noise: NoiseScales, k: int = 3, d: int = 4, bound: float = 2.0) -> SufficientStatistics:
    n = 200
    r = rng.dirichlet(np.ones(k), size=n)
    res = rng.normal(size=(n, k, d))
    res *= np.minimum(1.0, bound / np.linalg.norm(res, axis=2))[:, :, None]
    nk = r.sum(0) + rng.normal(0, noise.count, k)
    sx = np.einsum("nk,nkd->kd", r, res) + rng.normal(0, noise.first, (k, d))
    sxx = np.einsum("nk,nkd,nke->kde", r, res, res) + rng.normal(0, noise.second, (k, d, d))
    return SufficientStatistics(nk, sx, sxx, n, 0.0, np.zeros(d), "full")


def test_noise_aware_checks_keep_honest_noisy_clients_and_reject_forgeries() -> None:
    rng = np.random.default_rng(1)
    noise = NoiseScales(count=30.0, first=60.0, second=100.0, scatter=100.0)
    honest = [_honest_noisy(rng, noise) for _ in range(200)]
    out = combine_noisy_statistics(honest, list(range(200)), noise=noise, bound=2.0, robust=True,
                                   max_client_weight=None, max_count_ratio=None)  # fmt: skip
    assert all(d.action == "kept" for d in out.decisions) and out.total is not None
    forged = _honest_noisy(rng, noise)
    forged = SufficientStatistics(forged.nk, forged.sx * 1e4, forged.sxx, forged.n_samples, 0.0, forged.shift, "full")
    out = combine_noisy_statistics([*honest[:5], forged], list(range(6)), noise=noise, bound=2.0, robust=True,
                                   max_client_weight=None, max_count_ratio=None)  # fmt: skip
    assert [d.action for d in out.decisions] == ["kept"] * 5 + ["rejected"]
    assert "clipping bound" in out.decisions[-1].reason


def test_hybrid_and_union_with_epsilon_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"hybrid.*share one budget"):
        FederatedEM(2, init="fedgengmm", epsilon=1.0, clip_bound=6.0, max_rounds=2, random_state=0).fit(_clients())
    with pytest.raises(ValueError, match="not supported for method 'union'"):
        run_inprocess(MethodSpec("union", n_components=2, epsilon=1.0, clip_bound=6.0), _clients(), seed=0)


def test_private_rounds_from_a_given_mixture_spend_only_the_rounds() -> None:
    clients = _clients()
    start = prior_initial_state(2, 3, "full", 6.0, np.random.default_rng(3))
    model = FederatedEM(2, init=start, epsilon=2.0, max_rounds=3, clip_bound=6.0, random_state=0).fit(clients)
    assert model.communication_.rounds == 3  # no initialisation upload
    assert all(1.9 < e <= 2.0 for e, _ in model.privacy_spent_)


def test_non_private_federated_em_is_unchanged() -> None:
    clients = _clients()
    model = FederatedEM(2, max_rounds=5, random_state=0).fit(clients)
    assert model.privacy_spent_ == [] and model.privacy_ is None
    assert np.all(np.isfinite([h.log_likelihood for h in model.history_]))


def test_distributed_noise_splits_the_calibrated_noise_over_the_clients() -> None:
    local = round_plan(8.0, 1e-5, 3, "full", True)
    shared = round_plan(8.0, 1e-5, 3, "full", True, "distributed")
    assert shared.round_scale == local.round_scale  # the same accounting, for the sum
    assert shared.noise(3.0, 4).second == pytest.approx(local.noise(3.0).second / 2)
    clients = _clients()
    model = FederatedEM(2, epsilon=8.0, max_rounds=3, clip_bound=6.0, dp_noise="distributed", random_state=0).fit(clients)
    assert model.privacy_ is not None and model.privacy_["noise"] == "distributed"
    assert "secure aggregation" in model.privacy_["valid_only_under"]
    assert all(e <= 8.0 for e, _ in model.privacy_spent_)
    start = prior_initial_state(2, 3, "full", 6.0, np.random.default_rng(3))
    with pytest.raises(ValueError, match="kmeans"):
        FederatedEM(2, init=start, epsilon=8.0, max_rounds=3, clip_bound=6.0, dp_noise="distributed").fit(clients)
    with pytest.raises(ValueError, match="dp_noise"):
        MethodSpec("fedem", dp_noise="central")


def test_prior_strength_follows_the_noise_so_noise_does_not_make_thin_components() -> None:
    rng = np.random.default_rng(2)
    k, d, n = 3, 6, 500
    white = prior_initial_state(k, d, "full", 6.0, rng)
    sigma = 200.0  # σ of the summed second moments, per entry
    nk = np.full(k, n / k)
    sxx = np.broadcast_to(0.3 * np.eye(d) * n / k, (k, d, d)) + rng.normal(0, sigma, (k, d, d))
    noisy = SufficientStatistics(nk, np.zeros((k, d)), 0.5 * (sxx + np.swapaxes(sxx, 1, 2)), n, 0.0, np.zeros(d), "full")
    floored = noisy_m_step(noisy, white, np.ones(d), 6.0, 0.0)
    shrunk = noisy_m_step(noisy, white, np.ones(d), 6.0, 0.0, second_noise=sigma)
    thin = lambda s: float(np.linalg.eigvalsh(s.covariances).min())  # noqa: E731
    assert thin(floored) < 0.05 < thin(shrunk)


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
def test_noisy_covariances_shrink_toward_the_broadcast_ones(ctype: str) -> None:
    k, d, n = 2, 3, 400
    zero = SufficientStatistics.zeros(k, d, ctype, np.zeros(d))  # type: ignore[arg-type]
    var = {"full": lambda v: v * np.eye(d)[None].repeat(k, 0), "tied": lambda v: v * np.eye(d),
           "diag": lambda v: np.full((k, d), v), "spherical": lambda v: np.full(k, v)}[ctype]  # fmt: skip
    # Exact residual statistics of variance 0.5 per axis; a huge public noise level makes ν dominate.
    stats = SufficientStatistics(np.full(k, n / k), zero.sx, n / k * var(0.5) if ctype != "tied" else n * var(0.5),
                                 n, 0.0, np.zeros(d), ctype)  # type: ignore[arg-type]  # fmt: skip
    def mean_var(broadcast: float) -> float:
        white = MixtureState.from_covariances(np.full(k, 0.5), np.zeros((k, d)), var(broadcast), ctype)  # type: ignore[arg-type]
        out = noisy_m_step(stats, white, np.ones(d), 6.0, 0.0, second_noise=1e4)
        return float(np.mean(np.diagonal(full_covariances(out), axis1=1, axis2=2)))

    psi = (6.0 / 1.5) ** 2 / d
    assert mean_var(0.2) < mean_var(1.0) < psi  # toward Ψ_k = s Σ_k + (1 - s) ψ I, not ψ I alone
    np.testing.assert_allclose(mean_var(0.2), PRIOR_PREVIOUS_SHARE * 0.2 + (1 - PRIOR_PREVIOUS_SHARE) * psi, rtol=0.02)

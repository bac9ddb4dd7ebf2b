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
    STORE_LEDGER,
    combine_noisy_statistics,
    decode_noisy_statistics,
    noisy_m_step,
    round_config,
    round_plan,
)
from fedgmm.federated.spec import MethodSpec
from fedgmm.inprocess import FederatedEM, InProcessTransport, run_inprocess
from fedgmm.mixture import MixtureState
from fedgmm.model_io import read_metadata
from fedgmm.privacy.accounting import epsilon_spent
from fedgmm.privacy.dpem import NoiseScales, prior_initial_state

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


@pytest.mark.xfail(strict=True, reason=(
    "since main merged h-d's DP-EM local fit as federated EM's private init upload, 7 of 12 noise seeds "
    "(dp_noise_seed 0..11) collapse to one component here (the other: weight ~0.001, mean far outside the "
    "clip ball; merged main's server-seeded noise, random_state 0..11: 3 of 12); on h-e's tree 12 of 12 "
    "found both blobs. The noise seed is not chosen to pass."
))
def test_federated_em_eps8_finds_the_two_blobs() -> None:
    clients = _clients()
    model = FederatedEM(2, epsilon=8.0, max_rounds=10, clip_bound=6.0, random_state=0, dp_noise_seed=0).fit(clients)
    np.testing.assert_allclose(np.sort(model.global_model_.means_[:, 0]), [-2.0, 2.0], atol=0.5)


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

"""DP-EM: valid mixtures from any noise, spent budget within the target, sane fits at a loose budget."""

from __future__ import annotations

import numpy as np
import pytest

from fedgmm.em.stats import SufficientStatistics, e_step, score_samples
from fedgmm.mixture import MixtureState
from fedgmm.privacy.accounting import BudgetExceededError
from fedgmm.privacy.clipping import clip_rows
from fedgmm.privacy.dpem import Prior, RoundPrivacy, fit_dp_local, noise_aware_m_step


def _blobs(rng: np.random.Generator, n: int = 600) -> np.ndarray:
    return np.vstack([rng.normal(-1.5, 0.5, (n // 2, 3)), rng.normal(1.5, 0.5, (n - n // 2, 3))])


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
def test_noisy_m_step_always_gives_a_valid_mixture(ctype: str) -> None:
    rng = np.random.default_rng(0)
    k, d = 4, 3
    shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[ctype]
    prior = Prior(scale=np.eye(d))
    for _ in range(25):
        # Wild noise: negative counts, indefinite second moments, NaN-free but nonsense.
        stats = SufficientStatistics(
            nk=rng.normal(0, 50, k), sx=rng.normal(0, 100, (k, d)), sxx=rng.normal(0, 500, shape),
            n_samples=10, log_likelihood=0.0, shift=np.zeros(d), covariance_type=ctype,  # type: ignore[arg-type]
        )
        state = noise_aware_m_step(stats, prior)
        assert np.all(state.weights > 0) and state.weights.sum() == pytest.approx(1.0)
        assert np.all(np.isfinite(state.means))
        cov = state.covariances
        if ctype in ("full", "tied"):
            assert np.allclose(cov, np.swapaxes(cov, -1, -2))
            assert np.linalg.eigvalsh(cov).min() > 0
        else:
            assert np.all(cov > 0)
        assert np.all(np.isfinite(score_samples(rng.normal(size=(5, d)), state)))


@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_dp_fit_spends_at_most_the_target_and_learns_at_a_loose_budget(ctype: str) -> None:
    rng = np.random.default_rng(1)
    X = _blobs(rng, 2000)
    res = fit_dp_local(X, n_components=2, epsilon=50.0, delta=1e-5, covariance_type=ctype, max_iter=4,
                       accountant="rdp", random_state=3)
    assert 0 < res.epsilon <= 50.0
    assert isinstance(res.state, MixtureState) and res.state.covariance_type == ctype
    centres = np.sort(res.state.means[:, 0])
    assert centres[0] < -0.8 and centres[1] > 0.8
    assert abs(res.noisy_count - 2000) < 100
    # Better than the data-independent start: a single broad Gaussian of the ball.
    ll = score_samples(X, res.state).mean()
    assert ll > -3 * 3


def test_dp_fit_is_seeded_and_noise_grows_as_epsilon_shrinks() -> None:
    X = _blobs(np.random.default_rng(2))
    a = fit_dp_local(X, n_components=2, epsilon=1.0, delta=1e-5, accountant="rdp", random_state=5)
    b = fit_dp_local(X, n_components=2, epsilon=1.0, delta=1e-5, accountant="rdp", random_state=5)
    c = fit_dp_local(X, n_components=2, epsilon=8.0, delta=1e-5, accountant="rdp", random_state=5)
    np.testing.assert_array_equal(a.state.means, b.state.means)
    assert a.noise.first > c.noise.first and a.epsilon <= 1.0 and c.epsilon <= 8.0


def test_feature_scale_maps_back_to_the_callers_coordinates() -> None:
    X = _blobs(np.random.default_rng(4), 3000) * np.array([1.0, 10.0, 100.0])
    res = fit_dp_local(X, n_components=2, epsilon=50.0, delta=1e-5, covariance_type="diag", max_iter=4,
                       feature_scale=np.array([1.0, 10.0, 100.0]), accountant="rdp", random_state=0)
    spread = np.abs(res.state.means).max(axis=0)
    assert spread[2] > 50 * spread[0]


def test_round_privacy_accounts_rounds_and_stops_at_the_limit() -> None:
    rng = np.random.default_rng(6)
    Xc, _ = clip_rows(_blobs(rng), 3.0)
    state = MixtureState.from_covariances(np.full(2, 0.5), np.array([[-1.0] * 3, [1.0] * 3]), np.ones((2, 3)), "diag")
    rp = RoundPrivacy(epsilon=8.0, delta=1e-5, max_rounds=3, covariance_type="diag", bound=3.0, accountant="rdp")
    stats = e_step(Xc, state, shift=np.zeros(3))
    for _ in range(3):
        noisy = rp.release(stats, rng)
        assert noisy.log_likelihood == 0.0 and not np.array_equal(noisy.sx, stats.sx)
    eps, delta = rp.spent()
    assert 7.0 < eps <= 8.0 and delta == 1e-5
    with pytest.raises(BudgetExceededError):
        rp.release(stats, rng)


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
def test_centred_statistics_move_by_at_most_the_residual_bound(ctype: str) -> None:
    from fedgmm.privacy.clipping import Sensitivity
    from fedgmm.privacy.dpem import centred_statistics

    rng = np.random.default_rng(7)
    k, d, B_r = 3, 4, 1.2
    cov = {"full": np.broadcast_to(np.eye(d), (k, d, d)).copy(), "tied": np.eye(d),
           "diag": np.ones((k, d)), "spherical": np.ones(k)}[ctype]
    state = MixtureState.from_covariances(np.full(k, 1 / k), rng.normal(size=(k, d)), cov, ctype)  # type: ignore[arg-type]
    base = rng.normal(size=(40, d)) * 2
    for B_2 in (B_r, 0.5):  # one radius, or a tighter one for the second moments
        a = centred_statistics(base, state, B_r, second_bound=B_2)
        for _ in range(30):
            row = rng.normal(size=(1, d)) * rng.choice([0.5, 3.0, 20.0])
            b = centred_statistics(np.vstack([base, row]), state, B_r, second_bound=B_2)
            assert np.linalg.norm(b.nk - a.nk) <= Sensitivity(B_r).count + 1e-9
            assert np.linalg.norm(b.sx - a.sx) <= Sensitivity(B_r).first + 1e-9
            diff = b.sxx - a.sxx
            if ctype in ("full", "tied"):
                iu = np.triu_indices(d)
                diff = diff[..., iu[0], iu[1]]
            assert np.linalg.norm(diff) <= Sensitivity(B_2).second + 1e-9


def test_local_fit_spends_what_dp_accounting_says_for_its_releases() -> None:
    import dp_accounting as dpa

    from fedgmm.privacy.dpem import DEFAULT_LOCAL_BUDGET, DEFAULT_SECOND_FRACTION, local_releases

    X = _blobs(np.random.default_rng(8))
    res = fit_dp_local(X, n_components=2, epsilon=4.0, delta=1e-5, max_iter=3, random_state=0)
    assert 3.9 < res.epsilon <= 4.0
    # The same composition, built directly in dp-accounting from the released noise multipliers:
    # per iteration N_k (count), and so on, each a Gaussian mechanism of multiplier σ / Δ.
    shape = local_releases(3, DEFAULT_LOCAL_BUDGET, 1.0)
    scale = res.noise.count / shape[0].noise_multiplier  # σ_N / Δ_N = scale · ratio, Δ_N = 1
    acc = dpa.pld.PLDAccountant(value_discretization_interval=1e-3)
    acc.compose(dpa.ComposedDpEvent([
        dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(scale * r.noise_multiplier), r.count) for r in shape
    ]))
    assert acc.get_epsilon(1e-5) == pytest.approx(res.epsilon, rel=1e-3)
    # The second moments get the largest share: the smallest noise multiplier (their
    # sensitivity is B_2² with B_2 = DEFAULT_SECOND_FRACTION · B).
    b_2 = DEFAULT_SECOND_FRACTION * res.bound
    assert res.noise.second / b_2**2 == pytest.approx(min(scale * r.noise_multiplier for r in shape), rel=1e-6)


def test_noise_off_is_reported_as_not_private() -> None:
    X = _blobs(np.random.default_rng(9))
    res = fit_dp_local(X, n_components=2, epsilon=1.0, delta=1e-5, noise=False, random_state=0)
    assert res.epsilon == np.inf and res.noise.second == 0.0


def test_coarser_noise_shape_is_released_in_the_asked_type() -> None:
    X = _blobs(np.random.default_rng(10))
    res = fit_dp_local(X, n_components=3, epsilon=8.0, delta=1e-5, noise_covariance_type="tied", random_state=0)
    cov = res.state.covariances
    assert res.state.covariance_type == "full" and cov.shape == (3, 3, 3)
    np.testing.assert_allclose(cov, np.broadcast_to(cov[0], cov.shape))


def test_local_budget_and_fit_arguments_are_checked() -> None:
    from fedgmm.privacy.dpem import LocalBudget

    with pytest.raises(ValueError, match="final_second"):
        LocalBudget(final_second=0.0)
    X = _blobs(np.random.default_rng(11))
    for bad in ({"max_iter": 0}, {"first_fraction": 0.0}, {"second_fraction": 1.5}, {"prior_variance": 0.0}):
        with pytest.raises(ValueError):
            fit_dp_local(X, n_components=2, epsilon=1.0, delta=1e-5, **bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
def test_projection_keeps_released_parameters_inside_the_ball(ctype: str) -> None:
    from fedgmm.privacy.dpem import project_to_ball

    rng = np.random.default_rng(12)
    k, d, bound = 3, 4, 2.0
    a = rng.normal(size=(k, d, d)) * 10
    full = a @ np.swapaxes(a, -1, -2)
    cov = {"full": full, "tied": full[0], "diag": np.abs(rng.normal(size=(k, d))) * 100,
           "spherical": np.array([0.1, 50.0, 1e4])}[ctype]
    means, out = project_to_ball(rng.normal(size=(k, d)) * 100, cov, ctype, bound)  # type: ignore[arg-type]
    assert np.all(np.linalg.norm(means, axis=1) <= bound + 1e-9)
    variances = np.linalg.eigvalsh(out) if ctype in ("full", "tied") else out
    assert variances.max() <= bound**2 + 1e-9 and variances.min() > 0
    if ctype == "spherical":
        assert out[0] == 0.1  # what is already feasible is left alone

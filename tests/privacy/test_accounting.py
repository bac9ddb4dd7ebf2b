"""The accounting wrappers agree with dp-accounting and calibration never overshoots."""

from __future__ import annotations

import dp_accounting
import pytest

from fedgmm.privacy.accounting import (
    BudgetExceededError,
    GaussianRelease,
    PrivacyLedger,
    calibrate_noise,
    epsilon_spent,
)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_epsilon_matches_dp_accounting_directly(accountant: str) -> None:
    releases = [GaussianRelease(2.0, 5), GaussianRelease(3.5, 2)]
    if accountant == "rdp":
        acc = dp_accounting.rdp.RdpAccountant()
    else:
        acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(2.0), 5))
    acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(3.5), 2))
    assert epsilon_spent(releases, 1e-5, accountant=accountant) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)


def test_single_gaussian_matches_the_library_calibration() -> None:
    # dp-accounting's own Gaussian calibration for one release at (1, 1e-5).
    sigma = dp_accounting.get_sigma_gaussian(1.0, 1e-5)
    z = calibrate_noise(1.0, 1e-5, accountant="rdp")
    # The analytic Gaussian is tighter than RDP, so RDP needs at least as much noise.
    assert z >= sigma * 0.999
    assert epsilon_spent([GaussianRelease(z)], 1e-5, accountant="rdp") <= 1.0


@pytest.mark.parametrize(("eps", "counts"), [(1.0, (4, 4, 4, 1)), (8.0, (10, 10, 10, 1)), (0.5, (1,))])
def test_calibration_never_exceeds_the_target(eps: float, counts: tuple[int, ...]) -> None:
    ratios = (1.0, 1.5, 0.7, 2.0)[: len(counts)]
    s = calibrate_noise(eps, 1e-5, ratios=ratios, counts=counts, accountant="rdp")
    spent = epsilon_spent([GaussianRelease(s * r, c) for r, c in zip(ratios, counts, strict=True)], 1e-5, accountant="rdp")
    assert spent <= eps
    assert spent > 0.98 * eps  # and it is the smallest such noise, within tolerance
    louder = epsilon_spent([GaussianRelease(0.97 * s * r, c) for r, c in zip(ratios, counts, strict=True)], 1e-5, accountant="rdp")
    assert louder > eps


def test_more_compositions_need_more_noise() -> None:
    assert calibrate_noise(4.0, 1e-5, counts=(20,), accountant="rdp") > calibrate_noise(4.0, 1e-5, counts=(5,), accountant="rdp")


def test_ledger_refuses_a_release_over_budget() -> None:
    z = calibrate_noise(2.0, 1e-5, counts=(3,), accountant="rdp")
    ledger = PrivacyLedger(2.0, 1e-5, "rdp")
    for _ in range(3):
        ledger.record([GaussianRelease(z)])
    assert ledger.spent() <= 2.0
    with pytest.raises(BudgetExceededError):
        ledger.record([GaussianRelease(z)])
    assert len(ledger.releases) == 3


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="delta"):
        epsilon_spent([GaussianRelease(1.0)], 0.0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        GaussianRelease(0.0)
    with pytest.raises(ValueError, match="accountant"):
        calibrate_noise(1.0, 1e-5, accountant="moments")  # type: ignore[arg-type]

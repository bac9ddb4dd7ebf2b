"""Privacy accounting for compositions of Gaussian mechanisms, delegated to Google's ``dp-accounting``."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

from fedgmm.exceptions import FedGMMError

Accountant = Literal["pld", "rdp"]
ACCOUNTANTS: tuple[str, ...] = ("pld", "rdp")

#: Relative tolerance of the noise calibration (in noise-multiplier space).
CALIBRATION_RTOL = 1e-4

#: Privacy-loss discretisation of the PLD accountant. Its estimate is pessimistic (an upper
#: bound on ε) at any interval; 1e-3 moves ε by < 1e-5 at ε ≈ 8 and is 10× faster than 1e-4.
PLD_DISCRETIZATION = 1e-3

#: Smallest noise multiplier calibration returns. Budgets that would allow less noise (ε of
#: several tens) get this much and spend less than their target; below it the PLD
#: accountant's discretisation gets slow and the guarantee is not worth stating.
MIN_NOISE_MULTIPLIER = 0.5

INSTALL_HINT = (
    "differential privacy needs the 'dp-accounting' package: install it with "
    "pip install 'fedgmm[privacy]' (or pip install 'dp-accounting>=0.4')."
)


def dp_accounting() -> ModuleType:
    """Import ``dp_accounting`` lazily, with an error that says how to install it."""
    try:
        import dp_accounting as module
    except ImportError as exc:  # pragma: no cover - the package is installed in CI
        raise ImportError(INSTALL_HINT) from exc
    return module


@dataclass(frozen=True)
class GaussianRelease:
    """``count`` releases of a Gaussian mechanism with noise multiplier ``σ / Δ₂``.

    Attributes
    ----------
    noise_multiplier : float
        Noise standard deviation divided by the release's L2 sensitivity.
    count : int
        How many times the mechanism is applied (iterations, rounds).
    """

    noise_multiplier: float
    count: int = 1

    def __post_init__(self) -> None:
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise ValueError(f"noise_multiplier must be positive and finite, got {self.noise_multiplier}.")
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}.")


def _check(epsilon: float | None, delta: float, accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {list(ACCOUNTANTS)}, got {accountant!r}.")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}.")
    if epsilon is not None and not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be positive and finite, got {epsilon}.")


def _fresh(accountant: str) -> Any:
    dpa = dp_accounting()
    if accountant == "pld":
        return dpa.pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    return dpa.rdp.RdpAccountant()


def composed_event(releases: Sequence[GaussianRelease]) -> Any:
    """The ``dp_accounting.DpEvent`` of the composition of ``releases``."""
    dpa = dp_accounting()
    events = [
        dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(r.noise_multiplier), r.count) for r in releases if r.count > 0
    ]
    return dpa.ComposedDpEvent(events)


def epsilon_spent(releases: Sequence[GaussianRelease], delta: float, *, accountant: Accountant = "pld") -> float:
    """ε at ``delta`` of the composition of ``releases`` (add/remove-one-row neighbours).

    Parameters
    ----------
    releases : sequence of GaussianRelease
        Each with its own noise multiplier and count.
    delta : float
    accountant : {"pld", "rdp"}
        ``dp_accounting.pld.PLDAccountant`` (tight) or ``dp_accounting.rdp.RdpAccountant``.

    Returns
    -------
    float
        0.0 for an empty composition.
    """
    _check(None, delta, accountant)
    if not any(r.count > 0 for r in releases):
        return 0.0
    acc = _fresh(accountant)
    acc.compose(composed_event(releases))
    return float(acc.get_epsilon(delta))


def calibrate_noise(
    epsilon: float,
    delta: float,
    *,
    ratios: Sequence[float] = (1.0,),
    counts: Sequence[int] = (1,),
    accountant: Accountant = "pld",
) -> float:
    """Smallest scale ``s`` so that mechanisms with noise multipliers ``s·ratios[i]``, each applied
    ``counts[i]`` times, compose to at most ``(epsilon, delta)``.

    The search is ``dp_accounting.calibrate_dp_mechanism`` (Brent's method over the library's
    accountant); the result is then checked and, if the root finder landed a hair on the
    unsafe side, raised until the accountant's ε is within the target.

    Parameters
    ----------
    epsilon, delta : float
        Target budget.
    ratios : sequence of float
        Relative noise multiplier of each mechanism (the budget split: a larger ratio spends less).
    counts : sequence of int
        Compositions of each mechanism, same length as ``ratios``.
    accountant : {"pld", "rdp"}

    Returns
    -------
    float
        ``s``; mechanism ``i`` gets noise multiplier ``s · ratios[i]``.
    """
    _check(epsilon, delta, accountant)
    if len(ratios) != len(counts) or not ratios:
        raise ValueError("calibrate_noise needs one count per ratio, and at least one mechanism.")
    if any(r <= 0 for r in ratios) or any(c < 0 for c in counts) or sum(counts) == 0:
        raise ValueError(f"ratios must be positive and counts non-negative with a positive sum; got {ratios}, {counts}.")
    return _calibrate(float(epsilon), float(delta), tuple(float(r) for r in ratios), tuple(int(c) for c in counts), accountant)


@functools.lru_cache(maxsize=256)
def _calibrate(
    epsilon: float, delta: float, ratios: tuple[float, ...], counts: tuple[int, ...], accountant: str
) -> float:
    dpa = dp_accounting()

    def releases(scale: float) -> list[GaussianRelease]:
        return [GaussianRelease(scale * r, c) for r, c in zip(ratios, counts, strict=True)]

    def event(scale: float) -> Any:
        return composed_event(releases(max(scale, 1e-6)))

    def eps(scale: float) -> float:
        return epsilon_spent(releases(scale), delta, accountant=accountant)  # type: ignore[arg-type]

    # An explicit bracket: the library's default search starts near 0, where the PLD
    # discretisation of a near-noiseless Gaussian does not fit in memory.
    floor = MIN_NOISE_MULTIPLIER / min(ratios)
    hi = max(floor, math.sqrt(sum(counts)) / epsilon)
    while eps(hi) > epsilon:
        hi *= 2.0
    lo = hi
    while lo > floor and eps(lo) <= epsilon:
        lo = max(lo / 2.0, floor)
    if eps(lo) <= epsilon:
        return lo
    scale = float(
        dpa.calibrate_dp_mechanism(
            lambda: _fresh(accountant),
            lambda v: composed_event(releases(v)),
            epsilon,
            delta,
            bracket_interval=dpa.ExplicitBracketInterval(lo, hi),
            tol=CALIBRATION_RTOL * lo,
        )
    )
    step = CALIBRATION_RTOL * lo
    while eps(scale) > epsilon:
        scale += step
        step *= 2.0
    return scale


class BudgetExceededError(FedGMMError, RuntimeError):
    """A release would take a client over its (ε, δ) budget; it was not made."""


@dataclass
class PrivacyLedger:
    """Bookkeeping of the Gaussian releases one client has made, against a fixed budget.

    Parameters
    ----------
    epsilon, delta : float
        The client's budget for the whole run.
    accountant : {"pld", "rdp"}

    Attributes
    ----------
    releases : list of GaussianRelease
        What has been spent so far, in order.
    """

    epsilon: float
    delta: float
    accountant: Accountant = "pld"
    releases: list[GaussianRelease] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(self.epsilon, self.delta, self.accountant)

    def spent(self) -> float:
        """ε at ``delta`` of everything released so far."""
        return epsilon_spent(self.releases, self.delta, accountant=self.accountant)

    def would_spend(self, extra: Sequence[GaussianRelease]) -> float:
        """ε after also releasing ``extra``."""
        return epsilon_spent([*self.releases, *extra], self.delta, accountant=self.accountant)

    def record(self, extra: Sequence[GaussianRelease]) -> float:
        """Record ``extra`` if the budget allows; return the new spent ε.

        Raises
        ------
        BudgetExceededError
            If the release would exceed ``epsilon``; nothing is recorded then.
        """
        after = self.would_spend(extra)
        if after > self.epsilon:
            raise BudgetExceededError(
                f"this release would spend epsilon = {after:.4g} > budget {self.epsilon:.4g} "
                f"(delta = {self.delta:g}); stop here or raise the noise."
            )
        self.releases.extend(extra)
        return after

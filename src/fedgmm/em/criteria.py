"""Information criteria (BIC, AIC) from a total log-likelihood."""

from __future__ import annotations

import numpy as np

from fedgmm.mixture import MixtureState


def bic(state: MixtureState, total_log_likelihood: float, n_samples: float) -> float:
    """Bayesian information criterion ``−2 log L + p log n`` (lower is better).

    With row weights, ``log L = Σ w log p`` and ``n = Σ w`` (the effective count).
    """
    return float(-2.0 * total_log_likelihood + state.n_parameters() * np.log(n_samples))


def aic(state: MixtureState, total_log_likelihood: float) -> float:
    """Akaike information criterion ``−2 log L + 2 p`` (lower is better)."""
    return float(-2.0 * total_log_likelihood + 2.0 * state.n_parameters())

"""Stepwise (online) EM: running sufficient statistics blended chunk by chunk."""

from __future__ import annotations

from fedgmm.em.stats import SufficientStatistics


def step_size(n_steps: int, learning_offset: float, learning_decay: float) -> float:
    """Weight ``η_t = (t0 + t)^(−κ)`` of the ``t``-th chunk after the first (``t ≥ 1``).

    With ``κ`` (``learning_decay``) in (0.5, 1], ``Σ η_t = ∞`` and ``Σ η_t² < ∞``: the
    conditions under which stepwise EM converges to a stationary point of the likelihood
    (Cappé & Moulines 2009). ``t0`` (``learning_offset``) ≥ 0 damps the early steps.
    The first chunk has ``η = 1`` (it replaces the empty statistics).
    """
    if n_steps < 1:
        return 1.0
    return float((learning_offset + n_steps) ** (-learning_decay))


def blend(
    running: SufficientStatistics | None,
    chunk: SufficientStatistics,
    chunk_weight: float,
    eta: float,
) -> SufficientStatistics:
    """``s ← (1 − η) s + η ŝ``, with ``ŝ`` the chunk's statistics per unit of weight.

    Parameters
    ----------
    running : SufficientStatistics or None
        Current running statistics (normalised: ``Σ nk = 1``), or None before the first chunk.
    chunk : SufficientStatistics
        E-step statistics of the chunk under the current parameters, about the same shift.
    chunk_weight : float
        ``Σ w`` of the chunk (its row count without weights), > 0.
    eta : float
        Step size in (0, 1]; ignored (taken as 1) when ``running`` is None.

    Returns
    -------
    SufficientStatistics
        Normalised running statistics; ``log_likelihood`` is the same blend of the chunks'
        mean log-likelihoods per unit weight and ``n_samples`` counts the rows seen.
        :func:`fedgmm.em.m_step` of it gives the stepwise-EM parameters (the M-step does
        not depend on the scale of the statistics).
    """
    if chunk_weight <= 0:
        raise ValueError(f"a chunk must carry positive total weight, got {chunk_weight}.")
    scale = 1.0 / chunk_weight
    if running is None:
        return SufficientStatistics(
            nk=chunk.nk * scale,
            sx=chunk.sx * scale,
            sxx=chunk.sxx * scale,
            n_samples=chunk.n_samples,
            log_likelihood=chunk.log_likelihood * scale,
            shift=chunk.shift,
            covariance_type=chunk.covariance_type,
        )
    if not 0.0 < eta <= 1.0:
        raise ValueError(f"the step size must be in (0, 1], got {eta}.")
    keep, take = 1.0 - eta, eta * scale
    return SufficientStatistics(
        nk=keep * running.nk + take * chunk.nk,
        sx=keep * running.sx + take * chunk.sx,
        sxx=keep * running.sxx + take * chunk.sxx,
        n_samples=running.n_samples + chunk.n_samples,
        log_likelihood=keep * running.log_likelihood + take * chunk.log_likelihood,
        shift=running.shift,
        covariance_type=running.covariance_type,
    )

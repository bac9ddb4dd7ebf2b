"""The EM engine: E-step to additive sufficient statistics, M-step, initialisation, fit loop, online steps."""

from fedgmm.em.criteria import aic, bic
from fedgmm.em.fit import FitResult, fit_em, run_em
from fedgmm.em.init import initial_state, initial_statistics
from fedgmm.em.mstep import m_step
from fedgmm.em.online import blend, step_size
from fedgmm.em.stats import (
    SufficientStatistics,
    e_step,
    log_responsibilities,
    score_samples,
    statistics_from_responsibilities,
)

__all__ = [
    "FitResult",
    "SufficientStatistics",
    "aic",
    "bic",
    "blend",
    "e_step",
    "fit_em",
    "initial_state",
    "initial_statistics",
    "log_responsibilities",
    "m_step",
    "run_em",
    "score_samples",
    "statistics_from_responsibilities",
    "step_size",
]

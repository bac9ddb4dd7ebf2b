"""Robust server steps: plausibility checks, bounded influence and robust aggregation of client contributions.

Pure functions over *decoded* contributions (local mixtures and counts, E-step
statistics, preprocessing moments). Each returns what to merge and one
:class:`ClientDecision` per client saying what was done with it and why. Nothing here
talks to a transport.
"""

from fedgmm.federated.robust.counts import (
    DEFAULT_MAX_CLIENT_WEIGHT,
    DEFAULT_MAX_COUNT_RATIO,
    MAX_SYNTHETIC_ELEMENTS,
    MAX_SYNTHETIC_ROWS,
    CountCaps,
    SyntheticSize,
    bounded_synthetic_size,
    cap_counts,
)
from fedgmm.federated.robust.mixtures import (
    ScreenedModels,
    ScreenResult,
    check_mixtures,
    component_features,
    distance_filter,
    mixture_distances,
    screen_local_models,
)
from fedgmm.federated.robust.moments import CombinedMoments, combine_moments
from fedgmm.federated.robust.records import ACTIONS, ClientDecision, merge_decisions
from fedgmm.federated.robust.settings import RobustSettings
from fedgmm.federated.robust.statistics import (
    CombinedStatistics,
    check_statistics,
    combine_statistics,
    expected_complete_loglik,
    scale_statistics,
)

__all__ = [
    "ACTIONS",
    "DEFAULT_MAX_CLIENT_WEIGHT",
    "DEFAULT_MAX_COUNT_RATIO",
    "MAX_SYNTHETIC_ELEMENTS",
    "MAX_SYNTHETIC_ROWS",
    "ClientDecision",
    "CombinedMoments",
    "CombinedStatistics",
    "CountCaps",
    "RobustSettings",
    "ScreenResult",
    "ScreenedModels",
    "SyntheticSize",
    "bounded_synthetic_size",
    "cap_counts",
    "check_mixtures",
    "check_statistics",
    "combine_moments",
    "combine_statistics",
    "component_features",
    "distance_filter",
    "expected_complete_loglik",
    "merge_decisions",
    "mixture_distances",
    "scale_statistics",
    "screen_local_models",
]

"""The robust-aggregation hyper-parameters of a method run, in one frozen record."""

from __future__ import annotations

from dataclasses import dataclass

from fedgmm.federated.robust.counts import (
    DEFAULT_MAX_CLIENT_WEIGHT,
    DEFAULT_MAX_COUNT_RATIO,
    MAX_SYNTHETIC_ELEMENTS,
    MAX_SYNTHETIC_ROWS,
)


@dataclass(frozen=True)
class RobustSettings:
    """How the server defends itself; ``RobustSettings(enabled=False)`` is the paper's plain recipe.

    Attributes
    ----------
    enabled : bool
        Run the plausibility checks, the distance filter and the caps (default). When
        False, contributions that pass the wire checks are merged as sent — but the
        synthetic set stays bounded by ``max_synthetic_rows``/``max_synthetic_elements``,
        since no setting should let a claim size the server's allocations.
    max_client_weight : float or None
        Largest share of the federation's weight any one client gets.
    max_count_ratio : float or None
        Largest multiple of the others' median count a claim is counted at.
    distance_filter : bool
        FedGenGMM: the DFMR-style filter over uploaded mixtures.
    max_component_share : float or None
        Federated EM: cap on any client's share of each ``N_k`` (off by default: under
        strong heterogeneity one honest client may own a component).
    max_synthetic_rows, max_synthetic_elements : int
        Absolute ceilings of the synthetic set.
    """

    enabled: bool = True
    max_client_weight: float | None = DEFAULT_MAX_CLIENT_WEIGHT
    max_count_ratio: float | None = DEFAULT_MAX_COUNT_RATIO
    distance_filter: bool = True
    max_component_share: float | None = None
    max_synthetic_rows: int = MAX_SYNTHETIC_ROWS
    max_synthetic_elements: int = MAX_SYNTHETIC_ELEMENTS

    def __post_init__(self) -> None:
        if self.max_client_weight is not None and not 0 < self.max_client_weight <= 1:
            raise ValueError(f"max_client_weight must be in (0, 1] or None, got {self.max_client_weight!r}.")
        if self.max_count_ratio is not None and not self.max_count_ratio >= 1:
            raise ValueError(f"max_count_ratio must be >= 1 or None, got {self.max_count_ratio!r}.")
        if self.max_component_share is not None and not 0 < self.max_component_share <= 1:
            raise ValueError(f"max_component_share must be in (0, 1] or None, got {self.max_component_share!r}.")
        if self.max_synthetic_rows < 1 or self.max_synthetic_elements < 1:
            raise ValueError("max_synthetic_rows and max_synthetic_elements must be >= 1.")

"""Per-client decisions of the robust server steps, and the robust location/scale they share."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Action = Literal["rejected", "capped", "down-weighted", "kept"]
ACTIONS: tuple[Action, ...] = ("kept", "down-weighted", "capped", "rejected")
_SEVERITY = {a: i for i, a in enumerate(ACTIONS)}

#: Relative checks (against the median of the others) need at least this many clients.
MIN_CLIENTS_TO_COMPARE = 3
#: Normal-consistent scale of the median absolute deviation.
MAD_SCALE = 1.4826


@dataclass(frozen=True)
class ClientDecision:
    """What a robust server step did with one client's contribution, and why.

    Attributes
    ----------
    client_id : int
    action : {"rejected", "capped", "down-weighted", "kept"}
        ``rejected``: left out; ``capped``: its claimed count or weight share was cut;
        ``down-weighted``: part of its contribution was scaled down; ``kept``: used as sent.
    reason : str
        Empty for ``kept``; otherwise the check that fired, with the numbers.
    """

    client_id: int
    action: Action
    reason: str = ""


def client_id_list(n: int, client_ids: Sequence[int] | None) -> list[int]:
    """``client_ids`` as a list of ints, ``0 … n−1`` when not given; ValueError on a length mismatch."""
    if client_ids is None:
        return list(range(n))
    ids = [int(c) for c in client_ids]
    if len(ids) != n:
        raise ValueError(f"got {len(ids)} client ids for {n} contributions.")
    return ids


def merge_decisions(client_ids: Sequence[int], *groups: Iterable[ClientDecision]) -> tuple[ClientDecision, ...]:
    """One decision per client id (in ``client_ids`` order): the most severe action, reasons joined."""
    actions: dict[int, Action] = {c: "kept" for c in client_ids}
    reasons: dict[int, list[str]] = {c: [] for c in client_ids}
    for group in groups:
        for dec in group:
            if _SEVERITY[dec.action] > _SEVERITY[actions[dec.client_id]]:
                actions[dec.client_id] = dec.action
            if dec.reason and dec.reason not in reasons[dec.client_id]:
                reasons[dec.client_id].append(dec.reason)
    return tuple(ClientDecision(c, actions[c], "; ".join(reasons[c])) for c in client_ids)


def robust_center_scale(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD (normal-consistent) along ``axis``, ignoring non-finite entries."""
    values = np.asarray(values, dtype=np.float64)
    masked = np.where(np.isfinite(values), values, np.nan)
    with warnings.catch_warnings():  # an all-NaN slice is a NaN, turned into 0 below
        warnings.simplefilter("ignore", RuntimeWarning)
        center = np.nanmedian(masked, axis=axis)
        mad = MAD_SCALE * np.nanmedian(np.abs(masked - np.expand_dims(center, axis)), axis=axis)
    return np.nan_to_num(center), np.nan_to_num(mad)


def median_of_others(values: np.ndarray) -> np.ndarray:
    """For each entry, the median of all the *other* entries (``(n,)`` → ``(n,)``, O(n log n)).

    With a single entry there are no others; its own value is returned.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if n == 1:
        return values.copy()
    order = np.argsort(values, kind="stable")
    ranked = values[order]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    m = n - 1

    def pick(q: int) -> np.ndarray:
        # The q-th smallest of the others: skip the entry's own rank.
        return np.where(q < rank, ranked[q], ranked[np.minimum(q + 1, n - 1)])

    if m % 2 == 1:
        out = pick(m // 2)
    else:
        out = 0.5 * (pick(m // 2 - 1) + pick(m // 2))
    return np.asarray(out, dtype=np.float64)

"""The results file of a study: one JSON object per line, one line per (cell, seed, method)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.jsonl"


@dataclass
class RoundPoint:
    """One federated EM round as reported: quality and cumulative bytes so far."""

    round: int
    train_loglik: float
    test_loglik: float
    bytes_up: int
    bytes_down: int


@dataclass
class ResultRow:
    """One method's outcome on one cell of a study grid, for one seed.

    Attributes
    ----------
    key : str
        Stable id of the (cell, seed, method) — what the resume cache looks up.
    study, dataset, partitioner : str
    alpha : float or None
        Dirichlet concentration (None for partitioners without one).
    n_clients, seed : int
    method : str
        ``centralized``, ``local``, ``union``, ``fedgengmm``, ``fedem`` or ``hybrid``.
    label : str
        What plots and tables call it (e.g. ``"FedGenGMM"``, ``"hybrid +3"``).
    n_components : int
    covariance_type : str
    local_components : str
        ``"5"`` (fixed) or ``"1-10"`` (BIC range).
    synthetic_size : float or None
        Multiple of Σn_c (or a row count when > 1000 and integral, as configured).
    max_rounds : int or None
    contamination : float
        Fraction of clients whose data was contaminated (robustness study), 0 otherwise.
    test_loglik : float
        Mean log-likelihood per test sample (nats); for ``local``, the mean over clients of
        each local model's score on the global test set.
    auc_pr, auroc : float or None
        Out-of-distribution detection with ``−log p(x)`` as the score (None when the
        dataset defines no anomalies).
    rounds, bytes_up, bytes_down : int
        Measured communication (0 for the baselines).
    client_seconds, server_seconds, wall_seconds : float
    n_clients_used : int
        Clients whose contribution was merged.
    history : list of RoundPoint
        Federated EM rounds (empty for one-shot methods).
    extra : dict
        Method-specific facts (synthetic rows, chosen K per client, …).
    """

    key: str
    study: str
    dataset: str
    partitioner: str
    alpha: float | None
    n_clients: int
    seed: int
    method: str
    label: str
    n_components: int
    covariance_type: str
    local_components: str
    synthetic_size: float | None
    max_rounds: int | None
    contamination: float
    test_loglik: float
    auc_pr: float | None
    auroc: float | None
    rounds: int
    bytes_up: int
    bytes_down: int
    client_seconds: float
    server_seconds: float
    wall_seconds: float
    n_clients_used: int
    history: list[RoundPoint] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """One line of JSON (NaN/inf written as null)."""
        return json.dumps(_finite(asdict(self)), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRow:
        """Parse a row, naming a missing or unknown field."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"results row has unknown field(s) {sorted(unknown)}.")
        required = {f.name for f in fields(cls) if f.name not in ("history", "extra")}
        missing = required - set(data)
        if missing:
            raise ValueError(f"results row lacks field(s) {sorted(missing)}.")
        values = dict(data)
        values["history"] = [RoundPoint(**p) for p in data.get("history") or []]
        values["test_loglik"] = math.nan if data["test_loglik"] is None else float(data["test_loglik"])
        return cls(**values)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def append_rows(path: Path, rows: Iterable[ResultRow]) -> None:
    """Append rows to a results file (one line each, flushed: an interruption loses nothing written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(row.to_json() + "\n")
        fh.flush()


def read_rows(path: Path) -> Iterator[ResultRow]:
    """Rows of a results file; a truncated last line (an interrupted write) is skipped.

    Raises
    ------
    ValueError
        A malformed line anywhere but at the end, naming the line number.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                return  # the write of the last row was cut off
            raise ValueError(f"{path}:{number}: not a JSON results row ({exc}).") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}:{number}: not a JSON object.")
        try:
            yield ResultRow.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{number}: {exc}") from exc

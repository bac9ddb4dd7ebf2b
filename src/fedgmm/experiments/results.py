"""The results file of a study: one JSON object per line, one line per (cell, seed, method)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.jsonl"
INCOMPLETE_TAIL = "the last line is incomplete — the study was interrupted; rerun it to resume"


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

    @property
    def failed(self) -> bool:
        """True for the row of a run that failed (its error is in ``extra["error"]``)."""
        return "error" in self.extra

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


class ResultsFileError(ValueError):
    """A results file holds an unreadable row or ends in a cut line.

    Attributes
    ----------
    path : Path
    n_rows : int
        Complete, readable rows in the file.
    bad_lines : list of BadLine
        The unreadable lines (the cut last line included).
    truncated : bool
        The last line is incomplete (an interrupted write).
    """

    def __init__(self, message: str, *, path: Path, n_rows: int, bad_lines: list[BadLine], truncated: bool) -> None:
        super().__init__(message)
        self.path = path
        self.n_rows = n_rows
        self.bad_lines = bad_lines
        self.truncated = truncated


@dataclass(frozen=True)
class BadLine:
    """An unreadable line of a results file: its 1-based number and why."""

    line: int
    reason: str


@dataclass
class ResultsRead:
    """What :func:`read_results` found in a results file.

    Attributes
    ----------
    path : Path
    rows : list of ResultRow
        Every readable row, in file order.
    bad_lines : list of BadLine
        Lines that could not be read (only non-empty with ``skip_bad=True``).
    truncated : bool
        The last line is incomplete: the study was interrupted while writing it.
    """

    path: Path
    rows: list[ResultRow]
    bad_lines: list[BadLine] = field(default_factory=list)
    truncated: bool = False

    @property
    def n_rows(self) -> int:
        """Number of readable rows."""
        return len(self.rows)

    def problems(self) -> list[str]:
        """One human sentence per problem (empty when the file is clean)."""
        return _problems(self.path, len(self.rows), self.bad_lines, self.truncated)


def _problems(path: Path, n_rows: int, bad: list[BadLine], truncated: bool) -> list[str]:
    out = []
    other = [b for b in bad if not (truncated and b is bad[-1])]
    if other:
        shown = "; ".join(f"line {b.line}: {b.reason}" for b in other[:3])
        more = f"; and {len(other) - 3} more" if len(other) > 3 else ""
        out.append(f"{path}: {len(other)} unreadable row(s) ({shown}{more}).")
    if truncated:
        out.append(f"{path}: {n_rows} complete row(s); {INCOMPLETE_TAIL}.")
    return out


def _parse_line(raw: bytes) -> ResultRow:
    """One row from one line's bytes; ValueError (or TypeError) says why not."""
    text = raw.decode("utf-8")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object (a {type(data).__name__})")
    return ResultRow.from_dict(data)


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, json.JSONDecodeError):
        return f"not a JSON results row ({exc})"
    return str(exc)


def read_results(path: str | os.PathLike[str], *, skip_bad: bool = False) -> ResultsRead:
    """Read a results file, accounting for every line.

    Parameters
    ----------
    path : str or os.PathLike
    skip_bad : bool, default False
        Skip unreadable lines (recorded in ``bad_lines``) instead of raising.

    Returns
    -------
    ResultsRead
        The rows, the skipped lines and whether the last line was cut.

    Raises
    ------
    ResultsFileError
        Without ``skip_bad``: on any unreadable line, naming every one of them, and
        on an incomplete last line ("the study was interrupted; rerun it to resume").
    OSError
        If the file cannot be read.
    """
    p = Path(path)
    data = p.read_bytes()
    lines = data.split(b"\n")
    ends_clean = not data or data.endswith(b"\n")
    if ends_clean:
        lines = lines[:-1]  # the empty string after the final newline
    rows: list[ResultRow] = []
    bad: list[BadLine] = []
    truncated = False
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rows.append(_parse_line(raw))
        except (UnicodeDecodeError, TypeError, ValueError) as exc:
            bad.append(BadLine(number, _reason(exc)))
            truncated = not ends_clean and number == len(lines)
    if bad and not skip_bad:
        problems = _problems(p, len(rows), bad, truncated)
        hint = "" if len(bad) == 1 and truncated else " Fix or remove those lines, or skip them explicitly."
        raise ResultsFileError(
            " ".join(problems) + hint, path=p, n_rows=len(rows), bad_lines=bad, truncated=truncated
        )
    return ResultsRead(p, rows, bad, truncated)


def read_rows(path: str | os.PathLike[str], *, skip_bad: bool = False) -> list[ResultRow]:
    """The rows of a results file (see :func:`read_results`, which also reports what was skipped).

    Raises
    ------
    ResultsFileError
        Without ``skip_bad``: an unreadable line anywhere, or an incomplete last line.
    """
    return read_results(path, skip_bad=skip_bad).rows


def completed_keys(rows: Iterable[ResultRow]) -> set[str]:
    """Keys whose last row is a success: what a resumed study may skip (failed runs are retried)."""
    last: dict[str, ResultRow] = {}
    for row in rows:
        last[row.key] = row
    return {key for key, row in last.items() if not row.failed}


def repair_truncated_tail(path: str | os.PathLike[str]) -> int:
    """Cut an incomplete last line off a results file, so the next append starts a clean line.

    A last line without its newline that still parses as a row gets the newline added
    instead (nothing is removed). Does nothing to a missing, empty or clean file.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    removed : int
        Bytes removed (0 when nothing was cut).
    """
    p = Path(path)
    if not p.exists():
        return 0
    with p.open("r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        # Walk back to the last newline, one block at a time.
        block, pos, tail = 1 << 16, size, b""
        while pos > 0:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            tail = fh.read(step) + tail
            cut = tail.rfind(b"\n")
            if cut >= 0:
                start = pos + cut + 1
                tail = tail[cut + 1 :]
                break
        else:
            start = 0
        if not tail:
            return 0  # ends with a newline: clean
        try:
            _parse_line(tail)
        except (UnicodeDecodeError, TypeError, ValueError):
            fh.truncate(start)
            fh.flush()
            os.fsync(fh.fileno())
            return size - start
        fh.seek(0, os.SEEK_END)
        fh.write(b"\n")
        fh.flush()
        os.fsync(fh.fileno())
        return 0


def append_rows(path: str | os.PathLike[str], rows: Iterable[ResultRow]) -> int:
    """Append rows to a results file (one line each, flushed: an interruption loses nothing written).

    An incomplete last line left by an interrupted write is cut off first
    (:func:`repair_truncated_tail`), so new rows never fuse with it.

    Returns
    -------
    removed : int
        Bytes of an incomplete last line removed before appending (0 normally).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    removed = repair_truncated_tail(p)
    with p.open("a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(row.to_json() + "\n")
        fh.flush()
    return removed

"""Results files: every unreadable line is reported, a cut last line is named and repaired."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedgmm.experiments.results import (
    INCOMPLETE_TAIL,
    ResultRow,
    ResultsFileError,
    append_rows,
    completed_keys,
    read_results,
    read_rows,
    repair_truncated_tail,
)


def row(i: int, *, error: str | None = None) -> ResultRow:
    return ResultRow(
        key=f"cell-{i}", study="t", dataset="digits", partitioner="dirichlet", alpha=1.0, n_clients=3,
        seed=i, method="fedgengmm", label="FedGenGMM", n_components=4, covariance_type="full",
        local_components="1-4", synthetic_size=5.0, max_rounds=None, contamination=0.0,
        test_loglik=math.nan if error else -10.0 - i, auc_pr=None, auroc=None, rounds=1, bytes_up=100,
        bytes_down=200, client_seconds=0.1, server_seconds=0.2, wall_seconds=0.3, n_clients_used=3,
        extra={"error": error} if error else {},
    )  # fmt: skip


def written(tmp_path: Path, n: int = 5) -> Path:
    path = tmp_path / "results.jsonl"
    append_rows(path, [row(i) for i in range(n)])
    return path


def test_clean_file_round_trip(tmp_path: Path) -> None:
    path = written(tmp_path)
    read = read_results(path)
    assert [r.key for r in read.rows] == [f"cell-{i}" for i in range(5)]
    assert read.bad_lines == [] and not read.truncated and read.problems() == []
    assert read_rows(path) == read.rows


def test_cut_last_line_is_reported_with_the_row_count(tmp_path: Path) -> None:
    path = written(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-200])  # a killed study, a full disk
    with pytest.raises(ResultsFileError) as info:
        read_rows(path)
    message = str(info.value)
    assert "4 complete row(s)" in message and INCOMPLETE_TAIL in message
    assert "rerun it to resume" in message
    assert info.value.truncated and info.value.n_rows == 4 and info.value.bad_lines[0].line == 5
    read = read_results(path, skip_bad=True)
    assert len(read.rows) == 4 and read.truncated
    assert read.problems() == [f"{path}: 4 complete row(s); {INCOMPLETE_TAIL}."]


@pytest.mark.parametrize("content", [b'{"key": "cell-0", "stu', b"\xff\xfe garbage"])
def test_file_of_only_a_broken_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(content)
    with pytest.raises(ResultsFileError, match=r"0 complete row\(s\); the last line is incomplete"):
        read_rows(path)
    assert read_results(path, skip_bad=True).rows == []


def test_every_unreadable_row_is_named(tmp_path: Path) -> None:
    path = written(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = "not json\n"
    lines[3] = '{"key": "x"}\n'
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(ResultsFileError) as info:
        read_rows(path)
    message = str(info.value)
    assert "2 unreadable row(s)" in message and "line 2: not a JSON results row" in message
    assert "line 4: results row lacks field(s)" in message and "skip them" in message
    assert not info.value.truncated and [b.line for b in info.value.bad_lines] == [2, 4]
    read = read_results(path, skip_bad=True)
    assert [r.key for r in read.rows] == ["cell-0", "cell-2", "cell-4"]
    assert [b.line for b in read.bad_lines] == [2, 4]


def test_bad_line_with_newline_at_end_is_not_called_truncated(tmp_path: Path) -> None:
    path = written(tmp_path, 2)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("[1, 2]\n")
    with pytest.raises(ResultsFileError, match="line 3: not a JSON object") as info:
        read_rows(path)
    assert not info.value.truncated and INCOMPLETE_TAIL not in str(info.value)


def test_empty_file_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text("", encoding="utf-8")
    assert read_results(path).rows == []
    append_rows(path, [row(0)])
    with path.open("a", encoding="utf-8") as fh:
        fh.write("\n   \n")
    assert len(read_rows(path)) == 1


def test_repair_cuts_the_incomplete_line_only(tmp_path: Path) -> None:
    path = written(tmp_path, 3)
    clean = path.read_bytes()
    assert repair_truncated_tail(path) == 0 and path.read_bytes() == clean
    last_start = clean.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(clean[:-30])
    removed = repair_truncated_tail(path)
    assert removed == len(clean) - 30 - last_start
    assert path.read_bytes() == clean[:last_start]
    assert [r.key for r in read_rows(path)] == ["cell-0", "cell-1"]
    assert repair_truncated_tail(tmp_path / "missing.jsonl") == 0


def test_repair_adds_a_missing_newline_after_a_complete_row(tmp_path: Path) -> None:
    path = written(tmp_path, 2)
    clean = path.read_bytes()
    path.write_bytes(clean[:-1])
    assert repair_truncated_tail(path) == 0
    assert path.read_bytes() == clean


def test_repair_of_a_file_holding_one_cut_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"key": "cell-0", "stu')
    assert repair_truncated_tail(path) == 22
    assert path.read_bytes() == b""


def test_append_after_a_cut_line_keeps_every_row_readable(tmp_path: Path) -> None:
    path = written(tmp_path, 3)
    path.write_bytes(path.read_bytes()[:-50])
    removed = append_rows(path, [row(2), row(3)])
    assert removed > 0
    assert [r.key for r in read_rows(path)] == ["cell-0", "cell-1", "cell-2", "cell-3"]


def test_only_successes_count_as_done() -> None:
    rows = [row(0), row(1, error="ValueError: alpha must be > 0"), row(2, error="boom"), row(2)]
    assert rows[1].failed and not rows[0].failed
    assert completed_keys(rows) == {"cell-0", "cell-2"}
    assert completed_keys([row(3), row(3, error="later failure")]) == set()

"""``fedgmm report`` fails on unreadable rows (unless --skip-bad), on empty files, and names a cut last line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedgmm.cli import app
from fedgmm.experiments.config import parse_config
from fedgmm.experiments.study import run_study

runner = CliRunner()

TINY = {
    "name": "tiny", "datasets": ["blobs"], "methods": ["centralized", "fedgengmm"], "seeds": [0],
    "dataset_options": {"blobs": {"n_samples": 300}},
    "partition": {"num_partitions": 3, "min_partition_size": 10},
    "model": {"n_components": 2, "local_components": 2},
}  # fmt: skip


def flat(result: Any) -> str:
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def results_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("study")
    outcome = run_study(parse_config(TINY), out, show_progress=False, write_report=False)
    return outcome.results_path.read_bytes()


def test_whole_file_reports(tmp_path: Path, results_bytes: bytes) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(results_bytes)
    result = runner.invoke(app, ["report", str(path)])
    assert result.exit_code == 0, result.output


def test_cut_last_line_fails_and_says_so(tmp_path: Path, results_bytes: bytes) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(results_bytes[:-200])
    result = runner.invoke(app, ["report", str(path)])
    assert result.exit_code != 0
    assert "1 complete row(s); the last line is incomplete" in flat(result) and "--skip-bad" in flat(result)
    skipped = runner.invoke(app, ["report", str(path), "--skip-bad"])
    assert skipped.exit_code == 0, skipped.output
    assert "incomplete" in flat(skipped)


def test_bad_middle_line_fails(tmp_path: Path, results_bytes: bytes) -> None:
    path = tmp_path / "results.jsonl"
    first, rest = results_bytes.split(b"\n", 1)
    path.write_bytes(first + b"\n{not json\n" + rest)
    result = runner.invoke(app, ["report", str(path)])
    assert result.exit_code != 0 and "line 2" in flat(result)


@pytest.mark.parametrize("content", [b"", b'{"key": "abc", "stud'])
def test_empty_or_only_broken_file_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(content)
    for extra in ([], ["--skip-bad"]):
        result = runner.invoke(app, ["report", str(path), *extra])
        assert result.exit_code == 2 and "no readable result row" in flat(result)

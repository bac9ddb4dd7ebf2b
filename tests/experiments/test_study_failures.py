"""Studies fail loudly: out-of-range config values, failed runs (non-zero exit, retried), cut results files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedgmm.cli import app
from fedgmm.experiments import study as study_module
from fedgmm.experiments.config import ConfigError, load_config
from fedgmm.experiments.results import read_rows
from fedgmm.experiments.study import run_study

runner = CliRunner()

TINY = """
name = "tiny"
datasets = ["blobs"]
methods = ["centralized", "fedgengmm"]
seeds = [0]
[dataset_options.blobs]
n_samples = 300
[partition]
num_partitions = 3
alpha = [1.0]
min_partition_size = 10
[model]
n_components = 2
local_components = 2
"""


def flat(result: Any) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("alpha = [1.0]", "alpha = [-1.0]", "[partition] alpha = -1.0"),
        ("alpha = [1.0]", "alpha = [0.0]", "[partition] alpha = 0.0"),
        ("num_partitions = 3", "num_partitions = 0", "[partition] num_partitions = 0"),
        ("seeds = [0]", "seeds = [0, -2]", "seeds = -2"),
        ('local_components = 2', 'local_components = 2\n[sweep]\nn_components = [2, -4]', "[sweep] n_components = -4"),
        ("n_components = 2", "n_components = -4", "n_components must be >= 1, got -4"),
    ],
)
def test_out_of_range_values_are_refused_when_read(tmp_path: Path, old: str, new: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, TINY.replace(old, new)))
    assert key in str(info.value)


def test_cli_names_the_key_and_the_range(tmp_path: Path) -> None:
    result = runner.invoke(app, ["study", str(write(tmp_path, TINY.replace("[1.0]", "[-1.0]"))), "--no-progress"])
    assert result.exit_code == 2
    assert "[partition] alpha = -1.0" in flat(result) and "> 0" in flat(result)


def _failing_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("no cell today")

    monkeypatch.setattr(study_module, "prepare_cell", broken)


def test_failed_runs_exit_non_zero_and_are_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_cells(monkeypatch)
    out = tmp_path / "out"
    result = runner.invoke(app, ["study", str(write(tmp_path, TINY)), "--out", str(out), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "2 run(s) failed" in flat(result) and "no cell today" in flat(result)
    assert (out / "report.md").is_file()


def test_failed_runs_are_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(write(tmp_path, TINY))
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _failing_cells(m)
        first = run_study(config, out, show_progress=False, write_report=False)
    assert first.failed == 2
    second = run_study(config, out, show_progress=False, write_report=False)
    assert (second.computed, second.cached, second.failed) == (2, 0, 0)
    rows = read_rows(second.results_path)
    assert len(rows) == 2 and not any(r.failed for r in rows)
    assert len(read_rows(out / "results.failed.jsonl")) == 2  # kept beside, never deleted
    third = run_study(config, out, show_progress=False, write_report=False)
    assert (third.computed, third.cached) == (0, 2)


def test_a_cut_last_line_is_repaired_before_resuming(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, TINY))
    out = tmp_path / "out"
    first = run_study(config, out, show_progress=False, write_report=False)
    data = first.results_path.read_bytes()
    first.results_path.write_bytes(data[:-200])
    second = run_study(config, out, show_progress=False, write_report=False)
    assert (second.computed, second.cached) == (1, 1)
    assert len(read_rows(second.results_path)) == 2


def test_sigint_says_how_many_runs_are_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_path = write(tmp_path, TINY)
    out = tmp_path / "out"
    run_study(load_config(config_path), out, show_progress=False, stop_after=1, write_report=False)

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(study_module, "run_study", interrupted)
    result = runner.invoke(app, ["study", str(config_path), "--out", str(out), "--no-progress"])
    assert result.exit_code == 130
    assert "interrupted — 1 run(s) saved" in flat(result) and "rerun the same command to resume" in flat(result)

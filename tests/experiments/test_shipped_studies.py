"""Smoke test: the quick profile of every shipped study runs end to end and writes its report."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from fedgmm.datasets import list_datasets
from fedgmm.experiments.config import load_config, shipped_studies
from fedgmm.experiments.results import read_rows
from fedgmm.experiments.study import run_study

AVAILABLE = {info.name for info in list_datasets() if info.available}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(shipped_studies()))
def test_quick_profile_runs(name: str, tmp_path: Path) -> None:
    config = load_config(shipped_studies()[name], profile="quick")
    missing = [d for d in config.datasets if d not in AVAILABLE]
    if missing:
        if os.environ.get("FEDGMM_REQUIRE_DATA") == "1":
            pytest.fail(f"datasets {missing} are not installed (run ./dev data)")
        pytest.skip(f"datasets {missing} are not installed; `./dev data` installs them")
    outcome = run_study(config, tmp_path, show_progress=False)
    rows = list(read_rows(outcome.results_path))
    assert rows and outcome.failed == 0, [r.extra.get("error") for r in rows if "error" in r.extra]
    assert all(math.isfinite(r.test_loglik) for r in rows)
    assert {r.method for r in rows} == set(config.methods)
    assert outcome.report_path is not None and outcome.report_path.is_file()
    assert list(tmp_path.glob("*.png")), "the report has at least one plot"
    if name == "privacy":
        _check_privacy_rows(rows, tmp_path)


def _check_privacy_rows(rows: list, out: Path) -> None:  # type: ignore[type-arg]
    """The privacy study: every ε of the sweep ran, each row carries the upload and global attack AUCs."""
    private = [r for r in rows if r.method == "fedgengmm"]
    assert sorted((r.extra["settings"]["epsilon"] is None, r.extra["settings"]["epsilon"] or 0) for r in private) == [
        (False, 0.5), (False, 1.0), (False, 2.0), (False, 4.0), (False, 8.0), (True, 0)]
    for r in private:
        for field in ("membership_auc", "membership_auc_ratio", "global_membership_auc", "global_membership_auc_ratio"):
            assert 0.0 <= r.extra[field] <= 1.0, (field, r.label)
    assert (out / "privacy_utility.png").is_file() and (out / "privacy_attack.png").is_file()

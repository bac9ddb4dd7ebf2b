"""The study runner: configs are checked strictly, cells run once, an interrupted study resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedgmm.experiments.config import ConfigError, load_config, parse_config, shipped_studies
from fedgmm.experiments.results import read_rows
from fedgmm.experiments.study import method_variants, run_study

QUICK = """
name = "tiny"
datasets = ["blobs"]
methods = ["centralized", "union", "fedgengmm", "fedem", "hybrid"]
seeds = [0, 1]
[dataset_options.blobs]
n_samples = 600
[partition]
name = "dirichlet"
num_partitions = 4
alpha = [0.5]
min_partition_size = 20
[model]
n_components = 4
local_components = [1, 4]
max_rounds = 5
[sweep]
hybrid_rounds = [1, 2]
"""


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_interrupted_study_resumes_without_recomputing(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, QUICK))
    out = tmp_path / "out"
    first = run_study(config, out, show_progress=False, stop_after=3, write_report=False)
    assert (first.computed, first.cached) == (3, 0)
    rows_before = list(read_rows(first.results_path))
    assert len(rows_before) == 3
    second = run_study(config, out, show_progress=False, write_report=False)
    total = 2 * (4 + 2)  # 2 seeds x (centralized, union, fedgengmm, fedem, hybrid x2 rounds)
    assert second.cached == 3 and second.computed == total - 3
    rows = list(read_rows(second.results_path))
    assert len(rows) == total and len({r.key for r in rows}) == total
    assert [r.test_loglik for r in rows[:3]] == [r.test_loglik for r in rows_before]
    third = run_study(config, out, show_progress=False, write_report=False)
    assert (third.computed, third.cached) == (0, total)


def test_rows_are_complete_and_federated_ones_count_bytes(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, QUICK))
    outcome = run_study(config, tmp_path / "o", show_progress=False, write_report=False)
    rows = list(read_rows(outcome.results_path))
    by = {(r.seed, r.label): r for r in rows}
    for seed in (0, 1):
        central = by[(seed, "Centralized")]
        assert central.rounds == 0 and central.bytes_up == 0
        fg = by[(seed, "FedGenGMM")]
        assert fg.rounds == 2  # federated preprocessing round + the one upload
        assert fg.bytes_up > 0 and np.isfinite(fg.test_loglik)
        fem = by[(seed, "Federated EM")]
        assert fem.history and fem.history[-1].bytes_up == fem.bytes_up
        assert by[(seed, "FedGenGMM + 2 EM")].rounds == fg.rounds + 2
    assert outcome.failed == 0


def test_sweeps_only_multiply_the_methods_they_change(tmp_path: Path) -> None:
    text = QUICK.replace("hybrid_rounds = [1, 2]", "hybrid_rounds = [1, 2]\nsynthetic_size = [1.0, 5.0]")
    config = load_config(write(tmp_path, text))
    assert len(method_variants(config, "centralized")) == 1
    assert len(method_variants(config, "fedgengmm")) == 2
    assert len(method_variants(config, "hybrid")) == 4


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (QUICK.replace("max_rounds = 5", "max_round = 5"), r"unknown key \[model\] 'max_round'.*Did you mean 'max_rounds'"),
        (QUICK.replace('name = "dirichlet"', 'name = "dirichlett"'), "unknown partitioner 'dirichlett'"),
        (QUICK.replace('datasets = ["blobs"]', 'datasets = ["digit"]'), "unknown dataset 'digit'.*Did you mean 'digits'"),
        (QUICK.replace('"fedem",', '"fed-em",'), "unknown method 'fed-em'"),
        (QUICK.replace("n_components = 4", 'n_components = "four"'), r"\[model\] n_components = 'four' has the wrong type"),
        ("seedz = [1]\n" + QUICK, "unknown key 'seedz'.*Did you mean 'seeds'"),
        ("name = [", "not valid TOML"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_missing_config_and_unknown_profile(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such study config"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="no profile 'fast'"):
        parse_config({"name": "x"}, profile="fast")


def test_profiles_override_dotted_keys() -> None:
    config = parse_config(
        {"name": "x", "seeds": [0, 1, 2], "partition": {"alpha": [0.1, 1.0]},
         "profiles": {"quick": {"seeds": [0], "partition.alpha": [5.0]}}},
        profile="quick",
    )
    assert config.seeds == (0,) and config.partition.alpha == (5.0,)


def test_shipped_studies_parse_in_both_profiles() -> None:
    studies = shipped_studies()
    assert studies, "the package ships study configs"
    for name, path in studies.items():
        full = load_config(path)
        quick = load_config(path, profile="quick")
        assert full.name and quick.name, name


def test_rows_of_an_earlier_config_are_set_aside(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = load_config(write(tmp_path, QUICK))
    run_study(first, out, show_progress=False, write_report=False)
    changed = load_config(write(tmp_path, QUICK.replace("max_rounds = 5", "max_rounds = 4"), "b.toml"))
    outcome = run_study(changed, out, show_progress=False, write_report=False)
    rows = list(read_rows(outcome.results_path))
    stale = list(read_rows(out / "results.stale.jsonl"))
    # fedem and hybrid keys change with max_rounds... only federated EM's do (hybrid rounds are swept)
    assert stale and all(r.method == "fedem" for r in stale)
    assert outcome.computed == len(stale)
    assert len(rows) == 2 * 6


def test_few_class_datasets_are_partitioned_by_regimes() -> None:
    from fedgmm.datasets import load_dataset
    from fedgmm.datasets.split import partition_labels

    ds = load_dataset("blobs", n_samples=500, n_classes=2)
    labels = partition_labels(ds.X, ds.y, "auto", seed=0)
    assert np.unique(labels).size == 10  # k-means regimes: two classes cannot be skewed across 10 clients
    np.testing.assert_array_equal(labels, partition_labels(ds.X, ds.y, "auto", seed=0))
    many = load_dataset("blobs", n_samples=500, n_classes=6)
    np.testing.assert_array_equal(partition_labels(many.X, many.y, "auto", seed=0), many.y)
    with pytest.raises(ValueError, match="regimes must be"):
        partition_labels(ds.X, ds.y, "kmeans", seed=0)

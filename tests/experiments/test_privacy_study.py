"""The privacy sweep: ε as a swept setting, the audit's held-out rows, attack fields on rows, the report section."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedgmm.datasets import load_dataset
from fedgmm.experiments.config import ConfigError, load_config, parse_config
from fedgmm.experiments.results import read_rows
from fedgmm.experiments.study import (
    cell_key,
    method_variants,
    prepare_cell,
    run_study,
    skipped_private_variants,
    takes_epsilon,
)

TINY = """
name = "tiny-privacy"
datasets = ["blobs"]
methods = ["centralized", "fedgengmm", "fedem"]
seeds = [0]
audit_holdout = 0.3
[dataset_options.blobs]
n_samples = 900
[partition]
name = "dirichlet"
num_partitions = 3
alpha = [1.0]
min_partition_size = 40
[model]
n_components = 3
max_rounds = 4
# Reproducible noise, so that these tests see the same numbers every run (each client's secret
# noise would draw new ones). Noise seeds that floor noisy counts at 1: see the tests at the end.
dp_noise_seed = 0
[sweep]
epsilon = [1.0, inf]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_epsilon_sweep_makes_private_and_plain_variants(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, TINY))
    fedgen = method_variants(config, "fedgengmm")
    assert [v.spec.epsilon for v in fedgen] == [1.0, None]
    assert [v.label for v in fedgen] == ["FedGenGMM [ε=1]", "FedGenGMM [ε=∞]"]
    assert [v.settings["epsilon"] for v in fedgen] == [1.0, None]  # JSON-ready: ∞ is None
    assert [v.spec.epsilon for v in method_variants(config, "centralized")] == [None]  # baselines ignore ε
    # ε = ∞ is the plain run: its key is the key of the same run without an ε sweep.
    plain = load_config(write(tmp_path, TINY.replace("epsilon = [1.0, inf]", "")))
    cell = ("blobs", 1.0, 0.0, 0)
    assert cell_key(config, cell, fedgen[1]) == cell_key(plain, cell, method_variants(plain, "fedgengmm")[0])
    # A method the dispatch cannot run privately yet is left out of the grid and named.
    assert [v.spec.epsilon for v in method_variants(config, "fedem")] == ([1.0, None] if takes_epsilon("fedem") else [None])
    assert skipped_private_variants(config) == ([] if takes_epsilon("fedem") else ["Federated EM at ε=1"])
    no_holdout = load_config(write(tmp_path, TINY.replace("audit_holdout = 0.3", "")))
    assert cell_key(config, cell, fedgen[1]) != cell_key(no_holdout, cell, method_variants(no_holdout, "fedgengmm")[1])


def test_a_private_study_without_max_rounds_gets_the_librarys_dp_default(tmp_path: Path) -> None:
    # FederatedEM(epsilon=...) defaults to 10 rounds (the measured configuration): so does a
    # study that sweeps ε and sets none, for its ε = ∞ runs too; one that sets it keeps it.
    unset = load_config(write(tmp_path, TINY.replace("max_rounds = 4\n", "")))
    assert [v.spec.max_rounds for v in method_variants(unset, "fedem")] == [10] * len(method_variants(unset, "fedem"))
    assert {v.spec.max_rounds for v in method_variants(load_config(write(tmp_path, TINY)), "fedem")} == {4}
    plain = TINY.replace("max_rounds = 4\n", "").replace("epsilon = [1.0, inf]", "")
    assert {v.spec.max_rounds for v in method_variants(load_config(write(tmp_path, plain)), "fedem")} == {40}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("epsilon = [1.0, inf]", "epsilon = [0, 1]"), "epsilon = 0 is out of range"),
        (("epsilon = [1.0, inf]", 'epsilon = ["a"]'), "epsilon = 'a' is out of range"),
        (("audit_holdout = 0.3", "audit_holdout = 1.0"), "audit_holdout = 1.0 is out of range"),
    ],
)
def test_privacy_settings_are_checked(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, TINY.replace(*change)))


def test_audit_holdout_keeps_rows_out_of_every_fit(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, TINY))
    ds = load_dataset("blobs", n_samples=900)
    cell = prepare_cell(ds, config, 1.0, 0.0, 0)
    plain = prepare_cell(ds, parse_config({"name": "x", "datasets": ["blobs"], "partition": {"num_partitions": 3,
                                           "min_partition_size": 40}}), 1.0, 0.0, 0)  # fmt: skip
    assert cell.held_out is not None and plain.held_out is None
    for kept, held in zip(cell.clients, cell.held_out, strict=True):
        assert held.shape[0] == round(0.3 * (kept.shape[0] + held.shape[0]))
        assert not {tuple(r) for r in kept} & {tuple(r) for r in held}


def test_privacy_rows_carry_attack_fields_and_the_report_plots_them(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, TINY))
    outcome = run_study(config, tmp_path / "out", show_progress=False)
    rows = list(read_rows(outcome.results_path))
    ok = [r for r in rows if "error" not in r.extra]
    fedgen = [r for r in ok if r.method == "fedgengmm"]
    assert len(fedgen) == 2
    for r in fedgen:
        for field in ("membership_auc", "membership_auc_ratio", "global_membership_auc", "global_membership_auc_ratio"):
            assert 0.0 <= r.extra[field] <= 1.0, (field, r.extra)
    # Federated EM uploads statistics, not models: only the global model is attacked.
    for r in (r for r in ok if r.method == "fedem"):
        assert "membership_auc" not in r.extra and 0.0 <= r.extra["global_membership_auc"] <= 1.0
    # Federated EM at finite ε runs once the dispatch takes its epsilon; until then it is left out, not failed.
    fedem_eps = sorted(str(r.extra["settings"]["epsilon"]) for r in rows if r.method == "fedem")
    assert fedem_eps == (["1.0", "None"] if takes_epsilon("fedem") else ["None"])
    assert outcome.failed == 0 and len(ok) == len(rows)
    assert all(math.isfinite(r.test_loglik) for r in ok)
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "## Privacy: utility and membership attacks vs ε" in report
    assert (tmp_path / "out" / "privacy_utility.png").is_file() and (tmp_path / "out" / "privacy_attack.png").is_file()


#: FedGenGMM alone at ε = 1: the run whose noisy counts used to abort it.
PRIVATE_FEDGEN = TINY.replace('methods = ["centralized", "fedgengmm", "fedem"]', 'methods = ["fedgengmm"]').replace(
    "epsilon = [1.0, inf]", "epsilon = [1.0]")


def private_fedgen_rows(tmp_path: Path, noise_seed: int) -> tuple[int, list]:  # type: ignore[type-arg]
    text = PRIVATE_FEDGEN.replace("dp_noise_seed = 0", f"dp_noise_seed = {noise_seed}")
    outcome = run_study(load_config(write(tmp_path, text)), tmp_path / f"out-{noise_seed}", show_progress=False)
    return outcome.failed, list(read_rows(outcome.results_path))


@pytest.mark.parametrize("noise_seed", [4, 28])
def test_noise_that_floors_two_clients_counts_does_not_abort_the_run(tmp_path: Path, noise_seed: int) -> None:
    # These noise draws floor two of the three ~150-row clients' noisy counts at 1 (claims
    # [1, 1, 311] and [1, 297, 1]; σ of a noisy count ≈ 153 rows here). The count cap used to
    # count the third at 2 x the others' median (2 rows) and the synthetic set came out too
    # small for K = 3: the run raised. The cap now allows for the public count noise.
    failed, rows = private_fedgen_rows(tmp_path, noise_seed)
    assert failed == 0 and len(rows) == 1 and "error" not in rows[0].extra
    assert math.isfinite(rows[0].test_loglik) and rows[0].extra["synthetic_size"] >= 30


@pytest.mark.slow
def test_private_fedgengmm_runs_at_every_noise_seed(tmp_path: Path) -> None:
    for noise_seed in range(40):
        failed, rows = private_fedgen_rows(tmp_path, noise_seed)
        assert failed == 0 and "error" not in rows[0].extra, (noise_seed, rows[0].extra.get("error"))

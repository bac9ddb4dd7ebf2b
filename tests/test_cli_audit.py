"""``fedgmm audit``: saved models and uploads, the in-process --fit mode, JSON output, options checked first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from fedgmm.cli import app
from fedgmm.gaussian_mixture import GaussianMixture
from fedgmm.model_io import load_model, save_mixture

runner = CliRunner()


def flat(result: Any) -> str:
    return " ".join(result.output.split())


def population(rng: np.random.Generator, n: int) -> np.ndarray:
    centres = np.array([[-3.0, 0, 0], [3.0, 0, 0], [0, 3.0, 0]])
    return centres[rng.integers(0, 3, n)] + rng.normal(size=(n, 3))


def write_csv(path: Path, X: np.ndarray) -> Path:
    np.savetxt(path, X, delimiter=",", header="a,b,c", comments="")
    return path


def audit_json(args: list[str]) -> dict[str, Any]:
    result = runner.invoke(app, ["audit", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])


def test_audit_finds_an_overfit_model_and_not_a_model_of_other_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    members, non_members = population(rng, 80), population(rng, 80)
    files = [write_csv(tmp_path / n, X) for n, X in (("m.csv", members), ("n.csv", non_members),
                                                      ("r.csv", population(rng, 500)))]  # fmt: skip
    overfit = GaussianMixture(n_components=25, covariance_type="diag", reg_covar=1e-6, random_state=0).fit(members)
    save_mixture(tmp_path / "overfit.npz", overfit.state_, feature_names=["a", "b", "c"])
    other = GaussianMixture(n_components=3, random_state=0).fit(population(rng, 800))
    save_mixture(tmp_path / "other.npz", other.state_, feature_names=["a", "b", "c"])
    common = ["--members", str(files[0]), "--non-members", str(files[1]), "--reference", str(files[2]),
              "--n-bootstrap", "100"]  # fmt: skip
    leaky = audit_json([str(tmp_path / "overfit.npz"), *common])["artefacts"]
    assert [a["artefact"] for a in leaky] == ["global"]
    for r in leaky[0]["results"]:
        assert r["auc"] > 0.8 and r["auc_ci"][0] > 0.6, r
    for r in audit_json([str(tmp_path / "other.npz"), *common])["artefacts"][0]["results"]:
        assert r["auc_ci"][0] <= 0.5 <= r["auc_ci"][1], r


def test_fit_save_uploads_then_audit_each_upload_and_the_global_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    train = [write_csv(tmp_path / f"c{i}.csv", population(rng, 150)) for i in range(3)]
    held = [write_csv(tmp_path / f"h{i}.csv", population(rng, 60)) for i in range(3)]
    ups = tmp_path / "uploads"
    result = runner.invoke(app, ["fit", *map(str, train), "--components", "3", "--local-components", "6",
                                 "--preprocess", "standardize", "--out", str(tmp_path / "m.npz"),
                                 "--save-uploads", str(ups)])  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = sorted(ups.glob("upload-*.npz"))
    assert len(saved) == 3
    first = load_model(saved[0])
    assert first.metadata["extra"]["client"] == 0 and first.metadata["extra"]["client_file"] == str(train[0])
    assert first.transform is not None and first.feature_names == ["a", "b", "c"]  # applies to raw rows
    args = [str(tmp_path / "m.npz"), "--uploads", str(ups), "--n-bootstrap", "20"]
    for t, h in zip(train, held, strict=True):
        args += ["--members", str(t), "--non-members", str(h)]
    out = audit_json(args)
    assert [(a["artefact"], a["client"]) for a in out["artefacts"]] == [
        ("upload", 0), ("upload", 1), ("upload", 2), ("global", None)]
    assert all(len(a["results"]) == 1 for a in out["artefacts"])  # no --reference: likelihood only
    table = runner.invoke(app, ["audit", *args])
    assert table.exit_code == 0, table.output
    assert "upload of client 2" in table.output and "global model" in table.output and "TPR@1%FPR" in table.output


def test_audit_fit_runs_a_federation_with_a_holdout_and_audits_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    files = [write_csv(tmp_path / f"c{i}.csv", population(rng, 200)) for i in range(3)]
    args = ["--fit", *map(str, files), "--components", "3", "--local-components", "6", "--n-bootstrap", "20"]
    out = audit_json(args)
    assert [a["artefact"] for a in out["artefacts"]] == ["upload", "upload", "upload", "global"]
    for a in out["artefacts"]:
        assert [r["attack"] for r in a["results"]] == ["likelihood", "density-ratio"]
        for r in a["results"]:
            assert r["auc_ci"][0] <= r["auc"] <= r["auc_ci"][1]
            # 200 rows a client, 0.3 held out, half of those non-members: 30 a client, 90 pooled
            assert r["n_members"] == (30 if a["artefact"] == "upload" else 90)
    assert out["holdout"] == 0.3 and out["epsilon"] is None
    table = runner.invoke(app, ["audit", *args])
    assert table.exit_code == 0, table.output
    assert "uploads, likelihood: mean AUC" in flat(table)


def test_audit_fit_with_epsilon_reports_the_budget_spent(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    files = [write_csv(tmp_path / f"c{i}.csv", population(rng, 300)) for i in range(2)]
    out = audit_json(["--fit", *map(str, files), "--components", "3", "--epsilon", "2", "--n-bootstrap", "10"])
    assert out["epsilon"] == 2.0
    spent = out["privacy_spent"]
    assert set(spent) == {"0", "1"} and all(0 < e <= 2.0 + 1e-9 for e, _ in spent.values())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--holdout", "1.5"], "--holdout must be in (0, 1)"),
        (["--fpr", "0"], "--fpr must be in (0, 1)"),
        (["--n-bootstrap", "0"], "--n-bootstrap must be an integer >= 1"),
        (["--members", "x.csv"], "--fit makes its own members"),
        (["--method", "centralized"], "--method must be one of fedgengmm, fedem, hybrid"),
        (["--preprocess", "none", "--epsilon", "1"], "--epsilon needs a bound on the rows"),
        (["--reference", "missing.csv"], "--reference missing.csv: no such file"),
        (["--method", "hybrid", "--epsilon", "1"], "--epsilon is not supported with --method hybrid"),
    ],
)
def test_audit_fit_checks_options_first(tmp_path: Path, extra: list[str], message: str) -> None:
    f = write_csv(tmp_path / "c.csv", population(np.random.default_rng(4), 50))
    result = runner.invoke(app, ["audit", "--fit", str(f), *extra])
    assert result.exit_code == 2, result.output
    assert message in flat(result)


def test_audit_of_model_files_checks_its_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    X = population(rng, 60)
    m = write_csv(tmp_path / "m.csv", X)
    save_mixture(tmp_path / "g.npz", GaussianMixture(n_components=2, random_state=0).fit(X).state_)
    cases = [
        ([str(tmp_path / "g.npz")], "needs --members"),
        ([str(tmp_path / "g.npz"), str(m), "--members", str(m), "--non-members", str(m)], "give one model file"),
        ([str(tmp_path / "g.npz"), "--members", str(m), "--non-members", str(m), "--epsilon", "1"], "apply with --fit"),
        ([str(tmp_path / "g.npz"), "--members", str(m), "--members", str(m), "--non-members", str(m),
          "--non-members", str(m), "--non-members", str(m)], "one --non-members file per --members file"),
        ([str(tmp_path / "g.npz"), "--members", str(m), "--non-members", str(m), "--uploads", str(tmp_path / "no")],
         "no such folder"),
        ([str(tmp_path / "g.npz"), "--members", str(m), "--non-members", str(m), "--uploads", str(tmp_path)],
         "holds no upload-*.npz files"),
        ([str(tmp_path / "missing.npz"), "--members", str(m), "--non-members", str(m)], "no such file"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["audit", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in flat(result), (args, result.output)


def test_fit_save_uploads_is_checked_before_any_work(tmp_path: Path) -> None:
    f = write_csv(tmp_path / "c.csv", population(np.random.default_rng(6), 50))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "upload-0000.npz").write_bytes(b"")
    for extra, message in (
        (["--method", "fedem", "--save-uploads", str(tmp_path / "u")], "--save-uploads needs --method fedgengmm"),
        (["--save-uploads", str(tmp_path / "no" / "u")], "does not exist; create it first"),
        (["--save-uploads", str(tmp_path / "full")], "already holds uploads"),
        (["--save-uploads", str(f)], "is not a folder"),
    ):
        result = runner.invoke(app, ["fit", str(f), "--out", str(tmp_path / "m.npz"), *extra])
        assert result.exit_code == 2, result.output
        assert message in flat(result)
        assert not (tmp_path / "m.npz").exists()

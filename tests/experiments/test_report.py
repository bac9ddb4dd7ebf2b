"""Tests of the study report: summaries, markdown, which plots appear, and density contours."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pytest

from fedgmm.experiments.plots import plot_density_contours
from fedgmm.experiments.report import summarize, write_report
from fedgmm.experiments.results import ResultRow, RoundPoint, append_rows
from fedgmm.mixture import MixtureState
from fedgmm.model_io import save_mixture

LABELS = {
    "centralized": "Centralized",
    "local": "Local only",
    "union": "Union (no retraining)",
    "fedgengmm": "FedGenGMM",
    "fedem": "Federated EM",
}
DATASETS = {"digits": -20.0, "satellite": -30.0, "shuttle": 5.0}  # base test log-likelihood
ALPHAS = (0.1, 1.0, 100.0)
SEEDS = (0, 1, 2)
HYBRID_ROUNDS = (1, 3, 10)
PER_ROUND = 120_000  # bytes of one federated EM round, both directions


def _quality(method: str, dataset: str, alpha: float, rounds: int | None, rng: np.random.Generator) -> float:
    """A plausible test log-likelihood: FedGenGMM's gap to centralized shrinks as α grows."""
    gap = {0.1: 1.5, 1.0: 0.8, 100.0: 0.4}[alpha]
    offset = {
        "centralized": 0.0,
        "fedem": -0.1,
        "fedgengmm": -gap,
        "union": -3.0 - gap,
        "local": {0.1: -40.0, 1.0: -15.0, 100.0: -5.0}[alpha],
    }.get(method)
    if method == "hybrid":
        assert rounds is not None
        offset = -0.1 - (gap - 0.1) * math.exp(-rounds / 3.0)
    assert offset is not None
    return DATASETS[dataset] + offset + float(rng.normal(0.0, 0.3))


def _history(final: float, n_rounds: int, start_bytes: int, start_gap: float) -> list[RoundPoint]:
    """Rounds 1..n whose test log-likelihood climbs to ``final``, with cumulative bytes."""
    def gap(r: int) -> float:
        return start_gap * (math.exp(-r / 6.0) - math.exp(-n_rounds / 6.0))

    return [
        RoundPoint(r, final - gap(r) + 0.5, final - gap(r), start_bytes + r * PER_ROUND // 2,
                   start_bytes // 10 + r * PER_ROUND // 2)
        for r in range(1, n_rounds + 1)
    ]


def make_row(method: str, dataset: str, alpha: float, seed: int, **overrides: Any) -> ResultRow:
    """One fake but realistic row (communication, history and AUC-PR as the runner writes them)."""
    rng = np.random.default_rng(zlib.crc32(repr((method, dataset, alpha, seed, sorted(overrides.items()))).encode()))
    max_rounds = overrides.pop("max_rounds", 3 if method == "hybrid" else 40 if method == "fedem" else None)
    contamination = overrides.pop("contamination", 0.0)
    ll = _quality(method, dataset, alpha, max_rounds, rng) - 4.0 * contamination * (method != "centralized")
    history: list[RoundPoint] = []
    rounds, up, down = 0, 0, 0
    if method in ("fedgengmm", "union"):
        rounds, up, down = 1, 60_800, 121_600 * (method == "fedgengmm")
    elif method == "fedem":
        rounds = int(rng.integers(25, 41))
        history = _history(ll, rounds, 0, 8.0)
        up, down = history[-1].bytes_up, history[-1].bytes_down
    elif method == "hybrid":
        assert max_rounds is not None
        rounds = 1 + max_rounds
        history = _history(ll, max_rounds, 60_800, 1.0)
        up, down = history[-1].bytes_up, history[-1].bytes_down
    auc = None if dataset == "digits" else float(np.clip(0.7 - 0.1 * (method == "local") - 0.3 * contamination + rng.normal(0, 0.02), 0, 1))
    values: dict[str, Any] = dict(
        key=f"{method}-{dataset}-{alpha}-{seed}-{max_rounds}-{contamination}-{sorted(overrides.items())}",
        study="demo", dataset=dataset, partitioner="dirichlet", alpha=alpha, n_clients=10, seed=seed,
        method=method, label=LABELS.get(method, f"FedGenGMM + {max_rounds} EM"), n_components=10,
        covariance_type="full", local_components="1-10",
        synthetic_size=5.0 if method in ("fedgengmm", "hybrid") else None,
        max_rounds=max_rounds, contamination=contamination, test_loglik=ll, auc_pr=auc,
        auroc=None if auc is None else min(1.0, auc + 0.15), rounds=rounds, bytes_up=up, bytes_down=down,
        client_seconds=1.0, server_seconds=0.5, wall_seconds=float(rng.uniform(1, 3)), n_clients_used=10,
        history=history, extra={},
    )
    values.update(overrides)
    return ResultRow(**values)


def main_grid(
    datasets: tuple[str, ...] = ("digits", "satellite"), alphas: tuple[float, ...] = ALPHAS, *, iterative: bool = True
) -> Iterator[ResultRow]:
    """Every method on every (dataset, α, seed), the hybrid with each number of rounds.

    ``iterative=False`` leaves out federated EM and the hybrid (no history to plot).
    """
    methods = ("centralized", "local", "union", "fedgengmm") + (("fedem",) if iterative else ())
    for dataset in datasets:
        for alpha in alphas:
            for seed in SEEDS:
                for method in methods:
                    yield make_row(method, dataset, alpha, seed)
                for r in HYBRID_ROUNDS if iterative else ():
                    yield make_row("hybrid", dataset, alpha, seed, max_rounds=r)


def one_shot(dataset: str, alphas: tuple[float, ...]) -> list[ResultRow]:
    """Centralized and FedGenGMM only: no history, so no communication plot (fast)."""
    return [make_row(m, dataset, a, seed) for a in alphas for seed in SEEDS for m in ("centralized", "fedgengmm")]


def sweeps() -> Iterator[ResultRow]:
    """Local-K and synthetic-size sweeps on digits (α=1), a contamination sweep on satellite."""
    for seed in SEEDS:
        for k, shift in (("2", -2.0), ("20", -0.5), ("2-20", 0.1)):
            for method in ("local", "union", "fedgengmm", "fedem"):
                row = make_row(method, "digits", 1.0, seed, local_components=k)
                row.test_loglik += shift * (method != "fedem")
                yield row
        for size, shift in ((1.0, -1.0), (2.0, -0.4), (20.0, 0.1)):
            row = make_row("fedgengmm", "digits", 1.0, seed, synthetic_size=size)
            row.test_loglik += shift
            yield row
        for level in (0.1, 0.3):
            for method in ("centralized", "local", "union", "fedgengmm", "fedem"):
                yield make_row(method, "satellite", 1.0, seed, contamination=level)


def failed_row() -> ResultRow:
    """A run that failed: NaN quality, no detection metrics, the error recorded."""
    return make_row("fedgengmm", "shuttle", 0.1, 7, test_loglik=math.nan, auc_pr=None, auroc=None,
                    extra={"error": "DegenerateCovarianceError: ill-defined covariance"})


def _check_png(path: Path) -> None:
    assert path.exists(), f"{path.name} was not written"
    assert path.stat().st_size > 10_000, f"{path.name} is only {path.stat().st_size} bytes"
    image = mpimg.imread(path)
    rgba = np.ascontiguousarray((image[::4, ::4, :3] * 255).astype(np.uint8))
    packed = rgba[..., 0].astype(np.uint32) << 16 | rgba[..., 1].astype(np.uint32) << 8 | rgba[..., 2]
    assert np.unique(packed).size > 1, f"{path.name} is a single colour"


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of the whole fake study (written once for the module)."""
    folder = tmp_path_factory.mktemp("study")
    results = folder / "results.jsonl"
    append_rows(results, [*main_grid(), *main_grid(("shuttle",), iterative=False), *sweeps(), failed_row()])
    return write_report(results, folder / "report")


def test_report_mentions_every_method_and_dataset(full_report: Path) -> None:
    text = full_report.read_text(encoding="utf-8")
    assert full_report.name == "report.md"
    for label in [*LABELS.values(), *(f"FedGenGMM + {r} EM" for r in HYBRID_ROUNDS)]:
        assert label in text, label
    for dataset in DATASETS:
        assert dataset in text
    assert "dirichlet" in text and "0.1, 1, 100" in text and "0, 1, 2, 7" in text
    assert "DegenerateCovarianceError" in text  # the failed run is named with its reason
    assert "—" in text  # missing values (digits has no AUC-PR) are dashes, not "nan"
    assert "nan" not in text.lower().replace("nats", "")


def test_expected_plots_exist_and_are_linked(full_report: Path) -> None:
    text = full_report.read_text(encoding="utf-8")
    names = ["loglik_vs_alpha", "auc_pr", "communication_digits", "communication_satellite",
             "loglik_vs_local_k", "loglik_vs_synthetic_size", "hybrid_rounds", "robustness_contamination"]
    for name in names:
        _check_png(full_report.parent / f"{name}.png")
        assert f"]({name}.png)" in text
    assert not (full_report.parent / "loglik_vs_global_k.png").exists()  # K was not swept
    assert not (full_report.parent / "communication_shuttle.png").exists()  # no federated EM there


def test_plots_only_for_fields_that_vary(tmp_path: Path) -> None:
    rows = [r for r in main_grid(("digits",), (1.0,)) if r.max_rounds in (None, 3, 40)]
    results = tmp_path / "results.jsonl"
    append_rows(results, rows)
    report = write_report(results, tmp_path / "out", title="One cell")
    pngs = sorted(p.name for p in report.parent.glob("*.png"))
    assert pngs == ["communication_digits.png"]  # α, K, size, contamination, rounds all fixed; no AUC
    assert report.read_text(encoding="utf-8").startswith("# One cell")


def test_rerun_removes_stale_plots(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    append_rows(results, one_shot("satellite", (0.1, 100.0)))
    out = tmp_path / "out"
    write_report(results, out)
    assert {p.name for p in out.glob("*.png")} == {"loglik_vs_alpha.png", "auc_pr.png"}
    results.write_text("", encoding="utf-8")
    append_rows(results, one_shot("satellite", (1.0,)))
    write_report(results, out)
    assert {p.name for p in out.glob("*.png")} == {"auc_pr.png"}  # α no longer varies


def test_summarize_mean_and_std_by_hand() -> None:
    rows = [
        make_row("fedgengmm", "digits", 1.0, 0, test_loglik=-10.0, auc_pr=0.5, rounds=1, bytes_up=100),
        make_row("fedgengmm", "digits", 1.0, 1, test_loglik=-12.0, auc_pr=None, rounds=1, bytes_up=300),
        make_row("fedgengmm", "digits", 1.0, 2, test_loglik=math.nan, auc_pr=0.7, rounds=1, bytes_up=200),
        make_row("fedem", "digits", 1.0, 0, test_loglik=-9.0),
    ]
    table = summarize(rows, ["dataset", "method"])
    assert [(t["dataset"], t["method"], t["n"]) for t in table] == [("digits", "fedgengmm", 3), ("digits", "fedem", 1)]
    fed = table[0]
    assert fed["test_loglik_mean"] == pytest.approx(-11.0)
    assert fed["test_loglik_std"] == pytest.approx(math.sqrt(2.0))  # sample std of -10, -12
    assert fed["test_loglik_n"] == 2
    assert fed["auc_pr_mean"] == pytest.approx(0.6)
    assert fed["auc_pr_std"] == pytest.approx(math.sqrt(0.02))
    assert fed["bytes_up_mean"] == pytest.approx(200.0)
    assert fed["bytes_up_std"] == pytest.approx(100.0)
    assert fed["rounds_std"] == 0.0
    assert table[1]["test_loglik_mean"] == -9.0 and math.isnan(table[1]["test_loglik_std"])
    with pytest.raises(ValueError, match="not ResultRow fields"):
        summarize(rows, ["nope"])


def _two_blobs(rng: np.random.Generator) -> tuple[list[np.ndarray], MixtureState, MixtureState]:
    a = rng.normal([-3.0, 0.0], 0.7, size=(300, 2))
    b = rng.normal([3.0, 1.0], [1.2, 0.5], size=(300, 2))
    eye = np.eye(2)
    first = MixtureState.from_covariances(np.ones(1), a.mean(0, keepdims=True), np.cov(a.T)[None], "full")
    both = MixtureState.from_covariances(
        np.array([0.5, 0.5]), np.array([a.mean(0), b.mean(0)]), np.stack([np.cov(a.T), np.cov(b.T) + 0.01 * eye]), "full",
    )
    return [a, b], first, both


def test_density_contours_on_2d_and_refuses_3d(tmp_path: Path) -> None:
    clients, first, both = _two_blobs(np.random.default_rng(0))
    second = MixtureState.from_covariances(np.ones(1), clients[1].mean(0, keepdims=True), np.cov(clients[1].T)[None], "full")
    path = plot_density_contours(
        clients, {"local": [first, second], "union": both, "FedGenGMM global": both}, tmp_path / "d.png", title="blobs",
    )
    _check_png(path)
    with pytest.raises(ValueError, match="2-D"):
        plot_density_contours([np.zeros((5, 3))], {"m": both}, tmp_path / "x.png")
    three = MixtureState.from_covariances(np.ones(1), np.zeros((1, 3)), np.eye(3)[None], "full")
    with pytest.raises(ValueError, match="2-D"):
        plot_density_contours(clients, {"m": three}, tmp_path / "y.png")


def test_report_draws_saved_2d_models(tmp_path: Path) -> None:
    clients, first, both = _two_blobs(np.random.default_rng(1))
    scene = tmp_path / "models" / "blobs-alpha1.0-seed0"
    scene.mkdir(parents=True)
    np.savez(scene / "clients.npz", client_0=clients[0], client_1=clients[1])
    save_mixture(scene / "local-0.npz", first, extra={"label": "local"})
    save_mixture(scene / "local-1.npz", first, extra={"label": "local"})
    save_mixture(scene / "fedgengmm.npz", both, extra={"label": "FedGenGMM"})
    save_mixture(scene / "centralized.npz", both, extra={"label": "Centralized"})
    results = tmp_path / "results.jsonl"
    append_rows(results, one_shot("digits", (1.0,)))
    report = write_report(results, tmp_path / "out", models_dir=tmp_path / "models")
    _check_png(report.parent / "density_blobs-alpha1.0-seed0.png")
    assert "](density_blobs-alpha1.0-seed0.png)" in report.read_text(encoding="utf-8")
    # A missing models folder (a study of non-2-D data) just leaves the section out.
    report = write_report(results, tmp_path / "out2", models_dir=tmp_path / "absent")
    assert "Density" not in report.read_text(encoding="utf-8")


def test_empty_results_file(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    results.write_text("", encoding="utf-8")
    report = write_report(results, tmp_path / "out")
    assert "no result rows" in report.read_text(encoding="utf-8")

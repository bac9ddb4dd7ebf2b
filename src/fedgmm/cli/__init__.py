"""The ``fedgmm`` command: run studies, write reports, list datasets, fit and score models, and ``fedgmm flower``."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from fedgmm.cli.errors import err_console, guarded
from fedgmm.cli.files import csv_header as _csv_header
from fedgmm.cli.files import label_index as _label_index

app = typer.Typer(
    help="Federated Gaussian mixture models: FedGenGMM, federated EM, studies and a Flower app.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()

DEFAULT_STUDY = "main"
DEFAULT_OUT = Path("fedgmm-output")

@app.callback()
def _root() -> None:
    """Federated Gaussian mixture models."""


def _resolve_study(config: str) -> Path:
    from fedgmm.experiments.config import ConfigError, shipped_studies

    path = Path(config)
    if path.suffix == ".toml" or path.exists():
        return path
    studies = shipped_studies()
    if config in studies:
        return studies[config]
    raise ConfigError(f"{config!r} is neither a study config file nor a shipped study ({', '.join(studies)}).")


def _print_summary(results: Path, title: str, *, skip_bad: bool = False) -> None:
    from fedgmm.experiments.report import summarize
    from fedgmm.experiments.results import read_rows

    rows = list(read_rows(results, skip_bad=skip_bad))
    entries = summarize(rows, ["dataset", "label", "alpha"])
    with_auc = any(e.get("auc_pr_mean") is not None and not math.isnan(e["auc_pr_mean"]) for e in entries)
    seeds = sorted({e["n"] for e in entries})
    table = Table(title=f"{title} ({'/'.join(map(str, seeds))} seed(s) per cell)")
    columns = ["data", "method", "α", "test ll", *(["AUC-PR"] if with_auc else []), "rounds", "kB up", "kB down"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("data", "method") else "right", no_wrap=True)
    for entry in entries:

        def fmt(name: str, digits: int = 3, entry: dict[str, Any] = entry) -> str:
            mean, std = entry.get(f"{name}_mean"), entry.get(f"{name}_std")
            if mean is None or (isinstance(mean, float) and math.isnan(mean)):
                return "—"
            if name.startswith("bytes"):
                return f"{mean / 1e3:,.0f}"
            if name == "rounds":
                return f"{mean:.0f}"
            if std is None or (isinstance(std, float) and math.isnan(std)):
                return f"{mean:.{digits}f}"
            return f"{mean:.{digits}f}±{std:.{digits}f}"

        alpha = entry.get("alpha")
        label = {"Union (no retraining)": "Union", "Federated EM": "Fed. EM"}.get(str(entry["label"]), str(entry["label"]))
        cells = [str(entry["dataset"]), label, "—" if alpha is None else f"{alpha:g}", fmt("test_loglik", 2)]
        if with_auc:
            cells.append(fmt("auc_pr", 2))
        cells += [fmt("rounds"), fmt("bytes_up"), fmt("bytes_down")]
        table.add_row(*cells)
    wide = Console(width=max(console.width, 104)) if not console.is_terminal else console
    wide.print(table)
    wide.print("test ll: mean log-likelihood per test sample (nats); kB: measured message bytes (1 kB = 1000 B).")


def _run_study(config: str, profile: str | None, out: Path | None, jobs: int | None, progress: bool) -> None:
    from dataclasses import replace

    from fedgmm.experiments.config import load_config
    from fedgmm.experiments.study import run_study

    path = _resolve_study(config)
    cfg = load_config(path, profile=profile)
    if jobs is not None:
        cfg = replace(cfg, n_jobs=jobs)
    out_dir = out or DEFAULT_OUT / (cfg.name + (f"-{profile}" if profile else ""))
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a folder.")
    console.print(f"[bold]study[/] {cfg.name} ({path}{', profile ' + profile if profile else ''}) → {out_dir}")
    try:
        outcome = run_study(cfg, out_dir, console=console, show_progress=progress)
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted — {_saved_runs(out_dir)} run(s) saved in {out_dir}; rerun the same command to resume."
        )
        raise typer.Exit(130) from None
    console.print(
        f"{outcome.computed} run(s) computed, {outcome.cached} taken from {outcome.results_path}"
        + (f", [yellow]{outcome.failed} failed[/]" if outcome.failed else "")
    )
    _print_summary(outcome.results_path, f"{cfg.name}: mean ± std over seeds")
    if outcome.report_path is not None:
        console.print(f"report: {outcome.report_path}")
    if outcome.failed:
        _print_failures(outcome.results_path)
        raise typer.Exit(1)


def _saved_runs(out_dir: Path) -> int:
    from fedgmm.experiments.results import RESULTS_FILE, completed_keys, read_results

    results = out_dir / RESULTS_FILE
    return len(completed_keys(read_results(results, skip_bad=True).rows)) if results.is_file() else 0


def _print_failures(results: Path) -> None:
    from fedgmm.experiments.results import completed_keys, read_rows

    rows = read_rows(results, skip_bad=True)
    done = completed_keys(rows)
    failed = {r.key: r for r in rows if r.failed and r.key not in done}
    err_console.print(f"[bold red]{len(failed)} run(s) failed[/] (they are retried on the next run):")
    for row in failed.values():
        where = f"{row.dataset} α={row.alpha} seed={row.seed}"
        err_console.print(f"  {row.label} on {where}: {row.extra.get('error')}")


@app.command()
def run(
    out: Path = typer.Option(None, help="Output directory (default fedgmm-output/main-quick)."),
    full: bool = typer.Option(False, help="Run the full profile of the main study instead of the quick one."),
    jobs: int = typer.Option(None, help="Worker processes for the clients."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Main job: the embedded default study (FedGenGMM vs the baselines on italy-power-demand, 3 seeds)."""
    guarded(lambda: _run_study(DEFAULT_STUDY, None if full else "quick", out, jobs, progress))


@app.command()
def study(
    config: str = typer.Argument(..., help="A study config (.toml) or the name of a shipped study."),
    profile: str = typer.Option(None, help="A profile of the config, e.g. 'quick'."),
    out: Path = typer.Option(None, help="Output directory (default fedgmm-output/NAME[-PROFILE])."),
    jobs: int = typer.Option(None, help="Worker processes for the clients."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Run a study; finished runs are cached in the output directory, so an interrupted study resumes."""
    guarded(lambda: _run_study(config, profile, out, jobs, progress))


@app.command()
def studies() -> None:
    """List the shipped studies."""
    from fedgmm.experiments.config import load_config, shipped_studies

    table = Table(title="shipped studies (fedgmm study NAME [--profile quick])")
    table.add_column("name")
    table.add_column("what it measures")
    for name, path in shipped_studies().items():
        table.add_row(name, load_config(path).description)
    console.print(table)


@app.command()
def report(
    results: Path = typer.Argument(..., help="A results.jsonl file written by a study."),
    out: Path = typer.Option(None, help="Output directory (default: next to the results file)."),
    skip_bad: bool = typer.Option(False, help="Leave out unreadable lines (each is listed) instead of failing."),
) -> None:
    """Write the markdown report and plots of a results file."""

    def action() -> None:
        from fedgmm.experiments.report import write_report
        from fedgmm.experiments.results import read_results

        if not results.is_file():
            raise FileNotFoundError(f"{results}: no such results file.")
        read = read_results(results, skip_bad=True)
        if read.n_rows == 0:
            detail = " ".join(read.problems()) if read.problems() else "it is empty."
            raise ValueError(f"{results}: no readable result row; {detail}")
        if not skip_bad and read.problems():
            raise ValueError(" ".join(read.problems()) + " Pass --skip-bad to report the readable rows anyway.")
        for problem in read.problems():
            err_console.print(f"[yellow]skipped:[/] {problem}")
        out_dir = out or results.parent
        path = write_report(results, out_dir, models_dir=results.parent / "models", skip_bad=skip_bad)
        _print_summary(results, f"{results}: mean ± std over seeds", skip_bad=skip_bad)
        console.print(f"report: {path}")

    guarded(action)


@app.command()
def datasets() -> None:
    """What data is installed, and how to install the rest."""
    from fedgmm.datasets import list_datasets

    table = Table(title="datasets (load_dataset(name))")
    for column in ("name", "kind", "rows × features", "classes", "outliers", "installed", "install"):
        table.add_column(column)
    for info in list_datasets():
        table.add_row(
            info.name, info.kind, f"{info.n_samples:,} × {info.n_features}", str(info.n_classes),
            "—" if info.n_outliers is None else f"{info.n_outliers:,}",
            "[green]yes[/]" if info.available else "[red]no[/]", "" if info.available else info.install_hint,
        )
    console.print(table)


def _read_client_file(path: Path, label_column: str | None) -> Any:
    from fedgmm.datasets import load_file

    return load_file(path, label_column=_label_index(label_column)).X


def _column_difference(expected: list[str], got: list[str]) -> str:
    """What differs between two headers: missing, unexpected and reordered columns."""
    missing = [c for c in expected if c not in got]
    extra = [c for c in got if c not in expected]
    parts = []
    if missing:
        parts.append(f"missing {missing}")
    if extra:
        parts.append(f"unexpected {extra}")
    if not parts:
        moved = [f"{c!r} at {got.index(c)} (expected {i})" for i, c in enumerate(expected) if got.index(c) != i]
        parts.append("reordered: " + ", ".join(moved))
    return "; ".join(parts)


def _check_out(out: Path) -> None:
    """``--out`` must name a file in an existing folder (checked before any work)."""
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name such as {out / 'model.npz'}.")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist; create it first.")


PREPROCESS = ("none", "standardize", "pca")


def _check_fit_options(
    method: str, components: int, covariance_type: str, synthetic_size: float, rounds: int, reg_covar: float,
    preprocess: str, pca_components: int | None,
) -> None:
    from fedgmm.types import COVARIANCE_TYPES

    if method not in ("fedgengmm", "fedem", "hybrid", "centralized"):
        raise ValueError(f"--method must be fedgengmm, fedem, hybrid or centralized, got {method!r}.")
    if components < 1:
        raise ValueError(f"--components must be an integer >= 1, got {components}.")
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"--covariance-type must be one of {', '.join(COVARIANCE_TYPES)}, got {covariance_type!r}.")
    if not (math.isfinite(synthetic_size) and synthetic_size > 0):
        raise ValueError(f"--synthetic-size must be a finite number > 0, got {synthetic_size}.")
    if rounds < 1:
        raise ValueError(f"--rounds must be an integer >= 1, got {rounds}.")
    if not (math.isfinite(reg_covar) and reg_covar >= 0):
        raise ValueError(f"--reg-covar must be a finite number >= 0, got {reg_covar}.")
    if preprocess not in PREPROCESS:
        raise ValueError(f"--preprocess must be one of {', '.join(PREPROCESS)}, got {preprocess!r}.")
    if pca_components is not None and (preprocess != "pca" or pca_components < 1):
        raise ValueError(f"--pca-components takes an integer >= 1 with --preprocess pca, got {pca_components}.")


def _parse_local_components(local_components: str) -> int | tuple[int, int] | None:
    parts = local_components.split("-")
    if local_components == "auto":
        return None
    if all(p.strip().isdigit() for p in parts) and len(parts) <= 2 and all(int(p) >= 1 for p in parts):
        return int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    raise ValueError(f"--local-components must be a number >= 1, 'MIN-MAX' or auto, got {local_components!r}.")


def _common_header(files: list[Path], label_column: str | None) -> list[str] | None:
    """The clients' shared header; every file's header must match the first's exactly."""
    headers = [_csv_header(f, label_column) for f in files]
    named = [(f, h) for f, h in zip(files, headers, strict=True) if h is not None]
    if not named:
        return None
    first_file, first = named[0]
    for f, h in named[1:]:
        if h != first:
            raise ValueError(
                f"{f}: its header differs from {first_file}'s ({_column_difference(first, h)}); every client "
                "file must have the same columns in the same order."
            )
    if len(named) < len(files):
        return None  # some files (.npy or header-less CSV) carry no names: nothing to store
    return first


#: ``fedgmm fit`` without ``--preprocess`` suggests it when column spreads differ by more than this factor.
SCALE_RATIO_HINT = 100.0


def _scale_hint(clients: list[Any], names: list[str] | None) -> str | None:
    """A note when the pooled column standard deviations differ by more than :data:`SCALE_RATIO_HINT`, else None.

    Parameters
    ----------
    clients : list of ndarray of shape (n_c, d)
    names : list of str, optional
        Column names for the message (else indices).
    """
    import numpy as np

    rows = [c for c in clients if c.shape[0]]
    n = sum(c.shape[0] for c in rows)
    if n < 2:
        return None
    mean = sum(c.sum(axis=0) for c in rows) / n
    sd = np.sqrt(sum(((c - mean) ** 2).sum(axis=0) for c in rows) / (n - 1))
    spread = np.flatnonzero(np.isfinite(sd) & (sd > 0))
    if spread.size < 2:
        return None
    lo, hi = spread[np.argmin(sd[spread])], spread[np.argmax(sd[spread])]
    if sd[hi] <= SCALE_RATIO_HINT * sd[lo]:
        return None
    label = (lambda j: repr(names[j])) if names else (lambda j: f"column {j}")
    return (
        f"the features' scales differ by a factor of {sd[hi] / sd[lo]:.3g} ({label(hi)} has standard deviation "
        f"{sd[hi]:.3g}, {label(lo)} {sd[lo]:.3g}): the components will follow the wide features. "
        "Consider --preprocess standardize (one federated round; the transform is stored in the model file)."
    )


def _phase(message: str) -> None:
    err_console.print(f"[dim]·[/] {message}")


@app.command()
def fit(
    files: list[Path] = typer.Argument(..., help="One .csv or .npy file per client."),
    out: Path = typer.Option(Path("model.npz"), help="Where to write the model file."),
    method: str = typer.Option("fedgengmm", help="fedgengmm, fedem, hybrid or centralized."),
    components: int = typer.Option(10, help="Global number of components K."),
    covariance_type: str = typer.Option("full", help="full, tied, diag or spherical."),
    local_components: str = typer.Option("auto", help="Clients' K: a number, a BIC range 'MIN-MAX', or auto (4 x components)."),
    synthetic_size: float = typer.Option(5.0, help="FedGenGMM synthetic set, as a multiple of the rows."),
    rounds: int = typer.Option(40, help="Federated EM rounds (most), or the hybrid's rounds."),
    reg_covar: float = typer.Option(1e-6, help="Added to covariance diagonals."),
    preprocess: str = typer.Option("none", help="none, standardize or pca: one federated round of summed moments first."),
    pca_components: int = typer.Option(None, help="With --preprocess pca: the dimensions kept (default: all)."),
    label_column: str = typer.Option(None, help="Column (index or header name) to ignore as a label."),
    seed: int = typer.Option(0, help="Run seed."),
    save_uploads: Path = typer.Option(None, help="FedGenGMM: also write each client's upload (what the server "
                                      "received) as DIR/upload-NNNN.npz, for `fedgmm audit --uploads DIR`."),
) -> None:
    """Train a global GMM on your own files, one file per client, and save it (with its
    feature names and transform)."""

    def action() -> None:
        import numpy as np

        from fedgmm.federated.preprocessing import run_preprocessing
        from fedgmm.federated.spec import MethodSpec
        from fedgmm.federated.transform_file import transform_payload
        from fedgmm.inprocess import check_clients, run_inprocess
        from fedgmm.inprocess.transport import InProcessTransport
        from fedgmm.model_io import save_mixture

        _check_fit_options(method, components, covariance_type, synthetic_size, rounds, reg_covar, preprocess,
                           pca_components)  # fmt: skip
        _check_out(out)
        if save_uploads is not None:
            from fedgmm.cli.audit import check_upload_folder

            check_upload_folder(save_uploads, method)
        local = _parse_local_components(local_components)
        spec = MethodSpec(
            method, n_components=components, covariance_type=covariance_type,  # type: ignore[arg-type]
            local_components=local, synthetic_size=synthetic_size, reg_covar=reg_covar, max_rounds=rounds,
        )
        _phase(f"reading {len(files)} client file(s)")
        names = _common_header(files, label_column)
        clients = [np.asarray(_read_client_file(f, label_column)) for f in files]
        check_clients(clients)
        transform = None
        if preprocess == "none" and (hint := _scale_hint(clients, names)) is not None:
            err_console.print(f"[yellow]note:[/] {hint}")
        if preprocess != "none":
            _phase(f"federated preprocessing round ({preprocess})")
            transport = InProcessTransport(clients)
            transform, _ = run_preprocessing(
                transport, standardize=True, n_components=(pca_components or clients[0].shape[1]) if preprocess == "pca" else None,
                min_clients=spec.min_clients,
            )  # fmt: skip
        _phase(f"{method}: fitting K={components} on {sum(c.shape[0] for c in clients):,} rows")

        def progress(kind: str, n_done: int, n_total: int) -> None:
            if n_done == n_total:
                _phase(f"{kind}: {n_total} client(s) answered")

        result = run_inprocess(spec, clients, seed=seed, progress=progress, transform=transform)
        if result.model is None:
            raise ValueError(f"{method} produced no global model.")
        comm = result.communication.summary()
        excluded = [f"{r.source}: {r.reason}" for r in result.records if r.status != "ok"]
        arrays, info = transform_payload(transform) if transform is not None else (None, None)
        save_mixture(out, result.model.state_, extra={
            "algorithm": method, "clients": [str(f) for f in files], "seed": seed, "communication": comm,
            "excluded": excluded, "preprocess": preprocess,
        }, feature_names=names, transform=arrays, transform_info=info)  # fmt: skip
        if save_uploads is not None:
            from fedgmm.cli.audit import save_uploads as write_uploads

            ids = result.extra.get("local_client_ids", [])
            write_uploads(save_uploads, {c: m.state_ for c, m in zip(ids, result.local_models, strict=True)},
                          files=files, extra={"algorithm": method, "seed": seed}, feature_names=names, transform=transform)
        table = Table(title=f"{method} on {len(files)} client file(s)")
        table.add_column("")
        table.add_column("value", justify="right")
        table.add_row("components", str(result.model.n_components))
        table.add_row("rows (all clients)", f"{sum(c.shape[0] for c in clients):,}")
        for name, X in zip(files, clients, strict=True):
            Z = transform.apply(X) if transform is not None and X.shape[0] else X
            table.add_row(f"mean log-lik on {name.name}", f"{result.model.score(Z):.3f}" if X.shape[0] else "—")
        table.add_row("rounds / bytes up / bytes down", f"{comm['rounds']} / {comm['bytes_up']:,} / {comm['bytes_down']:,}")
        console.print(table)
        for line in excluded:
            err_console.print(f"[yellow]excluded[/] {line}")
        console.print(f"model: {out}")

    guarded(action)


@app.command()
def score(
    model: Path = typer.Argument(..., help="A fedgmm model file (.npz)."),
    data: Path = typer.Argument(..., help="Rows to score (.csv or .npy), with the columns the model was fitted on."),
    threshold: float = typer.Option(None, help="Flag rows with log-likelihood below this."),
    quantile: float = typer.Option(0.05, help="Without --threshold: flag this lowest share of the rows."),
    label_column: str = typer.Option(None, help="Column (index or header name) to ignore as a label."),
    out: Path = typer.Option(None, help="Write the CSV here instead of standard output."),
) -> None:
    """Per-row log-likelihood and anomaly flags (log-likelihood below the threshold); a stored
    transform is applied first, and CSV columns must match the model's feature names."""

    def action() -> None:
        import numpy as np

        from fedgmm.federated.transform_file import transform_from_model
        from fedgmm.gaussian_mixture import GaussianMixture
        from fedgmm.model_io import load_model

        if threshold is not None and not math.isfinite(threshold):
            raise ValueError(f"--threshold must be a finite number, got {threshold}.")
        if threshold is None and not 0 < quantile < 1:
            raise ValueError(f"--quantile must be in (0, 1), got {quantile}.")
        if out is not None:
            _check_out(out)
        loaded = load_model(model)
        transform = transform_from_model(loaded)
        names = loaded.feature_names
        header = _csv_header(data, label_column)
        if names is not None and header is not None and header != names:
            raise ValueError(
                f"{data}: its columns do not match the model's features ({_column_difference(names, header)}); "
                f"the model expects {names}."
            )
        X = np.asarray(_read_client_file(data, label_column))
        d_in = transform.n_features_in if transform is not None else loaded.state.n_features
        if X.shape[1] != d_in:
            hint = ""
            side = model.parent / "transform.npz"
            if transform is None and side.is_file():
                hint = (f" The model was fitted on preprocessed features and {side} holds that transform; "
                        "this model file does not store it (re-save it with a current fedgmm, whose Flower "
                        "runs store the transform in model.npz).")  # fmt: skip
            raise ValueError(f"{data} has {X.shape[1]} features, the model expects {d_in}.{hint}")
        gm = GaussianMixture.from_state(loaded.state)
        ll = gm.score_samples(transform.apply(X) if transform is not None else X)
        cut = float(np.quantile(ll, quantile)) if threshold is None else float(threshold)
        flags = ll < cut
        handle = out.open("w", newline="", encoding="utf-8") if out else sys.stdout
        try:
            writer = csv.writer(handle)
            writer.writerow(["row", "log_likelihood", "anomaly"])
            for i, (v, f) in enumerate(zip(ll, flags, strict=True)):
                writer.writerow([i, f"{v:.6f}", int(f)])
        finally:
            if out:
                handle.close()
        err_console.print(f"{int(flags.sum())} of {len(ll)} rows flagged (log-likelihood < {cut:.4f}).")

    guarded(action)


def _mount_flower() -> None:
    from fedgmm.cli.flower import app as flower_app

    app.add_typer(flower_app, name="flower", help="Run the algorithms on Flower: local simulation and deployment.")


_mount_flower()


def _mount_audit() -> None:
    from fedgmm.cli.audit import audit

    app.command()(audit)


_mount_audit()


def main() -> None:
    """Console-script entry point."""
    app()

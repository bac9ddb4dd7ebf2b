"""``fedgmm audit``: membership-inference attacks on a run's released artefacts (uploads and global model)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from fedgmm.cli.errors import err_console, guarded
from fedgmm.cli.files import csv_header as _csv_header
from fedgmm.cli.files import label_index as _label_index

console = Console()

#: File names of the uploads ``fedgmm fit --save-uploads DIR`` writes (client index in the name).
UPLOAD_PATTERN = "upload-*.npz"
AUDIT_METHODS = ("fedgengmm", "fedem", "hybrid")
PREPROCESS = ("none", "standardize", "pca")


# fedgmm.cli imports this module to register the command: shared file helpers live in
# fedgmm.cli.files, not in fedgmm.cli (no import cycle).
def _phase(message: str) -> None:
    err_console.print(f"[dim]·[/] {message}")


def _read_file(path: Path, label_column: str | None) -> np.ndarray:
    from fedgmm.datasets import load_file

    return np.asarray(load_file(path, label_column=_label_index(label_column)).X, dtype=np.float64)


def _shared_header(files: list[Path], label_column: str | None) -> list[str] | None:
    """The client files' common header (None unless every file has the same one)."""
    headers = [_csv_header(f, label_column) for f in files]
    for f, h in zip(files[1:], headers[1:], strict=True):
        if h != headers[0]:
            raise ValueError(f"{f}: its columns differ from {files[0]}'s; every client file must have the same columns.")
    return headers[0]


def _local_components(text: str) -> int | tuple[int, int] | None:
    parts = text.split("-")
    if text == "auto":
        return None
    if len(parts) <= 2 and all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        return int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    raise ValueError(f"--local-components must be a number >= 1, 'MIN-MAX' or auto, got {text!r}.")


def upload_path(folder: Path, client: int) -> Path:
    """Where ``fedgmm fit --save-uploads`` writes client ``client``'s upload."""
    return folder / f"upload-{client:04d}.npz"


def check_upload_folder(folder: Path, method: str) -> None:
    """``--save-uploads``: FedGenGMM only, an empty or new folder in an existing parent (checked before any work)."""
    if method != "fedgengmm":
        raise ValueError(
            f"--save-uploads needs --method fedgengmm: {method} sends statistics each round (or, for the hybrid, "
            "its uploads are an intermediate step), not one local model per client."
        )
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--save-uploads {folder} exists and is not a folder.")
    if not folder.exists() and not folder.parent.is_dir():
        raise ValueError(f"--save-uploads {folder}: the folder {folder.parent} does not exist; create it first.")
    if folder.is_dir() and any(folder.glob(UPLOAD_PATTERN)):
        raise ValueError(f"--save-uploads {folder} already holds uploads of another run; give an empty folder.")


def save_uploads(
    folder: Path,
    uploads: dict[int, Any],
    *,
    files: list[Path],
    extra: dict[str, Any],
    feature_names: list[str] | None,
    transform: Any,
) -> list[Path]:
    """Write each client's upload (its decoded local model, as the server received it) as a model file.

    Parameters
    ----------
    folder : Path
        Created when missing.
    uploads : dict of int to MixtureState
        Client index → the local model it uploaded.
    files : list of Path
        The client files, in client order (recorded in each upload's metadata).
    extra : dict
        Run facts stored in every file (algorithm, seed, …).
    feature_names : list of str or None
    transform : Transform or None
        The federated preprocessing; stored so each upload applies to raw rows.
    """
    from fedgmm.federated.transform_file import transform_payload
    from fedgmm.model_io import save_mixture

    folder.mkdir(exist_ok=True)
    arrays, info = transform_payload(transform) if transform is not None else (None, None)
    out = []
    for client, state in sorted(uploads.items()):
        meta = {**extra, "artefact": "upload", "client": int(client), "client_file": str(files[client])}
        out.append(save_mixture(upload_path(folder, client), state, extra=meta, feature_names=feature_names,
                                transform=arrays, transform_info=info))  # fmt: skip
    return out


# ----------------------------------------------------------------------------- inputs
def _check_audit_options(holdout: float, fpr: float, confidence: float, n_bootstrap: int) -> None:
    if not 0 < holdout < 1:
        raise ValueError(f"--holdout must be in (0, 1), got {holdout}.")
    if not 0 < fpr < 1:
        raise ValueError(f"--fpr must be in (0, 1), got {fpr}.")
    if not 0 < confidence < 1:
        raise ValueError(f"--confidence must be in (0, 1), got {confidence}.")
    if n_bootstrap < 1:
        raise ValueError(f"--n-bootstrap must be an integer >= 1, got {n_bootstrap}.")


def _check_files(paths: list[Path], option: str) -> None:
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{option} {p}: no such file.")


def _read_rows(path: Path, label_column: str | None, names: list[str] | None, transform: Any, d: int) -> np.ndarray:
    """A data file's rows in the model's coordinates (columns checked against the model's names)."""
    header = _csv_header(path, label_column)
    if names is not None and header is not None and header != names:
        raise ValueError(f"{path}: its columns {header} do not match the model's features {names}.")
    X = _read_file(path, label_column)
    d_in = transform.n_features_in if transform is not None else d
    if X.ndim != 2 or X.shape[1] != d_in:
        raise ValueError(f"{path} has {X.shape[1] if X.ndim == 2 else '?'} features, the model expects {d_in}.")
    return transform.apply(X) if transform is not None else X


def _same_transform(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.array_equal(a.mean, b.mean) and np.array_equal(a.matrix, b.matrix))


def _load_uploads(folder: Path, global_file: Any) -> dict[int, Any]:
    """``upload-*.npz`` of ``fedgmm fit --save-uploads``: client index → MixtureState."""
    from fedgmm.federated.transform_file import transform_from_model
    from fedgmm.model_io import load_model

    if not folder.is_dir():
        raise FileNotFoundError(f"--uploads {folder}: no such folder.")
    files = sorted(folder.glob(UPLOAD_PATTERN))
    if not files:
        raise ValueError(f"--uploads {folder} holds no {UPLOAD_PATTERN} files; write them with `fedgmm fit --save-uploads`.")
    out: dict[int, Any] = {}
    g_transform = transform_from_model(global_file)
    for f in files:
        loaded = load_model(f)
        extra = loaded.metadata.get("extra", {})
        client = extra.get("client")
        if extra.get("artefact") != "upload" or not isinstance(client, int):
            raise ValueError(f"{f} is not an upload written by `fedgmm fit --save-uploads` (no client index).")
        if not _same_transform(transform_from_model(loaded), g_transform):
            raise ValueError(f"{f} was preprocessed differently from the global model: they are not from one run.")
        if loaded.state.n_features != global_file.state.n_features:
            raise ValueError(f"{f} has {loaded.state.n_features} features, the global model {global_file.state.n_features}.")
        out[client] = loaded.state
    return out


def _files_inputs(
    model: Path, members: list[Path], non_members: list[Path], reference: Path | None, uploads: Path | None,
    label_column: str | None,
) -> tuple[Any, dict[int, Any], list[np.ndarray], Any, np.ndarray | None, dict[str, Any]]:
    from fedgmm.federated.transform_file import transform_from_model
    from fedgmm.model_io import load_model

    loaded = load_model(model)
    ups = _load_uploads(uploads, loaded) if uploads is not None else {}
    if ups and max(ups) >= len(members):
        raise ValueError(
            f"--uploads has the upload of client {max(ups)}, but only {len(members)} --members file(s) were given: "
            "give one --members file per client, in the order they were given to `fedgmm fit`."
        )
    if len(non_members) not in (1, len(members)):
        raise ValueError(
            f"give one --non-members file per --members file ({len(members)}) or one shared file, got {len(non_members)}."
        )
    transform = transform_from_model(loaded)
    names, d = loaded.feature_names, loaded.state.n_features
    mem = [_read_rows(p, label_column, names, transform, d) for p in members]
    non = [_read_rows(p, label_column, names, transform, d) for p in non_members]
    non_arg: Any = non[0] if len(non) == 1 else non
    ref = _read_rows(reference, label_column, names, transform, d) if reference is not None else None
    facts = {"model": str(model), "privacy": loaded.metadata.get("extra", {}).get("privacy")}
    return loaded.state, ups, mem, non_arg, ref, facts


# ----------------------------------------------------------------------------- --fit
def _fit_inputs(
    files: list[Path], *, method: str, components: int, local_components: str, covariance_type: str,
    preprocess: str, pca_components: int | None, epsilon: float | None, delta: float, clip_bound: float | None,
    holdout: float, reference: Path | None, label_column: str | None, seed: int,
) -> tuple[Any, dict[int, Any], list[np.ndarray], Any, np.ndarray, dict[str, Any]]:
    """Hold out part of each client's rows, run the federation on the rest in process, return what it released."""
    from fedgmm.federated.dispatch import run_method
    from fedgmm.federated.preprocessing import run_preprocessing
    from fedgmm.federated.spec import MethodSpec
    from fedgmm.inprocess import check_clients
    from fedgmm.inprocess.transport import InProcessTransport
    from fedgmm.privacy.audit import holdout_split

    spec = MethodSpec(
        method, n_components=components, covariance_type=covariance_type,  # type: ignore[arg-type]
        local_components=_local_components(local_components), epsilon=epsilon, delta=delta,
        clip_bound=clip_bound,
    )
    if epsilon is not None and preprocess == "none" and clip_bound is None:
        raise ValueError("--epsilon needs a bound on the rows: --preprocess standardize or pca, or --clip-bound.")
    names = _shared_header(files, label_column)
    _phase(f"reading {len(files)} client file(s); holding out {holdout:g} of each")
    clients = check_clients([_read_file(f, label_column) for f in files])
    members, non_members, refs = holdout_split(clients, holdout, random_state=np.random.default_rng([seed, 0xA0D17]))
    if reference is not None:  # all held-out rows are non-members; the attacker's reference is the file
        non_members = [np.vstack([n, r]) for n, r in zip(non_members, refs, strict=True)]
    transform = None
    if preprocess != "none":
        _phase(f"federated preprocessing round ({preprocess}) on the members")
        transform, _ = run_preprocessing(
            InProcessTransport(members), standardize=True,
            n_components=(pca_components or members[0].shape[1]) if preprocess == "pca" else None,
        )  # fmt: skip
    _phase(f"{method}: fitting K={components} on {sum(m.shape[0] for m in members):,} member rows"
           + (f", ε = {epsilon:g}" if epsilon is not None else ""))  # fmt: skip
    with InProcessTransport(members) as transport:
        res = run_method(transport, spec, seed, transform=transform)

    def tf(X: np.ndarray) -> np.ndarray:
        return transform.apply(X) if transform is not None else X

    d = res.state.n_features
    ref: np.ndarray
    if reference is not None:
        ref = _read_rows(reference, label_column, names, transform, d)
    else:
        ref = tf(np.vstack(refs))
    uploads = {c: s for c, (s, _) in res.local_models.items()} if method == "fedgengmm" else {}
    spent = res.fedgengmm.privacy_spent if res.fedgengmm is not None and method == "fedgengmm" else {}
    facts = {
        "clients": [str(f) for f in files], "method": method, "seed": seed, "holdout": holdout,
        "epsilon": epsilon, "delta": delta if epsilon is not None else None,
        "privacy_spent": {str(c): list(v) for c, v in sorted(spent.items())},
        "excluded": [f"{r.source}: {r.reason}" for r in res.records.values() if r.status != "ok"],
    }  # fmt: skip
    return res.state, uploads, [tf(m) for m in members], [tf(n) for n in non_members], ref, facts


# ----------------------------------------------------------------------------- output
def _ci(value: float, ci: tuple[float, float]) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def print_audit(audits: list[Any], facts: dict[str, Any], *, fpr: float, confidence: float) -> None:
    """The audit as a rich table: artefact, attack, AUC [CI], TPR at ``fpr`` [CI], rows attacked."""
    table = Table(title=f"membership-inference audit ({confidence:.0%} bootstrap intervals)")
    for column in ("artefact", "attack", "AUC [CI]", f"TPR@{fpr * 100:g}%FPR [CI]", "members / non-members"):
        table.add_column(column, justify="left" if column in ("artefact", "attack") else "right", no_wrap=True)
    for a in audits:
        for r in a.results:
            table.add_row(a.name, r.attack, _ci(r.auc, r.auc_ci), _ci(r.tpr, r.tpr_ci), f"{r.n_members} / {r.n_non_members}")
    wide = Console(width=max(console.width, 110)) if not console.is_terminal else console
    wide.print(table)
    ups = [a for a in audits if a.artefact == "upload"]
    for attack in sorted({r.attack for a in ups for r in a.results}):
        aucs = [r.auc for a in ups for r in a.results if r.attack == attack]
        wide.print(f"uploads, {attack}: mean AUC {np.mean(aucs):.3f}, max {np.max(aucs):.3f} over {len(aucs)} client(s)")
    if facts.get("epsilon") is not None:
        spent = facts.get("privacy_spent") or {}
        top = max((v[0] for v in spent.values()), default=math.nan)
        wide.print(f"target (ε, δ) = ({facts['epsilon']:g}, {facts['delta']:g}); largest ε spent by a client: {top:.3f}")
    wide.print("AUC 0.5 is chance; an interval that covers 0.5 finds no membership signal at this sample size.")


def audit(
    files: list[Path] = typer.Argument(..., help="A model file (.npz), or with --fit one .csv/.npy file per client."),
    fit: bool = typer.Option(False, "--fit", help="Run a whole in-process federation on the client files (with a "
                             "held-out split) and audit what it released."),
    members: list[Path] = typer.Option(None, help="Rows the model was fitted on: one file per client, in the order "
                                       "given to `fedgmm fit` (repeat the option)."),
    non_members: list[Path] = typer.Option(None, help="Held-out rows of the same distribution: one file per "
                                           "--members file, or one shared file."),
    reference: Path = typer.Option(None, help="The attacker's own rows of the population (disjoint from both) for "
                                   "the density-ratio attack. With --fit, default: half of the held-out rows."),
    uploads: Path = typer.Option(None, help="A folder written by `fedgmm fit --save-uploads`: audit each upload too."),
    holdout: float = typer.Option(0.3, help="With --fit: share of each client's rows held out of the fit."),
    method: str = typer.Option("fedgengmm", help="With --fit: fedgengmm, fedem or hybrid."),
    components: int = typer.Option(10, help="With --fit: global number of components K."),
    local_components: str = typer.Option("auto", help="With --fit: clients' K (a number, 'MIN-MAX' or auto)."),
    covariance_type: str = typer.Option("full", help="With --fit: full, tied, diag or spherical."),
    preprocess: str = typer.Option("standardize", help="With --fit: none, standardize or pca (federated, on the members)."),
    pca_components: int = typer.Option(None, help="With --fit --preprocess pca: the dimensions kept."),
    epsilon: float = typer.Option(None, help="With --fit: record-level (ε, δ)-DP per client (default: off)."),
    delta: float = typer.Option(1e-5, help="With --fit --epsilon: the δ."),
    clip_bound: float = typer.Option(None, help="With --fit --epsilon: a public bound on the rows' norm."),
    n_bootstrap: int = typer.Option(200, help="Bootstrap resamples of the intervals."),
    fpr: float = typer.Option(0.01, help="False-positive rate of the reported TPR."),
    confidence: float = typer.Option(0.95, help="Level of the intervals."),
    label_column: str = typer.Option(None, help="Column (index or header name) to ignore as a label."),
    seed: int = typer.Option(0, help="Seeds the held-out split, the run and the bootstrap."),
    as_json: bool = typer.Option(False, "--json", help="Print the audit as JSON on standard output."),
) -> None:
    """Membership-inference audit: likelihood-threshold and density-ratio (DOMIAS) attacks on each
    upload and the global model, with AUC and TPR at 1% FPR and bootstrap intervals."""

    def action() -> None:
        from fedgmm.privacy.audit import audit_run

        _check_audit_options(holdout, fpr, confidence, n_bootstrap)
        if reference is not None:
            _check_files([reference], "--reference")
        if fit:
            if members or non_members or uploads is not None:
                raise ValueError("--fit makes its own members and non-members: leave out --members, --non-members "
                                 "and --uploads (or audit saved models without --fit).")  # fmt: skip
            if method not in AUDIT_METHODS:
                raise ValueError(f"--method must be one of {', '.join(AUDIT_METHODS)}, got {method!r}.")
            if preprocess not in PREPROCESS:
                raise ValueError(f"--preprocess must be one of {', '.join(PREPROCESS)}, got {preprocess!r}.")
            if epsilon is not None:
                from fedgmm.experiments.study import takes_epsilon

                if not takes_epsilon(method):
                    raise ValueError(f"--epsilon is not supported with --method {method} in this version; use fedgengmm.")
            if pca_components is not None and (preprocess != "pca" or pca_components < 1):
                raise ValueError(f"--pca-components takes an integer >= 1 with --preprocess pca, got {pca_components}.")
            _check_files(files, "client file")
            state, ups, mem, non, ref, facts = _fit_inputs(
                files, method=method, components=components, local_components=local_components,
                covariance_type=covariance_type, preprocess=preprocess, pca_components=pca_components,
                epsilon=epsilon, delta=delta, clip_bound=clip_bound, holdout=holdout, reference=reference,
                label_column=label_column, seed=seed,
            )  # fmt: skip
        else:
            if len(files) != 1:
                raise ValueError(f"give one model file to audit (or --fit with client files), got {len(files)} files.")
            if epsilon is not None or clip_bound is not None:
                raise ValueError("--epsilon and --clip-bound apply with --fit; a saved model's guarantee is in its file.")
            if not members or not non_members:
                raise ValueError("auditing a model file needs --members (the rows it was fitted on) and --non-members "
                                 "(held-out rows of the same distribution).")  # fmt: skip
            _check_files([files[0]], "model")
            _check_files(members, "--members")
            _check_files(non_members, "--non-members")
            state, ups, mem, non, ref, facts = _files_inputs(files[0], members, non_members, reference, uploads,
                                                             label_column)  # fmt: skip
        _phase(f"attacking {len(ups)} upload(s) and the global model ({n_bootstrap} bootstrap resamples)")
        audits = audit_run(state, ups, mem, non, reference=ref, fpr=fpr, n_bootstrap=n_bootstrap,
                           confidence=confidence, random_state=seed)  # fmt: skip
        if as_json:
            payload = {**facts, "fpr": fpr, "confidence": confidence, "n_bootstrap": n_bootstrap,
                       "artefacts": [a.to_dict() for a in audits]}  # fmt: skip
            typer.echo(json.dumps(payload, indent=2))
        else:
            print_audit(audits, facts, fpr=fpr, confidence=confidence)
        for line in facts.get("excluded", []):
            err_console.print(f"[yellow]excluded[/] {line}")

    guarded(action)

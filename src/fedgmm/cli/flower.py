"""``fedgmm flower``: run the Flower app on a local deployment or simulation, write connections, make certificates."""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from fedgmm.cli.errors import err_console, guarded
from fedgmm.flower.settings import DEFAULTS

app = typer.Typer(
    help="Run fedgmm's federated algorithms as a Flower app (local deployment engine or Ray simulation).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
T = TypeVar("T")

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-c", help="Run-config override KEY=VALUE (TOML value; strings need no quotes here). Repeatable."),
]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Output directory (model.npz, summary.json).")]
WorkdirOption = Annotated[
    Path | None, typer.Option("--workdir", help="Logs, configs and FLWR_HOME [default: OUT/federation].")
]
TimeoutOption = Annotated[float, typer.Option("--timeout", help="Seconds to wait for the run to finish.")]
AppOption = Annotated[Path | None, typer.Option("--app-dir", help="Flower app directory [default: the fedgmm source tree].")]


def _guard(action: Callable[[], T]) -> T:
    from fedgmm.flower.control import FlowerCLIError

    return guarded(action, (FlowerCLIError, TimeoutError, RuntimeError))


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["algorithm=fedem", "max-rounds=5"]`` → run-config dict; keys must be run-config keys.

    String keys take the text as is (``dataset=blobs``, quotes optional); the others a
    TOML literal (``5`` int, ``5.0`` float, ``true``); ``eval-label-column`` an index or a name.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE.")
        if key not in DEFAULTS:
            close = difflib.get_close_matches(key, list(DEFAULTS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"--set {item!r}: {key!r} is not a run-config key.{hint} Keys: {', '.join(DEFAULTS)}.")
        if key == "eval-label-column" and raw.lstrip("-").isdigit():
            out[key] = int(raw)
        elif isinstance(DEFAULTS[key], str):
            out[key] = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"" else raw
        else:
            try:
                out[key] = tomllib.loads(f"v = {raw}")["v"]
            except tomllib.TOMLDecodeError:
                raise ValueError(f"--set {item!r}: {raw!r} is not a number or true/false.") from None
    return out


def _run_config(out: Path, nodes: int, overrides: dict[str, Any]) -> dict[str, Any]:
    config = {"output-dir": str(out.resolve()), "min-nodes": nodes, **overrides}
    if "min-replies" not in overrides:
        config["min-replies"] = min(int(DEFAULTS["min-replies"]), nodes)
    return config


def _report(record: dict[str, Any], out: Path) -> None:
    """Print the run's status and summary; exit 1 unless it completed."""
    from fedgmm.flower.control import COMPLETED
    from fedgmm.flower.job import SUMMARY_FILE

    status = str(record.get("status"))
    details = record.get("status-details") or ""
    summary_path = out / SUMMARY_FILE
    summary: dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    table = Table(title=f"run {record.get('run-id')}: {status}")
    table.add_column("client")
    table.add_column("node")
    table.add_column("status")
    table.add_column("rows", justify="right")
    table.add_column("reason")
    for row in summary.get("clients", []):
        table.add_row(row["source"], str(row.get("node_id")), row["status"], str(row["n_samples"]), row["reason"])
    if summary.get("clients"):
        console.print(table)
    for node in summary.get("nodes", []):
        for failure in node.get("failures", []):
            console.print(f"node {node['node_id']} (client {node['client_id']}): round {failure['round']} "
                          f"{failure['kind']}: {failure['reason']}")
    if summary.get("status") == "completed":
        total = summary["total"]
        console.print(
            f"{summary['algorithm']}: {total['rounds']} rounds, {total['bytes_up']:,} bytes up, "
            f"{total['bytes_down']:,} bytes down (preprocessing included); model {out / summary['model']['path']}"
        )
        if "evaluation" in summary:
            console.print(f"evaluation: {summary['evaluation']}")
    if status != COMPLETED:
        err_console.print(f"[bold red]run {record.get('run-id')} {status}[/]: {details or summary.get('error', '')}")
        raise typer.Exit(1)
    console.print(f"[green]{status}[/]; summary in {summary_path}")


class _Engine(Protocol):
    """What :func:`_run_job` needs of a :class:`LocalFederation` or a :class:`LocalSimulation`."""

    workdir: Path

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...

    def submit(self, run_config: Mapping[str, Any], app: Path | None = None) -> int: ...

    def wait(self, run_id: int, timeout: float = ..., output_dir: str | Path | None = ...) -> dict[str, Any]: ...


def _run_job(
    make: Callable[[Path], _Engine], what: str, n_nodes: int, overrides: list[str] | None, out: Path,
    timeout: float, app_dir: Path | None,
) -> None:
    """Check the options, start ``make(out)``, run one job on it printing a line per round, stop it, report.

    Ctrl-C stops every process started and exits 130 saying so.
    """
    resolved = out.resolve()

    def run() -> dict[str, Any]:
        config = _run_config(resolved, n_nodes, parse_overrides(overrides))
        engine = make(resolved)
        try:
            with engine:
                run_id = engine.submit(config, app_dir)
                console.print(f"run {run_id} submitted; waiting for it (flwr ls), one line per round")
                with _RoundLines(resolved, run_id):
                    record = engine.wait(run_id, timeout=timeout, output_dir=resolved)
        except KeyboardInterrupt:
            err_console.print(f"interrupted — stopped the {what} (logs in {engine.workdir})")
            raise typer.Exit(130) from None
        console.print(f"stopped every process started (logs in {engine.workdir})")
        return record

    _report(_guard(run), resolved)


@app.command("local")
def local(
    nodes: Annotated[int, typer.Option("--nodes", "-n", min=1, help="SuperNodes (partition i of N each).")] = 3,
    tls: Annotated[bool, typer.Option("--tls/--insecure", help="Run the SuperLink with generated TLS certificates.")] = False,
    data: Annotated[
        list[Path] | None, typer.Option("--data", help="A node's own .csv/.npy file (one node per --data; replaces --nodes).")
    ] = None,
    label_column: Annotated[str, typer.Option(help="Label column of the --data files, dropped from the features.")] = "",
    overrides: SetOption = None,
    out: OutOption = Path("flower-output"),
    workdir: WorkdirOption = None,
    timeout: TimeoutOption = 900.0,
    app_dir: AppOption = None,
) -> None:
    """Start a SuperLink and SuperNodes on 127.0.0.1, run one job, wait, report, stop everything."""
    from fedgmm.flower.federation import LocalFederation

    node_configs: list[dict[str, Any]]
    if data:
        node_configs = []
        for i, path in enumerate(data):
            cfg: dict[str, Any] = {"data-path": str(path.resolve()), "client-id": i}
            if label_column:
                cfg["label-column"] = int(label_column) if label_column.lstrip("-").isdigit() else label_column
            node_configs.append(cfg)
    else:
        node_configs = [{"partition-id": i, "num-partitions": nodes} for i in range(nodes)]

    def make(resolved: Path) -> LocalFederation:
        fed = LocalFederation(workdir or resolved / "federation", node_configs, tls=tls)
        console.print(f"starting a SuperLink and {len(node_configs)} SuperNodes ({'TLS' if tls else 'insecure'}) in {fed.workdir}")
        return fed

    _run_job(make, "local federation", len(node_configs), overrides, out, timeout, app_dir)


class _RoundLines:
    """A thread printing one line per round from the job's ``progress.json`` while a run is waited for.

    Reads the file's ``rounds`` history, so no round is skipped when several end between
    two polls; a last poll on exit prints the rounds that ended just before the run did.
    """

    def __init__(self, out: Path, run_id: int, every: float = 0.5) -> None:
        import threading

        from fedgmm.flower.job import PROGRESS_FILE

        self.path, self.run_id, self.every, self.seen = out / PROGRESS_FILE, run_id, every, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def poll(self) -> None:
        """Print the rounds of this run not printed yet."""
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(info, dict) or info.get("run_id") != self.run_id:
            return
        rounds = info.get("rounds") or [{
            "round": info.get("round", 0), "kind": info.get("kind"), "answered": len(info.get("answered", [])),
            "failed": sorted(info.get("failed", {})),
        }]  # fmt: skip
        for entry in rounds:
            number = int(entry.get("round", 0))
            if number <= self.seen:
                continue
            self.seen = number
            n_ok, failed = int(entry.get("answered", 0)), list(entry.get("failed", []))
            line = f"  round {number} ({entry.get('kind')}): {n_ok} of {n_ok + len(failed)} nodes answered"
            console.print(line + (f"; no answer from {', '.join(map(str, failed))}" if failed else ""), highlight=False)

    def _watch(self) -> None:
        while not self.done.wait(self.every):
            self.poll()

    def __enter__(self) -> _RoundLines:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=5)
        self.poll()


@app.command("simulate")
def simulate(
    nodes: Annotated[int, typer.Option("--nodes", "-n", min=1, help="Simulated SuperNodes.")] = 3,
    cpus_per_node: Annotated[float, typer.Option(help="CPUs Ray reserves per ClientApp.")] = 1.0,
    ray_loopback: Annotated[bool, typer.Option(
        "--ray-loopback/--ray-all-interfaces",
        help="Ray listens on 127.0.0.1 only; --ray-all-interfaces leaves Ray's default (all interfaces).",
    )] = True,
    overrides: SetOption = None,
    out: OutOption = Path("flower-output"),
    workdir: WorkdirOption = None,
    timeout: TimeoutOption = 900.0,
    app_dir: AppOption = None,
) -> None:
    """Run one job with the Ray simulation engine (`flwr run ... local`), wait, report, stop the local SuperLink."""
    from fedgmm.flower.federation import LocalSimulation

    def make(resolved: Path) -> LocalSimulation:
        sim = LocalSimulation(
            workdir or resolved / "federation", num_supernodes=nodes, cpus_per_node=cpus_per_node, ray_loopback=ray_loopback,
        )
        console.print(f"starting a local simulation SuperLink ({nodes} simulated nodes) in {sim.workdir}")
        return sim

    _run_job(make, "simulation", nodes, overrides, out, timeout, app_dir)


@app.command("config")
def config(
    flwr_home: Annotated[Path | None, typer.Option(help="Flower home [default: $FLWR_HOME or ~/.flwr].")] = None,
    name: Annotated[str, typer.Option(help="Connection name for the deployment SuperLink.")] = "deploy",
    address: Annotated[str, typer.Option(help="SuperLink address host:port.")] = "127.0.0.1:9093",
    root_certificates: Annotated[
        Path | None, typer.Option(help="CA certificate of a TLS SuperLink (omit for an insecure one).")
    ] = None,
    default: Annotated[str | None, typer.Option(help="Connection flwr uses when none is named.")] = None,
) -> None:
    """Write the `local` (simulation) and a deployment connection into $FLWR_HOME/config.toml."""
    from fedgmm.flower.control import Connection, write_connections
    from fedgmm.flower.control import flwr_home as home_of

    def run() -> Path:
        conn = Connection(name, address, insecure=root_certificates is None, root_certificates=root_certificates)
        return write_connections(home_of(flwr_home), [conn], default)

    path = _guard(run)
    console.print(f"wrote {path}:")
    console.print(path.read_text(), markup=False, highlight=False)


@app.command("certs")
def certs(
    directory: Annotated[Path, typer.Argument(help="Where ca.crt, server.pem and server.key go.")],
    days: Annotated[int, typer.Option(min=1, help="Validity in days.")] = 30,
) -> None:
    """Generate a CA and a server certificate for a SuperLink on 127.0.0.1/localhost."""
    from fedgmm.flower.certs import make_certificates

    made = _guard(lambda: make_certificates(directory, days=days))
    console.print(f"CA {made.ca}\nserver certificate {made.server_cert}\nserver key {made.server_key}")


@app.command("stop-simulation")
def stop_simulation(
    port: Annotated[int, typer.Option(help="HTTP port of the local simulation SuperLink.")] = 39091,
) -> None:
    """Stop the local simulation SuperLink that `flwr run ... local` left running (by PID, with its children)."""
    from fedgmm.flower.processes import find_processes, stop_pids

    pids = find_processes("flower-superlink", "--simulation", f"--port {port} ")
    if not pids:
        console.print(f"no local simulation SuperLink on port {port}.")
        return
    killed = stop_pids(pids)
    console.print(f"stopped local SuperLink PID {', '.join(map(str, pids))}" + (f" (SIGKILL: {killed})" if killed else ""))


if __name__ == "__main__":  # python -m fedgmm.cli.flower local|simulate|config|certs ...
    app(prog_name="python -m fedgmm.cli.flower")

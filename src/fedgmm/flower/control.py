"""Driving the ``flwr`` CLI: connections in ``$FLWR_HOME/config.toml``, submitting runs, reading their status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from fedgmm.flower.settings import DEFAULTS

#: Environment every Flower process of ours gets (no telemetry, no update check, no
#: runtime ``uv sync`` of app dependencies by the SuperLink).
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}
FINISHED = "finished:"
COMPLETED = "finished:completed"


class FlowerCLIError(RuntimeError):
    """A ``flwr`` command failed; the message holds its error text."""


def bin_dir() -> Path:
    """The directory holding ``flwr``, ``flower-superlink`` and ``flower-supernode`` (this Python's)."""
    here = Path(sys.executable).parent
    if (here / "flwr").exists():
        return here
    found = shutil.which("flwr")
    if found is None:
        raise FlowerCLIError("the 'flwr' command is not installed next to this Python or on PATH; install flwr[simulation].")
    return Path(found).parent


def flower_env(flwr_home: str | Path | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus :data:`FLOWER_ENV`, ``FLWR_HOME`` and the Flower bin dir first on PATH."""
    env = dict(os.environ)
    env.update(FLOWER_ENV)
    if flwr_home is not None:
        env["FLWR_HOME"] = str(Path(flwr_home).resolve())
    env["PATH"] = f"{bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Connection:
    """A SuperLink connection of ``$FLWR_HOME/config.toml``.

    Attributes
    ----------
    name : str
    address : str
        ``"127.0.0.1:9093"``, or ``":local:"`` for a local simulation SuperLink.
    insecure : bool
    root_certificates : Path or None
        CA certificate of a TLS SuperLink.
    """

    name: str
    address: str
    insecure: bool = False
    root_certificates: Path | None = None

    def as_toml(self) -> dict[str, Any]:
        """The connection's table."""
        table: dict[str, Any] = {"address": self.address}
        if self.insecure:
            table["insecure"] = True
        if self.root_certificates is not None:
            table["root-certificates"] = str(Path(self.root_certificates).resolve())
        return table


LOCAL = Connection("local", ":local:")


def flwr_home(path: str | Path | None = None) -> Path:
    """``path``, else ``$FLWR_HOME``, else ``~/.flwr`` (Flower's own rule)."""
    if path is not None:
        return Path(path).expanduser().resolve()
    return Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr")).expanduser().resolve()


def write_connections(home: str | Path, connections: list[Connection], default: str | None = None) -> Path:
    """Add (or replace) ``connections`` in ``home/config.toml``, keeping the others; return its path.

    The ``local`` simulation connection is always present. ``default`` names the
    connection ``flwr`` uses when none is given (unchanged when None, ``local`` for a new file).
    """
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    config: dict[str, Any] = tomllib.loads(path.read_text()) if path.exists() else {}
    superlink = config.setdefault("superlink", {})
    superlink.setdefault(LOCAL.name, LOCAL.as_toml())
    for connection in connections:
        superlink[connection.name] = connection.as_toml()
    if default is not None:
        superlink["default"] = default
    superlink.setdefault("default", LOCAL.name)
    path.write_text(tomli_w.dumps(config))
    return path


def project_dir() -> Path | None:
    """The fedgmm source tree's root when it is a Flower app (its pyproject has ``[tool.flwr.app]``)."""
    root = Path(__file__).resolve().parents[3]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            tool = tomllib.loads(pyproject.read_text()).get("tool", {})
        except tomllib.TOMLDecodeError:
            return None
        if "app" in tool.get("flwr", {}) and "federations" not in tool["flwr"]:
            return root
    return None


def write_app_dir(directory: str | Path) -> Path:
    """A minimal Flower app directory (only a ``pyproject.toml``) for an installed fedgmm.

    The components are imported from the installed package, so the FAB needs no code.
    """
    from fedgmm._version import __version__

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "build-system": {"requires": ["setuptools>=68"], "build-backend": "setuptools.build_meta"},
        "project": {"name": "fedgmm", "version": __version__.split("+")[0], "description": "fedgmm Flower app",
                    "license": "Apache-2.0", "dependencies": []},
        "tool": {"flwr": {"app": {
            "publisher": "fedgmm",
            "components": {"serverapp": "fedgmm.flower.server_app:app", "clientapp": "fedgmm.flower.client_app:app"},
            "config": dict(DEFAULTS),
        }}},
    }  # fmt: skip
    (directory / "pyproject.toml").write_text(tomli_w.dumps(config))
    return directory


def app_dir(workdir: str | Path) -> Path:
    """The app to run: the source tree when it is one, else a generated one under ``workdir``."""
    return project_dir() or write_app_dir(Path(workdir) / "app")


def parse_json_output(text: str) -> dict[str, Any]:
    """The JSON object a ``flwr ... --format json`` call printed (ignoring lines around it)."""
    start = text.find("{")
    end = text.rfind("}")
    if start < 0 or end < start:
        raise FlowerCLIError(f"flwr printed no JSON: {text.strip()[:500]!r}")
    try:
        data = json.loads(text[start : end + 1])
    except json.JSONDecodeError as exc:
        raise FlowerCLIError(f"flwr printed invalid JSON ({exc}): {text.strip()[:500]!r}") from None
    if not isinstance(data, dict):
        raise FlowerCLIError(f"flwr printed unexpected JSON: {data!r}")
    return data


def flwr(args: list[str], *, env: Mapping[str, str], cwd: str | Path, timeout: float = 120.0) -> dict[str, Any]:
    """Run ``flwr <args> --format json`` and return its JSON; raise when it reports failure.

    ``flwr --format json`` exits 0 even when the call failed, so ``"success"`` is checked.
    Run it from a directory without a ``pyproject.toml`` that has ``[tool.flwr.federations]``:
    ``flwr`` rewrites such a file.
    """
    cmd = [str(bin_dir() / "flwr"), *args, "--format", "json"]
    proc = subprocess.run(cmd, env=dict(env), cwd=str(cwd), capture_output=True, text=True, timeout=timeout, check=False)
    try:
        data = parse_json_output(proc.stdout)
    except FlowerCLIError as exc:
        raise FlowerCLIError(f"`flwr {' '.join(args)}` failed (exit {proc.returncode}): {exc}; stderr: {proc.stderr.strip()[-800:]}") from None
    if not data.get("success", False):
        raise FlowerCLIError(f"`flwr {' '.join(args)}` failed: {data.get('error-message', data)}")
    return data


def submit_run(
    app: str | Path,
    connection: str,
    run_config: Mapping[str, Any],
    *,
    env: Mapping[str, str],
    cwd: str | Path,
    federation_config: str | None = None,
) -> int:
    """Start a run with ``flwr run`` (not waiting for it); return its run id.

    The run config overrides go through a TOML file written in ``cwd`` (no shell quoting).
    """
    config_file = Path(cwd) / f"run-config-{time.time_ns()}.toml"
    config_file.write_text(tomli_w.dumps(dict(run_config)))
    args = ["run", str(Path(app).resolve()), connection, "--run-config", str(config_file.resolve())]
    if federation_config:
        args += ["--federation-config", federation_config]
    data = flwr(args, env=env, cwd=cwd, timeout=300.0)
    return int(data["run-id"])


def run_status(connection: str, run_id: int, *, env: Mapping[str, str], cwd: str | Path) -> dict[str, Any]:
    """The ``flwr ls --run-id`` record of a run (``status``, ``status-details``, ``network-traffic``, …)."""
    data = flwr(["ls", connection, "--run-id", str(run_id)], env=env, cwd=cwd, timeout=120.0)
    runs = data.get("runs") or []
    if not runs:
        raise FlowerCLIError(f"the SuperLink knows no run {run_id}.")
    return dict(runs[0])


def wait_for_run(
    connection: str,
    run_id: int,
    *,
    env: Mapping[str, str],
    cwd: str | Path,
    timeout: float = 600.0,
    poll: float = 2.0,
    ready: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Poll ``flwr ls`` until the run's status is ``finished:*``; return its record.

    Each ``flwr ls`` takes about 2 s. With ``ready`` (a cheap local check, e.g. that the
    ServerApp wrote its summary), ``flwr ls`` is asked only once ``ready()`` is true, or
    every 15 s in case the run ended without writing anything.

    Raises
    ------
    TimeoutError
        If it has not finished after ``timeout`` seconds (the run is left running).
    """
    deadline = time.monotonic() + timeout
    last_asked = -float("inf")
    while True:
        if ready is None or ready() or time.monotonic() - last_asked > 15.0:
            last_asked = time.monotonic()
            record = run_status(connection, run_id, env=env, cwd=cwd)
            if str(record.get("status", "")).startswith(FINISHED):
                return record
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} is not finished after {timeout:g} s.")
        time.sleep(poll if ready is None else 0.25)


def summary_written(output_dir: str | Path, run_id: int) -> Callable[[], bool]:
    """A ``ready`` check for :func:`wait_for_run`: the run's ``summary.json`` says it ended."""
    path = Path(output_dir) / "summary.json"

    def ready() -> bool:
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return bool(summary.get("run_id") == run_id and summary.get("status") in ("completed", "failed"))

    return ready

"""The ``fedgmm flower`` commands that need no running Flower: overrides, connections, certificates."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import ClassVar

import pytest
from cryptography import x509
from typer.testing import CliRunner

from fedgmm.cli.flower import app, parse_overrides
from fedgmm.flower.control import (
    COMPLETED,
    Connection,
    parse_json_output,
    project_dir,
    write_app_dir,
    write_connections,
)
from fedgmm.flower.settings import DEFAULTS

runner = CliRunner()


def test_overrides_are_typed_by_the_key() -> None:
    got = parse_overrides(["algorithm=fedem", "dataset='blobs'", "max-rounds=5", "tol=1e-4", "download-model=true",
                           "eval-label-column=2", "dataset-args=n_samples=600 n_features=3"])  # fmt: skip
    assert got == {
        "algorithm": "fedem", "dataset": "blobs", "max-rounds": 5, "tol": 1e-4, "download-model": True,
        "eval-label-column": 2, "dataset-args": "n_samples=600 n_features=3",
    }  # fmt: skip
    with pytest.raises(ValueError, match="Did you mean 'max-rounds'"):
        parse_overrides(["max-round=3"])
    with pytest.raises(ValueError, match="not a number"):
        parse_overrides(["max-rounds=many"])


def test_config_command_writes_connections_and_keeps_others(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_connections(home, [Connection("mine", "10.0.0.1:9093", insecure=True)])
    result = runner.invoke(app, ["config", "--flwr-home", str(home), "--address", "127.0.0.1:9500",
                                 "--root-certificates", str(tmp_path / "ca.crt"), "--default", "deploy"])  # fmt: skip
    assert result.exit_code == 0, result.output
    config = tomllib.loads((home / "config.toml").read_text())["superlink"]
    assert config["local"] == {"address": ":local:"} and config["mine"]["insecure"] is True
    assert config["deploy"] == {"address": "127.0.0.1:9500", "root-certificates": str((tmp_path / "ca.crt").resolve())}
    assert config["default"] == "deploy"


def test_certs_command_makes_a_ca_signed_server_certificate(tmp_path: Path) -> None:
    result = runner.invoke(app, ["certs", str(tmp_path / "certs")])
    assert result.exit_code == 0, result.output
    ca = x509.load_pem_x509_certificate((tmp_path / "certs" / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((tmp_path / "certs" / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    assert (tmp_path / "certs" / "server.key").stat().st_mode & 0o077 == 0


def test_app_directories(tmp_path: Path) -> None:
    root = project_dir()
    assert root is not None and (root / "src" / "fedgmm" / "flower" / "server_app.py").is_file()
    generated = tomllib.loads((write_app_dir(tmp_path / "app") / "pyproject.toml").read_text())
    assert generated["tool"]["flwr"]["app"]["config"] == DEFAULTS


def test_json_output_is_found_among_log_lines() -> None:
    assert parse_json_output('Starting local SuperLink...\n{"success": true, "run-id": "12"}\n') == {
        "success": True, "run-id": "12",
    }  # fmt: skip
    with pytest.raises(RuntimeError, match="no JSON"):
        parse_json_output("Connection to the SuperLink is unavailable")


class FakeEngine:
    """Stands in for LocalFederation / LocalSimulation: ``wait`` writes a 3-round progress.json, or is interrupted."""

    instances: ClassVar[list[FakeEngine]] = []
    interrupt = False

    def __init__(self, workdir: Path, *args: object, **kwargs: object) -> None:
        self.workdir, self.entered, self.stopped, self.kwargs = Path(workdir), False, False, kwargs
        FakeEngine.instances.append(self)

    def __enter__(self) -> FakeEngine:
        self.entered = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped = True

    def submit(self, run_config: dict[str, object], app: Path | None = None) -> int:
        self.out = Path(str(run_config["output-dir"]))
        return 7

    def wait(self, run_id: int, timeout: float = 0.0, output_dir: Path | None = None) -> dict[str, object]:
        if FakeEngine.interrupt:
            raise KeyboardInterrupt
        rounds = [{"round": 1, "kind": "moments", "answered": 3, "failed": []},
                  {"round": 2, "kind": "fit-local", "answered": 3, "failed": []},
                  {"round": 3, "kind": "em-statistics", "answered": 2, "failed": ["client 2"]}]  # fmt: skip
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "progress.json").write_text(json.dumps({"run_id": run_id, "round": 3, "rounds": rounds}))
        return {"run-id": run_id, "status": COMPLETED}


@pytest.fixture
def fake_engines(monkeypatch: pytest.MonkeyPatch) -> type[FakeEngine]:
    import fedgmm.flower.federation as federation

    FakeEngine.instances, FakeEngine.interrupt = [], False
    monkeypatch.setattr(federation, "LocalFederation", FakeEngine)
    monkeypatch.setattr(federation, "LocalSimulation", FakeEngine)
    return FakeEngine


@pytest.mark.parametrize("command", ["local", "simulate"])
def test_local_and_simulate_print_one_line_per_round(tmp_path: Path, fake_engines: type[FakeEngine], command: str) -> None:
    result = runner.invoke(app, [command, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines() if line.strip().startswith("round ")]
    assert lines == [
        "round 1 (moments): 3 of 3 nodes answered",
        "round 2 (fit-local): 3 of 3 nodes answered",
        "round 3 (em-statistics): 2 of 3 nodes answered; no answer from client 2",
    ]
    assert fake_engines.instances[0].stopped


@pytest.mark.parametrize(("command", "what"), [("local", "local federation"), ("simulate", "simulation")])
def test_ctrl_c_stops_the_processes_and_says_so(tmp_path: Path, fake_engines: type[FakeEngine], command: str, what: str) -> None:
    fake_engines.interrupt = True
    result = runner.invoke(app, [command, "--out", str(tmp_path / "out")])
    assert result.exit_code == 130, result.output  # not turned into "error: 130", exit 2, by the error guard
    assert f"interrupted — stopped the {what}" in result.output and "error" not in result.output
    assert fake_engines.instances[0].stopped


def test_bad_overrides_are_refused_before_anything_starts(tmp_path: Path, fake_engines: type[FakeEngine]) -> None:
    result = runner.invoke(app, ["simulate", "--set", "max-round=3", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Did you mean 'max-rounds'" in " ".join(result.output.split())
    assert fake_engines.instances == []


def test_simulate_is_loopback_only_unless_told_otherwise(tmp_path: Path, fake_engines: type[FakeEngine]) -> None:
    assert runner.invoke(app, ["simulate", "--out", str(tmp_path / "a")]).exit_code == 0
    assert runner.invoke(app, ["simulate", "--ray-all-interfaces", "--out", str(tmp_path / "b")]).exit_code == 0
    assert [e.kwargs["ray_loopback"] for e in fake_engines.instances] == [True, False]

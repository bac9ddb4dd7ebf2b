"""The ``fedgmm flower`` commands that need no running Flower: overrides, connections, certificates."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from fedgmm.cli.flower import app, parse_overrides
from fedgmm.flower.control import (
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

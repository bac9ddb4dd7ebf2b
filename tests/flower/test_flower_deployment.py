"""Real Flower processes on loopback: deployment engine (insecure and TLS), faults, and the Ray simulation."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flower_testing import inprocess_reference, process_tree, still_running, wait_for_round

from fedgmm.flower.control import COMPLETED, FLOWER_ENV
from fedgmm.flower.federation import LocalFederation, LocalSimulation
from fedgmm.flower.processes import alive, find_processes, stop_pids
from fedgmm.flower.settings import DataSettings
from fedgmm.flower.task import partition_rows
from fedgmm.model_io import load_mixture

pytestmark = pytest.mark.flower


def partition_configs(n: int = 3) -> list[dict[str, Any]]:
    return [{"partition-id": i, "num-partitions": n} for i in range(n)]


@contextmanager
def running(fed: LocalFederation) -> Iterator[LocalFederation]:
    """Start ``fed``; afterwards stop it and check that no process it started (or their children) is left."""
    try:
        fed.start()
        assert all(fed.env[k] == v for k, v in FLOWER_ENV.items())
        yield fed
    finally:
        tree = process_tree(fed.pids())
        fed.stop()
        assert still_running(tree) == [], "processes left after stop()"


def check_against_inprocess(config: dict[str, Any], out: Path) -> dict[str, Any]:
    """The saved model equals the in-process runner's; the summary's bytes equal its CommunicationLog's."""
    summary = json.loads((out / "summary.json").read_text())
    run, pre_log, _ = inprocess_reference(config)
    state, meta = load_mixture(out / "model.npz")
    reference = run.model.state_
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(getattr(state, name), getattr(reference, name), rtol=1e-8, atol=1e-10)
    comm = run.communication
    assert (summary["rounds"], summary["bytes_up"], summary["bytes_down"]) == (comm.rounds, comm.bytes_up, comm.bytes_down)
    assert [(r["bytes_up"], r["bytes_down"]) for r in summary["per_round"]] == [(r.bytes_up, r.bytes_down) for r in comm.per_round]
    if pre_log is not None:
        pre = summary["preprocessing_communication"]
        assert (pre["bytes_up"], pre["bytes_down"]) == (pre_log.bytes_up, pre_log.bytes_down)
    assert meta["extra"]["algorithm"] == config["algorithm"]
    return dict(summary)


def test_deployment_gives_the_inprocess_models_and_bytes(tmp_path: Path, blobs_config: dict[str, Any]) -> None:
    with running(LocalFederation(tmp_path / "fed", partition_configs())) as fed:
        for algorithm in ("fedgengmm", "fedem"):
            out = tmp_path / algorithm
            config = {**blobs_config, "algorithm": algorithm, "output-dir": str(out), "wait-timeout": 30.0,
                      "round-timeout": 60.0, "max-rounds": 3, "round-tol": 1e-12}  # fmt: skip
            run_id = fed.submit(config)
            record = fed.wait(run_id, timeout=150, output_dir=out)  # status read with `flwr ls --format json`
            assert record["status"] == COMPLETED, record
            assert record["network-traffic"]["outbound-bytes"] > 0
            summary = check_against_inprocess(config, out)
            assert summary["run_id"] == run_id and summary["clients_used"] == 3
            if algorithm == "fedem":
                assert summary["n_rounds"] == 3 and len(summary["history"]) == 3


def test_killed_node_is_recorded_and_too_few_nodes_fail_the_run(tmp_path: Path, blobs_config: dict[str, Any]) -> None:
    broken = {"data-path": str(tmp_path / "missing.csv"), "client-id": 9}  # its handler raises every round
    base = {**blobs_config, "algorithm": "fedem", "preprocessing": "standardize", "round-tol": 1e-12,
            "wait-timeout": 60.0, "round-timeout": 90.0, "min-replies": 2}  # fmt: skip
    with running(LocalFederation(tmp_path / "fed", [*partition_configs(), broken])) as fed:
        # 1. SIGKILL node 2 after the first EM round: the SuperLink reports it unavailable once its
        #    heartbeat expires (within about a minute) and the run goes on with clients 0 and 1.
        out = tmp_path / "kill"
        run_id = fed.submit({**base, "output-dir": str(out), "min-nodes": 4, "max-rounds": 2})
        wait_for_round(out / "progress.json", 3)  # moments, fit-local, EM round 1
        fed.kill_node(2, signal.SIGKILL)
        record = fed.wait(run_id, timeout=400, output_dir=out)
        assert record["status"] == COMPLETED, record
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["clients_used"] == 2 and summary["n_rounds"] == 2
        status = {c["source"]: c for c in summary["clients"]}
        assert status["client 0"]["status"] == status["client 1"]["status"] == "ok"
        assert status["client 2"]["status"] == "failed"
        assert re.search(r"node unavailable|no reply within the round timeout", status["client 2"]["reason"])
        node_2 = next(n for n in summary["nodes"] if n["client_id"] == 2)
        assert node_2["failures"][0]["round"] == 4 and node_2["failures"][0]["kind"] == "em-statistics"
        broken_node = next(n for n in summary["nodes"] if n["client_id"] is None)
        assert len(broken_node["failures"]) == summary["total"]["rounds"] == 4  # failed every round, stayed in
        assert all("FileNotFoundError: data-path" in f["reason"] for f in broken_node["failures"])
        assert [h["n_clients"] for h in summary["history"]] == [3, 2]

        # 2. SIGTERM node 1 after the initialisation round: one usable client is fewer than
        #    min-replies=2, the run fails in EM round 1.
        out = tmp_path / "fail"
        run_id = fed.submit({**base, "output-dir": str(out), "min-nodes": 3, "max-rounds": 6})
        wait_for_round(out / "progress.json", 2)  # moments, fit-local
        fed.kill_node(1, signal.SIGTERM)
        record = fed.wait(run_id, timeout=400, output_dir=out)
        assert record["status"] == "finished:failed", record
        assert "only 1 usable client(s), at least 2 required" in record["status-details"]
        assert "client 1: failed (error code 5 (node unavailable)" in record["status-details"]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "failed" and "federated EM round 1: only 1 usable client(s)" in summary["error"]
        assert not (out / "model.npz").exists()


def test_tls_deployment_with_a_node_reading_its_own_file(tmp_path: Path, blobs_config: dict[str, Any]) -> None:
    rows = partition_rows(DataSettings.from_config(blobs_config), 2, 3)
    csv = tmp_path / "node-2.csv"
    csv.write_text("x,y\n" + "".join(f"{a:.17g},{b:.17g}\n" for a, b in rows))
    nodes = [*partition_configs()[:2], {"data-path": str(csv), "client-id": 2}]
    out = tmp_path / "out"
    config = {**blobs_config, "algorithm": "fedgengmm", "preprocessing": "standardize", "output-dir": str(out),
              "wait-timeout": 30.0, "round-timeout": 60.0}  # fmt: skip
    with running(LocalFederation(tmp_path / "fed", nodes, tls=True)) as fed:
        assert fed.certificates is not None and "--ssl-certfile" in (fed.superlink.command if fed.superlink else [])
        assert all("--insecure" not in node.command for node in fed.supernodes)
        record = fed.wait(fed.submit(config), timeout=150, output_dir=out)
        assert record["status"] == COMPLETED, record
    summary = check_against_inprocess(config, out)
    assert summary["preprocessing_communication"]["rounds"] == 1


def test_ray_simulation_gives_the_inprocess_model(tmp_path: Path, blobs_config: dict[str, Any]) -> None:
    out = tmp_path / "out"
    config = {**blobs_config, "algorithm": "fedgengmm", "output-dir": str(out), "wait-timeout": 30.0}
    sim = LocalSimulation(tmp_path / "sim", num_supernodes=3, cpus_per_node=1)
    try:
        record = sim.wait(sim.submit(config), timeout=150, output_dir=out)
        assert record["status"] == COMPLETED, record
    finally:
        superlinks = find_processes("flower-superlink", "--simulation", f"--port {sim.port} ")
        tree = process_tree(superlinks)
        sim.stop()
        assert superlinks and still_running(tree) == []
    check_against_inprocess(config, out)


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_sigtermed_supernode_takes_its_superexec_child_with_it(tmp_path: Path) -> None:
    with running(LocalFederation(tmp_path / "fed", partition_configs(2))) as fed:
        leaving, staying = fed.supernodes
        assert leaving.pid is not None and staying.pid is not None
        tree = process_tree([leaving.pid])
        assert any("flower-superexec" in _command_line(p) for p in tree if p != leaving.pid), tree
        fed.kill_node(0, signal.SIGTERM)
        # left to itself the superexec retries its connection for about two minutes after its node is gone
        assert {p: _command_line(p) for p in still_running(tree)} == {}
        assert staying.running() and len(still_running(process_tree([staying.pid]))) >= 2  # the other node untouched


def _processes_in(directory: Path) -> list[int]:
    """PIDs whose working directory is ``directory`` or below (every process of a federation run there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = Path(os.readlink(entry / "cwd"))
            except OSError:
                continue
            if (cwd == directory or directory in cwd.parents) and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def test_flower_local_command_prints_every_round_and_stops_every_process(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "fed"
    sets = {"algorithm": "fedem", "dataset": "blobs", "dataset-args": "n_samples=600", "n-components": 4,
            "max-rounds": 3, "round-tol": 1e-12, "wait-timeout": 60.0, "round-timeout": 120.0}  # fmt: skip
    command = [str(Path(sys.executable).parent / "fedgmm"), "flower", "local", "--nodes", "3", "--out", str(out),
               "--workdir", str(work), "--timeout", "500", *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]  # fmt: skip
    env = {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(tmp_path / "flwr-home"), "COLUMNS": "200"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    try:
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            stop_pids([proc.pid])
            proc.wait(timeout=30)
        left = _processes_in(work)
        stop_pids(left)
    assert proc.returncode == 0, output
    assert left == [], "processes left by `fedgmm flower local`"
    summary = json.loads((out / "summary.json").read_text())
    kinds = re.findall(r"^\s*round (\d+) \(([\w-]+)\): 3 of 3 nodes answered$", output, flags=re.MULTILINE)
    assert [int(n) for n, _ in kinds] == list(range(1, summary["total"]["rounds"] + 1)), output
    assert summary["total"]["rounds"] == 4 and [k for _, k in kinds].count("em-statistics") == 3, output


def test_ctrl_c_on_flower_local_stops_every_process_and_says_so(tmp_path: Path) -> None:
    import threading

    out, work = tmp_path / "out", tmp_path / "fed"
    sets = {"algorithm": "fedem", "dataset": "blobs", "dataset-args": "n_samples=600", "n-components": 4,
            "max-rounds": 40, "round-tol": 1e-12, "wait-timeout": 60.0, "round-timeout": 120.0}  # fmt: skip
    command = [str(Path(sys.executable).parent / "fedgmm"), "flower", "local", "--nodes", "2", "--out", str(out),
               "--workdir", str(work), "--timeout", "500", *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]  # fmt: skip
    env = {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(tmp_path / "flwr-home"), "COLUMNS": "200"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    lines: list[str] = []
    first_round = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.strip().startswith("round 1 "):
                first_round.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert first_round.wait(500), "".join(lines)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends (the Flower processes run in their own sessions)
        proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            stop_pids([proc.pid])
            proc.wait(timeout=30)
        left = _processes_in(work)
        stop_pids(left)
    output = "".join(lines)
    assert proc.returncode == 130, output
    assert "interrupted — stopped the local federation" in output and "error" not in output, output
    assert left == [], "processes left after Ctrl-C"

"""The Ray simulation listens on loopback only: every socket of its process tree, sampled while a run goes on."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from flower_testing import process_tree, still_running
from socket_testing import Listener, listeners

from fedgmm.flower.control import COMPLETED, summary_written
from fedgmm.flower.federation import RAY_LOOPBACK_ENV, LocalSimulation
from fedgmm.flower.processes import find_processes


def commands_of(pids: list[int]) -> dict[int, str]:
    """PID → command line (cut), for messages."""
    found = {}
    for pid in pids:
        try:
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:100]
        except OSError:
            continue
    return found


pytestmark = [
    pytest.mark.flower,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads sockets from /proc"),
]


def test_simulation_env_binds_ray_to_loopback_unless_told_otherwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")  # a user's own setting is overridden by default ...
    assert LocalSimulation(tmp_path).env.items() >= RAY_LOOPBACK_ENV.items()
    env = LocalSimulation(tmp_path, ray_loopback=False).env  # ... and dropped (Ray's default) when opted out
    assert not env.keys() & RAY_LOOPBACK_ENV.keys()


def test_ray_simulation_listens_only_on_loopback(tmp_path: Path, blobs_config: dict[str, Any]) -> None:
    out = tmp_path / "out"
    config = {**blobs_config, "algorithm": "fedem", "output-dir": str(out), "wait-timeout": 60.0, "round-timeout": 300.0}
    sim = LocalSimulation(tmp_path / "sim", num_supernodes=3, cpus_per_node=1)
    seen: dict[tuple[int, str, int], Listener] = {}
    tree: dict[int, int] = {}
    try:
        run_id = sim.submit(config)
        finished = summary_written(out, run_id)
        give_up = time.monotonic() + 900  # a hang guard only; the run's status is asserted below
        while not finished() and time.monotonic() < give_up:
            superlinks = find_processes("flower-superlink", "--simulation", f"--port {sim.port} ")
            now = process_tree(superlinks)  # SuperLink → superexec → flwr-simulation → gcs_server, raylet → actors
            tree.update(now)
            for sock in listeners(list(now)):
                seen.setdefault((sock.pid, sock.host, sock.port), sock)
            time.sleep(0.25)
        record = sim.wait(run_id, timeout=150, output_dir=out)
        assert record["status"] == COMPLETED, record
    finally:
        tree.update(process_tree(find_processes("flower-superlink", "--simulation", f"--port {sim.port} ")))
        sim.stop()
        # Ray's gcs_server and raylet are the simulation process's children: when it exits
        # first they are re-parented away from the SuperLink's tree and end by themselves.
        give_up = time.monotonic() + 60
        while still_running(tree) and time.monotonic() < give_up:
            time.sleep(0.5)
        assert commands_of(still_running(tree)) == {}, "processes left after stop()"
    commands = " ".join(s.command for s in seen.values())
    assert "gcs_server" in commands and "raylet" in commands and "ray::" in commands, sorted(map(str, seen.values()))
    exposed = sorted(str(s) for s in seen.values() if not s.loopback)
    assert exposed == [], "listening on a non-loopback address:\n" + "\n".join(exposed)


def test_flower_simulate_command_is_loopback_only_prints_every_round_and_stops_everything(tmp_path: Path) -> None:
    """The fresh-clone check, as a user runs it: ``fedgmm flower simulate`` in its own process."""
    import json
    import os
    import re
    import subprocess

    from fedgmm.flower.control import FLOWER_ENV
    from fedgmm.flower.processes import stop_pids

    out, work = tmp_path / "out", tmp_path / "sim"
    sets = {"algorithm": "fedem", "dataset": "blobs", "dataset-args": "n_samples=600", "n-components": 4,
            "local-components-min": 1, "local-components-max": 4, "max-rounds": 2, "round-tol": 1e-12,
            "wait-timeout": 60.0, "round-timeout": 300.0}  # fmt: skip
    command = [str(Path(sys.executable).parent / "fedgmm"), "flower", "simulate", "--nodes", "3", "--out", str(out),
               "--workdir", str(work), "--timeout", "800", *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]  # fmt: skip
    env = {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(tmp_path / "flwr-home"), "COLUMNS": "200"}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    seen: dict[tuple[int, str, int], Listener] = {}
    tree: dict[int, int] = {}
    marker = str(work / "flwr-home" / "local-superlink")  # in the SuperLink's --database argument
    try:
        give_up = time.monotonic() + 900  # a hang guard only; the exit code is asserted below
        while proc.poll() is None and time.monotonic() < give_up:
            now = process_tree(find_processes("flower-superlink", "--simulation", marker))
            tree.update(now)
            for sock in listeners(list(now)):
                seen.setdefault((sock.pid, sock.host, sock.port), sock)
            time.sleep(0.25)
    finally:
        if proc.poll() is None:
            stop_pids([proc.pid])
        output = proc.communicate(timeout=60)[0]
        give_up = time.monotonic() + 60  # Ray's gcs_server and raylet end by themselves once re-parented
        while still_running(tree) and time.monotonic() < give_up:
            time.sleep(0.5)
        left = still_running(tree)
        stop_pids(left, grace=5.0)
    assert proc.returncode == 0, output
    assert commands_of(left) == {}, "processes left by `fedgmm flower simulate`"
    commands = " ".join(s.command for s in seen.values())
    assert "gcs_server" in commands and "raylet" in commands, sorted(map(str, seen.values()))
    exposed = sorted(str(s) for s in seen.values() if not s.loopback)
    assert exposed == [], "listening on a non-loopback address:\n" + "\n".join(exposed)
    summary = json.loads((out / "summary.json").read_text())
    numbers = [int(n) for n in re.findall(r"^\s*round (\d+) \([\w-]+\): 3 of 3 nodes answered$", output, flags=re.MULTILINE)]
    assert numbers == list(range(1, summary["total"]["rounds"] + 1)) and len(numbers) == 3, output

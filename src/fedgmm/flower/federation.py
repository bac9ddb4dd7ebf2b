"""A local Flower federation: a SuperLink and N SuperNodes on 127.0.0.1 (insecure or TLS), or a local simulation."""

from __future__ import annotations

import importlib.util
import signal
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from fedgmm._extras import install_hint
from fedgmm.flower.certs import Certificates, make_certificates
from fedgmm.flower.control import (
    Connection,
    FlowerCLIError,
    app_dir,
    bin_dir,
    flower_env,
    run_status,
    submit_run,
    summary_written,
    wait_for_run,
    write_connections,
)
from fedgmm.flower.processes import (
    Process,
    descendants,
    find_processes,
    free_port,
    kill_tree,
    stop_pids,
)

HOST = "127.0.0.1"

#: Makes the Ray cluster a simulation starts listen on loopback only. Ray (2.55) binds its
#: gRPC servers (GCS, raylet, object manager, the core worker of the driver and of every
#: actor, the runtime-env agent) to the node IP when that is a loopback address and to all
#: interfaces otherwise; with this switch at "0" its node IP is 127.0.0.1
#: (``ray._private.services.get_node_ip_address``). Flower forwards only num-cpus,
#: num-gpus, logging-level and log-to-driver to ``ray.init``, so the switch goes through
#: the environment, which the local SuperLink passes on to ``flwr-simulation``.
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def wait_healthy(url: str, *, timeout: float, cafile: Path | None = None, process: Process | None = None) -> None:
    """Poll ``url`` (a Flower ``/health`` endpoint) until it answers 200.

    Raises
    ------
    TimeoutError
        Not healthy after ``timeout`` seconds.
    RuntimeError
        ``process`` exited meanwhile (its log's tail is in the message).
    """
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2.0, context=context) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError, ssl.SSLError):
            pass
        if process is not None and not process.running():
            raise RuntimeError(f"{process.name} exited during start-up; its log ends with:\n{process.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:g} s.")
        time.sleep(0.25)


@dataclass
class LocalFederation:
    """A SuperLink and one SuperNode per node config, all on 127.0.0.1, started and stopped by PID.

    Parameters
    ----------
    workdir : Path
        Logs, node configs, certificates and (by default) ``FLWR_HOME`` go here; it is the
        cwd of every process, hence of the ServerApp and the ClientApps.
    node_configs : sequence of dict
        One SuperNode per entry, started with it as ``--node-config`` (e.g.
        ``{"partition-id": 0, "num-partitions": 3}`` or ``{"data-path": "/abs/x.csv", "client-id": 0}``).
    tls : bool
        Generate a CA and server certificate and run the SuperLink with TLS (SuperNodes
        and the ``flwr`` connection verify it with the CA).
    flwr_home : Path, optional
        Defaults to ``workdir/flwr-home``; its ``config.toml`` gets the connection.
    connection : str
        Name of the connection written to ``config.toml``.
    port : int, optional
        SuperLink port (a free one by default); SuperNodes get free ports too.

    Examples
    --------
    >>> with LocalFederation(Path("/tmp/fed"), [{"partition-id": i, "num-partitions": 3} for i in range(3)]) as fed:
    ...     run_id = fed.submit({"algorithm": "fedem", "output-dir": "/tmp/fed/out"})   # doctest: +SKIP
    ...     record = fed.wait(run_id)                                                       # doctest: +SKIP
    """

    workdir: Path
    node_configs: Sequence[Mapping[str, Any]]
    tls: bool = False
    flwr_home: Path | None = None
    connection: str = "fedgmm-local"
    port: int | None = None
    startup_timeout: float = 60.0
    superlink: Process | None = field(default=None, init=False)
    supernodes: list[Process] = field(default_factory=list, init=False)
    certificates: Certificates | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.flwr_home = Path(self.flwr_home).resolve() if self.flwr_home else self.workdir / "flwr-home"

    @property
    def env(self) -> dict[str, str]:
        """Environment of every process (and ``flwr`` call) of this federation."""
        return flower_env(self.flwr_home)

    @property
    def address(self) -> str:
        """``host:port`` of the SuperLink."""
        if self.port is None:
            raise RuntimeError("the federation has not been started.")
        return f"{HOST}:{self.port}"

    def start(self) -> LocalFederation:
        """Start the SuperLink, wait for it, start the SuperNodes, write the connection."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        assert self.flwr_home is not None
        self.port = self.port or free_port()
        bins = bin_dir()
        security: list[str] = ["--insecure"]
        if self.tls:
            self.certificates = make_certificates(self.workdir / "certs")
            c = self.certificates
            security = ["--ssl-ca-certfile", str(c.ca), "--ssl-certfile", str(c.server_cert), "--ssl-keyfile", str(c.server_key)]
        write_connections(self.flwr_home, [Connection(
            self.connection, self.address, insecure=not self.tls,
            root_certificates=self.certificates.ca if self.certificates else None,
        )])  # fmt: skip
        self.superlink = Process(
            "superlink",
            [str(bins / "flower-superlink"), *security, "--host", HOST, "--port", str(self.port)],
            self.workdir / "superlink.log",
        )
        try:
            self.superlink.start(self.env, self.workdir)
            scheme = "https" if self.tls else "http"
            wait_healthy(
                f"{scheme}://{HOST}:{self.port}/health", timeout=self.startup_timeout,
                cafile=self.certificates.ca if self.certificates else None, process=self.superlink,
            )  # fmt: skip
            for i in range(len(self.node_configs)):
                self.start_node(i)
            for node in self.supernodes:
                port = node.command[node.command.index("--port") + 1]
                wait_healthy(f"http://{HOST}:{port}/health", timeout=self.startup_timeout, process=node)
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, index: int) -> Process:
        """Start (or restart) the SuperNode of ``node_configs[index]``."""
        config_file = self.workdir / f"node-{index}.toml"
        config_file.write_text(tomli_w.dumps(dict(self.node_configs[index])))
        security = ["--root-certificates", str(self.certificates.ca)] if self.certificates else ["--insecure"]
        node = Process(
            f"supernode-{index}",
            [str(bin_dir() / "flower-supernode"), *security, "--superlink", self.address,
             "--port", str(free_port()), "--node-config", str(config_file)],
            self.workdir / f"supernode-{index}.log",
        )  # fmt: skip
        node.start(self.env, self.workdir)
        if index < len(self.supernodes):
            self.supernodes[index] = node
        else:
            self.supernodes.append(node)
        return node

    def kill_node(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to SuperNode ``index`` and wait for it to exit.

        SIGKILL simulates a crash: the SuperNode and its children die at once, nothing tells
        the SuperLink (it notices after the heartbeat expires). SIGTERM is a clean leave: the
        SuperNode deregisters and the SuperLink answers its pending messages with an error.
        """
        node = self.supernodes[index]
        if node.popen is None:
            raise RuntimeError(f"supernode {index} was not started.")
        if sig == signal.SIGKILL:
            kill_tree(node.popen.pid, sig)
            node.popen.wait(timeout=30)
        else:  # its flower-superexec child would outlive it, retrying its connection: end it with the node
            children = [pid for pid, _ in descendants(node.popen.pid)]
            node.popen.send_signal(sig)
            node.popen.wait(timeout=30)
            stop_pids(children, grace=5.0)

    def pids(self) -> list[int]:
        """PIDs of the processes this federation started and that still run."""
        return [p.popen.pid for p in [self.superlink, *self.supernodes] if p is not None and p.running() and p.popen]

    def stop(self, grace: float = 15.0) -> list[int]:
        """Stop every process started here, and their descendants, by PID; return those that needed SIGKILL."""
        procs = [p for p in [*self.supernodes, self.superlink] if p is not None and p.popen is not None]
        killed = stop_pids([p.popen.pid for p in procs if p.popen], grace=grace, popens=[p.popen for p in procs if p.popen])
        return killed

    def __enter__(self) -> LocalFederation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def submit(self, run_config: Mapping[str, Any], app: Path | None = None) -> int:
        """Start a run of the fedgmm app on this federation; return the run id."""
        return submit_run(app or app_dir(self.workdir), self.connection, run_config, env=self.env, cwd=self.workdir)

    def status(self, run_id: int) -> dict[str, Any]:
        """The run's ``flwr ls`` record."""
        return run_status(self.connection, run_id, env=self.env, cwd=self.workdir)

    def wait(self, run_id: int, timeout: float = 600.0, output_dir: str | Path | None = None) -> dict[str, Any]:
        """Wait until the run is ``finished:*``; return its ``flwr ls`` record.

        With the run's ``output_dir``, ``flwr ls`` is asked once its summary appears.
        """
        ready = summary_written(output_dir, run_id) if output_dir is not None else None
        return wait_for_run(self.connection, run_id, env=self.env, cwd=self.workdir, timeout=timeout, ready=ready)


@dataclass
class LocalSimulation:
    """Runs of the Ray simulation engine through a private local SuperLink, stopped afterwards.

    ``flwr run`` against a ``:local:`` connection starts a detached local SuperLink
    that outlives it; here it gets free ports (``FLWR_LOCAL_*_PORT``) and a private
    ``FLWR_HOME``, so :meth:`stop` can find it by its port and stop it (and its
    descendants) by PID without touching anyone else's. Ray listens on 127.0.0.1 only
    (:data:`RAY_LOOPBACK_ENV`) unless ``ray_loopback=False``.

    Parameters
    ----------
    workdir : Path
        cwd of ``flwr`` (hence of the local SuperLink, the ServerApp and the ClientApps).
    num_supernodes : int
    cpus_per_node : float
    flwr_home : Path, optional
        Defaults to ``workdir/flwr-home``.
    ray_loopback : bool
        Every Ray process listens on 127.0.0.1 only (the default). False leaves Ray its
        own default, which on Linux is to listen on all interfaces.
    """

    workdir: Path
    num_supernodes: int = 3
    cpus_per_node: float = 1.0
    flwr_home: Path | None = None
    connection: str = "local"
    ray_loopback: bool = True
    startup_timeout: float = 60.0
    port: int = field(default=0, init=False)
    control_port: int = field(default=0, init=False)
    superlink: Process | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.flwr_home = Path(self.flwr_home).resolve() if self.flwr_home else self.workdir / "flwr-home"
        self.port, self.control_port = free_port(), free_port()

    @property
    def env(self) -> dict[str, str]:
        """Environment of the ``flwr`` calls (and so of the local SuperLink they start, and its Ray)."""
        env = flower_env(self.flwr_home, {
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(self.port), "FLWR_LOCAL_CONTROL_API_PORT": str(self.control_port),
        })  # fmt: skip
        if self.ray_loopback:
            env.update(RAY_LOOPBACK_ENV)
        else:
            for key in RAY_LOOPBACK_ENV:
                env.pop(key, None)
        return env

    @property
    def federation_config(self) -> str:
        """The ``--federation-config`` of the runs."""
        cpus = f"{self.cpus_per_node:g}"
        return f"num-supernodes={self.num_supernodes} client-resources-num-cpus={cpus}"

    def start(self) -> LocalSimulation:
        """Start the local SuperLink ``flwr run`` would start, waiting up to ``startup_timeout``.

        ``flwr run`` gives the one it starts 15 s (``LOCAL_SUPERLINK_STARTUP_TIMEOUT``), too
        little on a loaded machine; it uses one that already answers on its port.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        assert self.flwr_home is not None
        if self.superlink is not None and self.superlink.running():
            return self
        state = self.flwr_home / "local-superlink"
        state.mkdir(parents=True, exist_ok=True)
        self.superlink = Process(
            "simulation-superlink",
            [str(bin_dir() / "flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
             "--host", HOST, "--port", str(self.port), "--database", str(state / "state.db")],
            self.workdir / "superlink.log",
        )  # fmt: skip
        self.superlink.start(self.env, self.workdir)
        try:
            wait_healthy(f"http://{HOST}:{self.port}/health", timeout=self.startup_timeout, process=self.superlink)
        except BaseException:
            self.stop()
            raise
        return self

    def submit(self, run_config: Mapping[str, Any], app: Path | None = None) -> int:
        """Start a simulated run; return its run id."""
        if importlib.util.find_spec("ray") is None:
            raise FlowerCLIError(f"the Ray simulation engine is not installed: {install_hint('ray')}")
        self.start()
        assert self.flwr_home is not None
        write_connections(self.flwr_home, [])
        return submit_run(
            app or app_dir(self.workdir), self.connection, run_config, env=self.env, cwd=self.workdir,
            federation_config=self.federation_config,
        )  # fmt: skip

    def status(self, run_id: int) -> dict[str, Any]:
        """The run's ``flwr ls`` record."""
        return run_status(self.connection, run_id, env=self.env, cwd=self.workdir)

    def wait(self, run_id: int, timeout: float = 600.0, output_dir: str | Path | None = None) -> dict[str, Any]:
        """Wait until the run is ``finished:*``; return its ``flwr ls`` record.

        With the run's ``output_dir``, ``flwr ls`` is asked once its summary appears.
        """
        ready = summary_written(output_dir, run_id) if output_dir is not None else None
        return wait_for_run(self.connection, run_id, env=self.env, cwd=self.workdir, timeout=timeout, ready=ready)

    def stop(self, grace: float = 15.0) -> list[int]:
        """Stop the local SuperLink this simulation started (and its descendants) by PID."""
        pids = find_processes("flower-superlink", "--simulation", f"--port {self.port} ")
        popens = [self.superlink.popen] if self.superlink is not None and self.superlink.popen is not None else []
        return stop_pids(pids, grace=grace, popens=popens)

    def __enter__(self) -> LocalSimulation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


"""Starting and stopping Flower processes by PID, with their descendants (Linux ``/proc``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _stat(pid: int) -> tuple[int, str, int] | None:
    """``(ppid, state, start time)`` of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0], int(fields[19])


def alive(pid: int, start_time: int | None = None) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone), and is still the process that started at ``start_time``."""
    info = _stat(pid)
    if info is None or info[1] == "Z":
        return False
    return start_time is None or info[2] == start_time


def descendants(pid: int) -> list[tuple[int, int]]:
    """``(pid, start time)`` of every live descendant of ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _stat(int(entry.name))
            if info is not None:
                children.setdefault(info[0], []).append(int(entry.name))
    found: list[tuple[int, int]] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        info = _stat(child)
        if info is not None and info[1] != "Z":
            found.append((child, info[2]))
        stack.extend(children.get(child, []))
    return found


def find_processes(*needles: str) -> list[int]:
    """PIDs whose command line contains every one of ``needles`` (arguments joined by spaces)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(n in cmdline for n in needles) and alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def _send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_pids(pids: Iterable[int], *, grace: float = 15.0, popens: Sequence[subprocess.Popen[bytes]] = ()) -> list[int]:
    """SIGTERM ``pids`` (then, after 2 s, their remaining descendants); SIGKILL what is left after ``grace`` s.

    Only the given processes and their descendants (snapshotted before signalling,
    identified by PID and start time) are touched. ``popens`` are reaped.

    Returns
    -------
    list of int
        PIDs that needed SIGKILL.
    """
    roots = [(p, info[2]) for p in pids if (info := _stat(p)) is not None and info[1] != "Z"]
    tree = {p: t for p, t in roots}
    for pid, _ in roots:
        tree.update(descendants(pid))
    for pid, _ in roots:
        _send(pid, signal.SIGTERM)
    start = time.monotonic()
    nudged = False
    while time.monotonic() < start + grace:
        for popen in popens:
            popen.poll()
        if not any(alive(p, t) for p, t in tree.items()):
            break
        if not nudged and time.monotonic() > start + min(2.0, grace / 2):
            for pid, start_time in tree.items():  # children that did not follow their parent yet
                if alive(pid, start_time):
                    _send(pid, signal.SIGTERM)
            nudged = True
        time.sleep(0.1)
    killed = [p for p, t in tree.items() if alive(p, t)]
    for pid in killed:
        _send(pid, signal.SIGKILL)
    for popen in popens:
        try:
            popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    return killed


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Send ``sig`` at once to ``pid`` and every descendant (a crash: nothing gets to clean up); return the PIDs."""
    targets = [pid, *(p for p, _ in descendants(pid))]
    for target in targets:
        _send(target, sig)
    return targets


@dataclass
class Process:
    """A Flower process we started: its command, log file and Popen."""

    name: str
    command: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, env: Mapping[str, str], cwd: Path) -> None:
        """Launch in its own session (so signals to our process group do not reach it); output to the log."""
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.command, cwd=str(cwd), env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    @property
    def pid(self) -> int | None:
        """Its PID (None before start)."""
        return self.popen.pid if self.popen is not None else None

    def running(self) -> bool:
        """Whether it has been started and not exited."""
        return self.popen is not None and self.popen.poll() is None

    def tail(self, n: int = 20) -> str:
        """The last ``n`` lines of its log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

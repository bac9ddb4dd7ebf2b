"""Listening sockets of a process tree, read from ``/proc`` (Linux): which address each one is bound to."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

#: ``/proc/net/*`` socket states: TCP LISTEN, and UDP "closed" (bound, unconnected: it receives from anyone).
_LISTENING = {"tcp": "0A", "tcp6": "0A", "udp": "07", "udp6": "07"}


@dataclass(frozen=True)
class Listener:
    """One listening socket: its process, protocol (``tcp``, ``tcp6``, ``udp``, ``udp6``) and local address."""

    pid: int
    command: str
    protocol: str
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach it (127.0.0.0/8, ::1, or ::ffff:127.x.y.z)."""
        ip = ipaddress.ip_address(self.host)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback

    def __str__(self) -> str:
        return f"{self.command} (pid {self.pid}) on {self.protocol} {self.host}:{self.port}"


def _address(hex_address: str) -> tuple[str, int]:
    """``/proc/net/tcp*`` ``ADDR:PORT`` (hex, 32-bit words in host order, little-endian here) → (host, port)."""
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words)), int(port, 16)


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        entries = list(os.scandir(f"/proc/{pid}/fd"))
    except OSError:
        return inodes
    for entry in entries:
        try:
            target = os.readlink(entry.path)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _command(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(a.decode(errors="replace") for a in argv if a)[:120]


def listeners(pids: list[int]) -> list[Listener]:
    """Every listening TCP and bound unconnected UDP socket held by one of ``pids`` right now.

    A process that exits meanwhile is skipped. Sockets are matched to processes by inode
    (``/proc/<pid>/fd`` against ``/proc/<pid>/net/*``, the process's own network namespace).
    """
    found: list[Listener] = []
    for pid in pids:
        inodes = _socket_inodes(pid)
        if not inodes:
            continue
        command = _command(pid)
        for protocol, state in _LISTENING.items():
            try:
                lines = Path(f"/proc/{pid}/net/{protocol}").read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if fields[3] == state and fields[9] in inodes:
                    host, port = _address(fields[1])
                    found.append(Listener(pid, command, protocol, host, port))
    return found

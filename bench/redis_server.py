"""Debian's ``redis-server`` on a free loopback port, for GCS fault tolerance drills.

Started with its own directory, no persistence (the drills lose Ray's head, never Redis) and a
password (as the chart's ``redisPassword`` Secret would give one); stopped by its process id.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class RedisMissing(RuntimeError):
    """``redis-server`` is not installed (ci/test.sh installs Debian's)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _encode(parts: tuple[str, ...]) -> bytes:
    return f"*{len(parts)}\r\n".encode() + b"".join(f"${len(p)}\r\n{p}\r\n".encode() for p in parts)


@dataclass
class RedisServer:
    port: int
    password: str
    process: subprocess.Popen
    directory: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, directory: Path, timeout_s: float = 15.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisMissing("redis-server is not installed (Debian: apt-get install redis-server)")
        directory.mkdir(parents=True, exist_ok=True)
        port, password = _free_port(), secrets.token_hex(12)
        with open(directory / "redis.log", "wb") as log:
            process = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(directory),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--requirepass",
                    password,
                    "--daemonize",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = cls(port=port, password=password, process=process, directory=directory)
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(OSError):
                if server.command("PING").startswith(b"+PONG"):
                    return server
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"redis-server did not answer PING within {timeout_s}s (see {directory}/redis.log)")
            time.sleep(0.1)

    def command(self, *args: str) -> bytes:
        """Send one command (after AUTH) and return the first line of its reply, e.g. ``b"+PONG"``."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(_encode(("AUTH", self.password)) + _encode(args))
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        return reply.split(b"\r\n")[1]

    def key_count(self) -> int:
        """Keys in the database (Ray's GCS tables live in one hash per table and namespace)."""
        reply = self.command("DBSIZE")  # ":<n>"
        return int(reply[1:]) if reply.startswith(b":") else -1

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

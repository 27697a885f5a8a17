"""Redis for tests: the shared server on 127.0.0.1:6379, and private servers a test may stop.

Tests that only need *a* Redis use the shared one (``S3ORCH_TEST_REDIS``, default
``127.0.0.1:6379``) under a key prefix of their own.  A test that stops, kills or pauses Redis
runs a :class:`RedisServer` of its own on a free port (never the shared one): no RDB snapshots
(``--save ""``) and an append-only file fsynced before every reply, so a restart keeps exactly
what Redis acknowledged (and what it applied but could not acknowledge before dying).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
from pathlib import Path

import pytest

from tests.support.servers import ServerProcess, free_port

__all__ = ["RedisServer", "redis_answers", "shared_redis_address"]

DEFAULT_ADDRESS = "127.0.0.1:6379"


def redis_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a Redis server answers PING at host:port (blocking: call outside the reactor)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def shared_redis_address() -> str:
    """The shared test Redis's host:port; skips when it does not answer, except under CI."""
    address = os.environ.get("S3ORCH_TEST_REDIS", DEFAULT_ADDRESS)
    host, _, port = address.rpartition(":")
    if not redis_answers(host, int(port)):
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required in CI but does not answer at {address}")
        pytest.skip(f"Redis does not answer at {address}")
    return address


class RedisServer(ServerProcess):
    """A private ``redis-server`` on a free loopback port, its data in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir / "redis.log")
        self.data_dir = data_dir
        self.port = port or free_port()
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is required in CI")
            pytest.skip("redis-server is not installed")
        self.binary = binary

    def _command(self) -> list[str]:
        return [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.data_dir),
        ]

    def _ready(self) -> bool:
        return redis_answers("127.0.0.1", self.port, timeout=0.5)

    def _choose_ports(self) -> None:
        self.port = free_port()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pause(self) -> None:
        """SIGSTOP: the server keeps its connections and answers nothing (a hang)."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)

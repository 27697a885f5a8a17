"""Real S3 servers as child processes, for integration tests, ``make run`` and
``make bench``.

* :class:`MotoServer`: ``moto_server``; broad, exact S3 semantics, in memory,
  signatures not checked.
* :class:`WeedServer`: SeaweedFS ``weed mini``; checks SigV4 and Content-MD5,
  keeps data across restarts, fast.
* :class:`RcloneServer`: ``rclone serve s3``; a deliberately quirky backend.

Every server listens on loopback ports of its own, logs to a file (never the
terminal), and is stopped at interpreter exit if the caller forgot (or was
interrupted).  These helpers block: call them outside the reactor (fixtures,
scripts), never from reactor code.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from s3orch.s3.sigv4 import EMPTY_SHA256, sign_headers
from tests.support.polling import poll

__all__ = [
    "MotoServer",
    "ServerError",
    "WeedServer",
    "create_bucket",
    "free_port",
    "stop_all",
]

_LIVE: set[ServerProcess] = set()
_LIVE_LOCK = threading.Lock()


class ServerError(RuntimeError):
    """A server did not start (its log's tail is in the message)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    if not 0 < port < 65536:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held together while choosing)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _venv_tool(name: str) -> str:
    """A console script from this interpreter's environment (the venv's bin)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ServerError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def _with_parent_death_signal(command: list[str]) -> list[str]:
    """Prefix ``setpriv --pdeathsig`` (Linux util-linux) so the child gets
    SIGTERM when we die, even by SIGKILL, where atexit cannot run.

    The signal fires when the spawning *thread* ends, so only commands started
    from the main thread get it.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return command
    return [setpriv, "--pdeathsig", "TERM", "--", *command]


def stop_all() -> None:
    """Stop every server still running (registered with atexit)."""
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(stop_all)


class ServerProcess:
    """A child server process: start, wait until it serves, stop, kill."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.start_seconds: float | None = None

    # subclasses provide these
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _choose_ports(self) -> None:
        """Pick new ports after a failed first start (a port race was lost)."""

    @property
    def endpoint(self) -> str:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 60.0) -> Self:
        """Start and wait until the server answers; ServerError otherwise."""
        if self.running:
            return self
        last: ServerError | None = None
        for attempt in range(3):
            if attempt:
                self._choose_ports()
            try:
                self._spawn_and_wait(timeout)
                return self
            except ServerError as exc:
                last = exc
                self.stop()
                if "address already in use" not in str(exc).lower():
                    break
        assert last is not None
        raise last

    def _spawn_and_wait(self, timeout: float) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        log.write(f"\n=== {time.strftime('%F %T')} {' '.join(self._command())}\n".encode())
        log.flush()
        self._log = log
        started = time.monotonic()
        self._process = subprocess.Popen(
            _with_parent_death_signal(self._command()),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        with _LIVE_LOCK:
            _LIVE.add(self)
        process = self._process
        ready = poll(lambda: process.poll() is None and self._ready(), lambda up: up or process.poll() is not None,
                     timeout)
        if process.poll() is not None:
            raise ServerError(
                f"{type(self).__name__} exited with {process.returncode}; "
                f"log {self.log_path}:\n{self._log_tail()}"
            )
        if not ready:
            raise ServerError(
                f"{type(self).__name__} not ready after {timeout:g}s; "
                f"log {self.log_path}:\n{self._log_tail()}"
            )
        self.start_seconds = time.monotonic() - started

    def _log_tail(self, size: int = 3000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-size:].decode("utf-8", "replace")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL now, like a crash (for fault-injection tests)."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def restart(self, timeout: float = 60.0) -> Self:
        """Stop, then start again on the same ports (and data)."""
        self.stop()
        self._spawn_and_wait(timeout)
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _http_status(
    port: int,
    method: str = "GET",
    path: str = "/",
    headers: dict[str, str] | None = None,
) -> int | None:
    """Status of one request to 127.0.0.1:port, None if nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _http_json(port: int, path: str) -> Any:
    """The JSON document at 127.0.0.1:port/path, None if nothing (valid) answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return json.loads(body) if response.status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


class MotoServer(ServerProcess):
    """``moto_server`` on a loopback port: in memory, any credentials accepted."""

    access_key = "testing"
    secret_key = "testing"
    region = "us-east-1"

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self._fixed_port = port is not None
        super().__init__(log_path or Path(tempfile.gettempdir()) / f"s3orch-moto-{self.port}.log")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [_venv_tool("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]

    def _choose_ports(self) -> None:
        if not self._fixed_port:
            self.port = free_port()

    def _ready(self) -> bool:
        return _http_status(self.port, path="/moto-api/") is not None

    def reset(self) -> None:
        """Drop every bucket and object (moto's reset API)."""
        status = _http_status(self.port, "POST", "/moto-api/reset")
        if status != 200:
            raise ServerError(f"moto reset answered {status}")


class RcloneServer(ServerProcess):
    """``rclone serve s3`` over a directory: a deliberately quirky backend.

    It answers ranged GETs with 200 and the whole object, capitalises user
    metadata names and keeps metadata only in memory: the gateway must hide
    all of that from its clients.  Buckets are sub-directories of ``data_dir``.
    """

    region = "us-east-1"

    def __init__(self, data_dir: Path, access_key: str, secret_key: str, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.access_key = access_key
        self.secret_key = secret_key
        self.port = port or free_port()
        self._fixed_port = port is not None
        super().__init__(self.data_dir / "rclone.log")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [
            _venv_tool("rclone"), "serve", "s3", "--config", "/dev/null",
            "--addr", f"127.0.0.1:{self.port}",
            "--auth-key", f"{self.access_key},{self.secret_key}",
            str(self.data_dir),
        ]

    def _choose_ports(self) -> None:
        if not self._fixed_port:
            self.port = free_port()

    def _ready(self) -> bool:
        return _http_status(self.port, path="/") is not None

    def make_bucket(self, name: str) -> None:
        (self.data_dir / name).mkdir(exist_ok=True)


class WeedServer(ServerProcess):
    """SeaweedFS ``weed mini`` with its own ports and data directory.

    All component ports (HTTP and gRPC) are passed explicitly: ``weed mini``
    saves its options in ``<data_dir>/mini.options`` and reloads any option
    not given on the command line, and its admin worker dials
    ``admin.port + 10000`` whatever ``-admin.port.grpc`` says.
    """

    region = "us-east-1"

    def __init__(
        self,
        data_dir: Path,
        access_key: str,
        secret_key: str,
        s3_port: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.access_key = access_key
        self.secret_key = secret_key
        self._fixed_s3_port = s3_port
        self.ports: dict[str, int] = {}
        self._choose_ports()
        super().__init__(self.data_dir / "weed.log")

    def _choose_ports(self) -> None:
        names = [
            "s3.port",
            "master.port",
            "volume.port",
            "filer.port",
            "master.port.grpc",
            "volume.port.grpc",
            "filer.port.grpc",
            "s3.port.grpc",
        ]
        picked = _free_ports(len(names) + 1)
        ports = dict(zip(names, picked[:-1], strict=True))
        if self._fixed_s3_port is not None:
            ports["s3.port"] = self._fixed_s3_port
        admin = picked[-1]
        while not (_port_free(admin + 10000) and admin not in ports.values()):
            admin = free_port()
        ports["admin.port"] = admin
        ports["admin.port.grpc"] = admin + 10000
        self.ports = ports

    @property
    def s3_port(self) -> int:
        return self.ports["s3.port"]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def identities_path(self) -> Path:
        return self.data_dir / "s3-identities.json"

    def _command(self) -> list[str]:
        args = [
            _venv_tool("weed"),
            "mini",
            f"-dir={self.data_dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={self.identities_path}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            # The volume count is otherwise capped at free disk / 128 MiB, and every bucket (a
            # collection) takes several volumes: a whole test session creates hundreds of buckets.
            "-volume.max=100000",
        ]
        args += [f"-{name}={port}" for name, port in sorted(self.ports.items())]
        return args

    def _spawn_and_wait(self, timeout: float) -> None:
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "s3orch",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        self.identities_path.write_text(json.dumps(identities, indent=2))
        os.chmod(self.identities_path, 0o600)
        super()._spawn_and_wait(timeout)

    def _ready(self) -> bool:
        """Ready when a signed ListBuckets succeeds (S3 up, identities loaded) and the master
        knows as many volumes as the volume server holds: after a restart, stored objects are
        readable only once the volume server has reported its volumes (slow on a busy machine)."""
        return self._lists_buckets() and self._volumes_registered()

    def _volumes_registered(self) -> bool:
        local = _http_json(self.ports["volume.port"], "/status")
        topology = _http_json(self.ports["master.port"], "/dir/status")
        if local is None or topology is None:
            return False
        nodes = [
            node
            for center in topology.get("Topology", {}).get("DataCenters") or []
            for rack in center.get("Racks") or []
            for node in rack.get("DataNodes") or []
        ]
        held = len(local.get("Volumes") or [])
        return bool(nodes) and sum(int(node.get("Volumes", 0)) for node in nodes) >= held

    def _lists_buckets(self) -> bool:
        url = f"{self.endpoint}/"
        headers = sign_headers(
            "GET",
            url,
            {},
            EMPTY_SHA256,
            self.access_key,
            self.secret_key,
            self.region,
            time.time(),
        )
        headers["Host"] = f"127.0.0.1:{self.s3_port}"
        return _http_status(self.s3_port, "GET", "/", headers) == 200

    def _cleanup(self) -> None:
        super()._cleanup()
        # weed leaves unix sockets named after our ports in /tmp behind.
        for port in self.ports.values():
            for stale in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    stale.unlink()


def create_bucket(
    endpoint: str,
    bucket: str,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
) -> None:
    """Create ``bucket`` (blocking, boto3); an existing bucket is fine."""
    # boto3 ships no type stubs; imported lazily (only test/demo code needs it).
    boto3: Any = importlib.import_module("boto3")
    botocore_config: Any = importlib.import_module("botocore.config")
    botocore_exceptions: Any = importlib.import_module("botocore.exceptions")

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=botocore_config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )
    try:
        if region == "us-east-1":
            client.create_bucket(Bucket=bucket)
        else:
            client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    except botocore_exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    finally:
        client.close()

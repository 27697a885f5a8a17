"""``make run``: three local SeaweedFS backends with s3orch in front of them.

Everything lives under ``.demo/`` (git-ignored, kept across runs):

* ``backend-N/`` -- data and log (``weed.log``) of backend N, a ``weed mini`` on S3 port
  19000, 19002 or 19004 with its own key pair and bucket;
* ``config.yaml`` -- the s3orch configuration (s3-orchestrator's config.yaml format, which s3orch loads unchanged), written on
  the first run and then left alone, so it can be edited (``--fresh-config`` rewrites it);
* ``s3orch.db`` -- the SQLite metadata.

s3orch then runs in the foreground (``twistd -n s3orch --config .demo/config.yaml``).
Ctrl-C or SIGTERM stops s3orch first (it drains), then the backends.  Every child runs in
a session of its own (so the terminal's Ctrl-C reaches only us, and we stop them in order)
and gets SIGTERM from the kernel if we die without cleaning up.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import yaml

from tests.support.servers import ServerError, WeedServer, create_bucket

MiB = 1024 * 1024
REGION = "us-east-1"
#: Loopback only: the demo's credentials are public.  Edit .demo/config.yaml to expose it.
LISTEN_ADDR = "127.0.0.1:9000"
#: The dashboard's demo login (the original's quickstart: admin / admin).  Loopback only.
UI_LOGIN = ("admin", "admin")
#: How long s3orch may take to drain on stop before it is killed.
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class DemoBackend:
    name: str
    s3_port: int
    access_key: str
    secret_key: str
    bucket: str
    quota_bytes: int


@dataclass(frozen=True)
class DemoBucket:
    name: str
    access_key: str
    secret_key: str


#: Small quotas so that pack routing visibly overflows from one backend to the next.
BACKENDS = (
    DemoBackend("weed-1", 19000, "backend1key", "backend1secret", "backend1", 64 * MiB),
    DemoBackend("weed-2", 19002, "backend2key", "backend2secret", "backend2", 64 * MiB),
    DemoBackend("weed-3", 19004, "backend3key", "backend3secret", "backend3", 256 * MiB),
)

BUCKETS = (
    DemoBucket("photos", "photoskey", "photossecret"),
    DemoBucket("documents", "docskey", "docssecret"),
    DemoBucket("backups", "backupskey", "backupssecret"),
)


def render_config(state: str) -> str:
    """The demo's config.yaml: drop-in s3-orchestrator format.  Paths start with ``state``
    (".demo"), relative to the directory s3orch runs in (the checkout)."""
    buckets = "".join(
        f'  - name: "{b.name}"\n'
        "    credentials:\n"
        f'      - access_key_id: "{b.access_key}"\n'
        f'        secret_access_key: "{b.secret_key}"\n'
        for b in BUCKETS
    )
    backends = "".join(
        f'  - name: "{b.name}"\n'
        f'    endpoint: "http://127.0.0.1:{b.s3_port}"\n'
        f'    region: "{REGION}"\n'
        f'    bucket: "{b.bucket}"\n'
        f'    access_key_id: "{b.access_key}"\n'
        f'    secret_access_key: "{b.secret_key}"\n'
        "    force_path_style: true\n"
        f"    quota_bytes: {b.quota_bytes}  # {b.quota_bytes // MiB} MiB\n"
        for b in BACKENDS
    )
    return (
        "# s3orch demo configuration, written by `make run` (python -m tools.demo).\n"
        "# Kept across runs: edit freely; `make clean-demo` (or --fresh-config) starts over.\n"
        "# The format is s3-orchestrator's config.yaml; packaging/config.example.yaml lists every key.\n"
        "\n"
        "server:\n"
        f'  listen_addr: "{LISTEN_ADDR}"  # loopback only; "0.0.0.0:9000" exposes the demo\n'
        f'  spool_dir: "{state}/spool"\n'
        '  log_format: "text"\n'
        "\n"
        "buckets:\n"
        f"{buckets}"
        "\n"
        "database:\n"
        '  driver: "sqlite"\n'
        f'  path: "{state}/s3orch.db"\n'
        "\n"
        "# pack fills weed-1, then weed-2, then weed-3 (64 MiB, 64 MiB, 256 MiB).\n"
        'routing_strategy: "pack"\n'
        "\n"
        "backends:\n"
        f"{backends}"
        "\n"
        "telemetry:\n"
        "  metrics:\n"
        "    enabled: true\n"
        '    path: "/metrics"\n'
        "\n"
        "# The web dashboard at /ui/ (demo login; change both secrets before exposing it).\n"
        "ui:\n"
        "  enabled: true\n"
        f'  admin_key: "{UI_LOGIN[0]}"\n'
        f'  admin_secret: "{UI_LOGIN[1]}"\n'
        '  session_secret: "demo-session-secret-change-me"\n'
    )


def configured_listen_addr(config_path: Path) -> str:
    """``server.listen_addr`` of the (possibly hand-edited) config; LISTEN_ADDR if unreadable."""
    try:
        listen = yaml.safe_load(config_path.read_text())["server"]["listen_addr"]
        host, _, port = str(listen).rpartition(":")
        int(port)
        return str(listen)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return LISTEN_ADDR


def local_url(listen_addr: str) -> str:
    """How a client on this machine reaches ``listen_addr``."""
    host, _, port = listen_addr.rpartition(":")
    host = "localhost" if host in ("", "0.0.0.0", "127.0.0.1", "[::]", "::") else host
    return f"http://{host}:{port}"


def venv_bin() -> Path:
    """The directory of this interpreter's console scripts (the checkout's ``.venv/bin``)."""
    return Path(sys.executable).parent


def banner(config_path: Path, listen_addr: str, backends_only: bool) -> str:
    endpoint = local_url(listen_addr)
    lines = ["", "=" * 72]
    if backends_only:
        lines += [
            "Demo backends are up (s3orch is NOT running: --backends-only).",
            f"  run it yourself (from {config_path.parent.parent}):",
            "    " + " ".join(gateway_command(config_path.relative_to(config_path.parent.parent))),
        ]
    else:
        lines += [f"s3orch is serving on {endpoint}   (metrics: {endpoint}/metrics)"]
        lines += [f"  dashboard: {endpoint}/ui/   (login: {UI_LOGIN[0]} / {UI_LOGIN[1]}; an older .demo/config.yaml"
                  " needs --fresh-config)"]
    lines += ["  config:   " + str(config_path)]
    lines += [
        f"  backend:  {b.name}  http://127.0.0.1:{b.s3_port}  bucket {b.bucket}"
        f"  quota {b.quota_bytes // MiB} MiB"
        for b in BACKENDS
    ]
    lines += [
        f"  bucket:   {b.name:<10} access key {b.access_key:<11} secret {b.secret_key}" for b in BUCKETS
    ]
    lines += [
        "",
        "Try (in another terminal; `aws` is the AWS CLI in this checkout's .venv, not on your PATH):",
        f'  export PATH="{venv_bin()}:$PATH"',
        "  export AWS_ACCESS_KEY_ID=photoskey AWS_SECRET_ACCESS_KEY=photossecret"
        f" AWS_DEFAULT_REGION={REGION}",
        f"  aws --endpoint-url {endpoint} s3 cp README.rst s3://photos/readme.rst",
        f"  aws --endpoint-url {endpoint} s3 ls s3://photos/",
        f"  aws --endpoint-url {endpoint} s3 cp s3://photos/readme.rst -",
        f"  curl -s {endpoint}/metrics | grep s3o_quota_bytes_used",
        "",
        "Ctrl-C stops everything.",
        "=" * 72,
        "",
    ]
    return "\n".join(lines)


class Stop(Exception):
    """Raised in the main thread by SIGINT/SIGTERM/SIGHUP."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


class _ForceStop:
    """After the first signal: a second one means "stop waiting, kill now"."""

    requested = False

    @classmethod
    def handler(cls, signum: int, frame: FrameType | None) -> None:
        cls.requested = True


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class DemoWeedServer(WeedServer):
    """``weed mini`` in a session of its own: the terminal's Ctrl-C must not stop a
    backend before s3orch has drained; we stop the backends ourselves, last."""

    def _command(self) -> list[str]:
        setsid = shutil.which("setsid")
        command = super()._command()
        return [setsid, *command] if setsid else command


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def check_ports(listen_addr: str | None) -> None:
    """Fail early, and clearly, when a port we need is taken."""
    ports = [b.s3_port for b in BACKENDS]
    if listen_addr is not None:
        ports.append(int(listen_addr.rpartition(":")[2]))
    taken = [p for p in ports if _port_taken(p)]
    if taken:
        raise SystemExit(
            f"demo: port(s) {', '.join(map(str, taken))} on 127.0.0.1 already in use"
            " (another `make run`?); stop whatever holds them and retry"
        )


def start_backends(demo_dir: Path, servers: list[WeedServer]) -> None:
    """Start the three backends (appending each to ``servers`` before it starts, so an
    interrupted start is still cleaned up) and create their buckets."""
    for index, backend in enumerate(BACKENDS, start=1):
        server = DemoWeedServer(
            demo_dir / f"backend-{index}",
            backend.access_key,
            backend.secret_key,
            s3_port=backend.s3_port,
        )
        servers.append(server)
        # Started from the main thread: only then does the child get its parent-death signal.
        server.start()
        create_bucket(server.endpoint, backend.bucket, backend.access_key, backend.secret_key, REGION)
        print(
            f"demo: {backend.name} ready on {server.endpoint} (bucket {backend.bucket},"
            f" started in {server.start_seconds or 0:.1f}s, log {server.log_path})",
            flush=True,
        )


def write_config(demo_dir: Path, fresh: bool) -> Path:
    path = demo_dir / "config.yaml"
    (demo_dir / "spool").mkdir(parents=True, exist_ok=True)
    if path.exists() and not fresh:
        print(f"demo: using existing {path} (--fresh-config or `make clean-demo` rewrites it)")
        return path
    path.write_text(render_config(demo_dir.name))
    print(f"demo: wrote {path}")
    return path


def _twistd() -> str:
    candidate = Path(sys.executable).parent / "twistd"
    return str(candidate) if candidate.exists() else shutil.which("twistd") or "twistd"


def gateway_command(config_path: Path) -> list[str]:
    return [_twistd(), "-n", "--pidfile=", "s3orch", "--config", str(config_path)]


def start_gateway(config_path: Path) -> subprocess.Popen[bytes]:
    """``twistd -n s3orch`` in its own session, in the state directory's parent (where the
    config's relative paths start), logging to our stdout."""
    cwd = config_path.parent.parent
    command = gateway_command(config_path.relative_to(cwd))
    print(f"demo: starting {' '.join(command)}  (in {cwd})", flush=True)
    setpriv = shutil.which("setpriv")
    if setpriv:
        command = [setpriv, "--pdeathsig", "TERM", "--", *command]
    return subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, start_new_session=True)


def wait_ready(process: subprocess.Popen[bytes], listen_addr: str, timeout: float = 60.0) -> bool:
    """True once /health/ready answers 200; False if s3orch exited first."""
    url = local_url(listen_addr) + "/health/ready"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(urllib.error.URLError, OSError):
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        time.sleep(0.2)
    print(f"demo: s3orch not ready after {timeout:g}s; still waiting on it", flush=True)
    return True


def stop_gateway(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to s3orch's process group (it drains), SIGKILL after STOP_TIMEOUT or a
    second Ctrl-C."""
    if process.poll() is not None:
        return
    print("demo: stopping s3orch", flush=True)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while process.poll() is None and time.monotonic() < deadline and not _ForceStop.requested:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def stop_backends(servers: list[WeedServer]) -> None:
    """Stop the backends together (each takes a few seconds to flush and exit)."""
    running = [s for s in servers if s.running]
    if running:
        print(f"demo: stopping {len(running)} backend(s)", flush=True)

    def stop(server: WeedServer) -> None:
        if _ForceStop.requested:
            server.kill()
        else:
            server.stop()

    with ThreadPoolExecutor(max_workers=len(servers) or 1) as pool:
        list(pool.map(stop, servers))


@contextlib.contextmanager
def _signals_raise_stop() -> Iterator[None]:
    previous = {sig: signal.signal(sig, _raise_stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        # Cleanup must not be interrupted; a further signal only hurries it.
        for sig in previous:
            signal.signal(sig, _ForceStop.handler)


def run(demo_dir: Path, backends_only: bool, fresh_config: bool) -> int:
    demo_dir.mkdir(parents=True, exist_ok=True)
    config_path = write_config(demo_dir, fresh_config)
    listen_addr = configured_listen_addr(config_path)
    check_ports(None if backends_only else listen_addr)
    servers: list[WeedServer] = []
    gateway: subprocess.Popen[bytes] | None = None
    try:
        with _signals_raise_stop():
            start_backends(demo_dir, servers)
            if backends_only:
                print(banner(config_path, listen_addr, backends_only=True), flush=True)
                while all(s.running for s in servers):
                    time.sleep(0.5)
                print("demo: a backend exited unexpectedly", file=sys.stderr)
                return 1
            gateway = start_gateway(config_path)
            if wait_ready(gateway, listen_addr):
                print(banner(config_path, listen_addr, backends_only=False), flush=True)
            status = gateway.wait()
            print(f"demo: s3orch exited with status {status}", file=sys.stderr, flush=True)
            return status
    except Stop as stop:
        print(f"\ndemo: {stop} received, shutting down", flush=True)
        return 0
    except ServerError as exc:
        print(f"demo: a backend failed to start: {exc}", file=sys.stderr)
        return 1
    finally:
        if gateway is not None:
            stop_gateway(gateway)
        stop_backends(servers)
        print("demo: stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.demo",
        description="Three local SeaweedFS S3 backends + s3orch on " + LISTEN_ADDR,
    )
    parser.add_argument("--dir", type=Path, default=Path(".demo"), help="state directory (default: .demo)")
    parser.add_argument(
        "--backends-only",
        action="store_true",
        help="start the backends and write the config, but do not run s3orch",
    )
    parser.add_argument("--fresh-config", action="store_true", help="rewrite config.yaml even if it exists")
    args = parser.parse_args(argv)
    return run(args.dir.resolve(), args.backends_only, args.fresh_config)


if __name__ == "__main__":
    sys.exit(main())

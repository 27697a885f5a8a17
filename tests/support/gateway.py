"""Run a real ``twistd -n s3orch`` process for integration tests and benchmarks."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.support.polling import poll
from tests.support.servers import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class GatewayProcess:
    """One s3orch process with a config written to ``workdir``.

    ``config_text`` may contain ``{port}`` and ``{workdir}``, filled in here.  ``tls_context``
    (a client-side context trusting the gateway's CA, with a client certificate for mTLS)
    makes the endpoint ``https://`` and is used for the readiness probe.
    """

    def __init__(
        self,
        workdir: Path,
        config_text: str,
        port: int | None = None,
        tls_context: ssl.SSLContext | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.tls_context = tls_context
        #: Extra options after ``s3orch --config F`` (e.g. ``["--mode", "api"]``).
        self.args = list(args)
        #: Extra environment for the next starts (e.g. ``{"S3ORCH_CRASH_AT": "after-commit"}``).
        self.env: dict[str, str] = {}
        #: RLIMIT_FSIZE of the next starts in bytes (a full disk without mounting one; see
        #: tests.support.diskfull).  Every file the gateway writes is limited, its log too.
        self.file_size_limit: int | None = None
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "config.yaml"
        self._config_text = config_text
        #: A port we picked may be moved once if another process takes it before we listen.
        self._port_movable = port is None
        self._write_config(port or free_port())
        self.log_path = self.workdir / "s3orch.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def _write_config(self, port: int) -> None:
        self.port = port
        self.config_path.write_text(
            self._config_text.replace("{port}", str(port)).replace("{workdir}", str(self.workdir))
        )

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        """Run twistd and wait until *this* process answers /health/ready with 200."""
        for attempt in range(3):
            state = self._spawn_and_wait(timeout)
            if state == "ready":
                self._port_movable = False  # restarts keep the endpoint
                return self
            if state == "exited" and self._port_movable and attempt < 2 and self._lost_port_race():
                self._write_config(free_port())
                continue
            if state == "exited":
                raise RuntimeError(f"s3orch exited early:\n{self.log_text()[-4000:]}")
            self.stop()
            raise RuntimeError(f"s3orch did not become ready:\n{self.log_text()[-4000:]}")
        raise AssertionError("unreachable")

    def _spawn_and_wait(self, timeout: float) -> str:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.update(self.env)
        twistd = str(Path(sys.executable).with_name("twistd"))
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "s3orch", "--config", str(self.config_path), *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(self.workdir),
            env=env,
            start_new_session=True,
            preexec_fn=None if self.file_size_limit is None else self._limit_file_size,
        )
        log.close()
        return poll(self._probe, lambda found: found != "starting", timeout)

    def _limit_file_size(self) -> None:
        """In the child, before exec: files past the limit fail with EFBIG."""
        import resource

        limit = self.file_size_limit
        assert limit is not None
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    def _new_log(self) -> str:
        """What this process has logged since it was started."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self._log_offset)
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _lost_port_race(self) -> bool:
        """Another process took our port between picking it and listening on it."""
        return "Address already in use" in self._new_log()

    def _probe(self) -> str:
        """``exited``, ``ready`` or still ``starting``.

        Ready means our process listens on the port AND the port answers /health/ready with
        200: the port alone could be another process's that took it first (ours then fails).
        """
        if self.proc is None or self.proc.poll() is not None:
            return "exited"
        if not listens_on(self.proc.pid, self.port):
            return "starting"
        try:
            with urllib.request.urlopen(
                self.endpoint + "/health/ready", timeout=1, context=self.tls_context
            ) as resp:
                return "ready" if resp.status == 200 else "starting"
        except (urllib.error.URLError, ConnectionError, OSError):
            return "starting"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a listening TCP socket on ``port`` (Linux ``/proc``; where
    that cannot be read, assumed true)."""
    inodes: set[str] = set()
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st ... inode (0A: LISTEN)
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not readable:
        return True
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return not Path("/proc/self/fd").exists()
    for fd in descriptors:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[len("socket:[") : -1] in inodes:
            return True
    return False

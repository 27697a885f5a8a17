"""credential_source: default_chain in a real gateway: keys from the environment, or from STS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from botocore.exceptions import ClientError

from tests.conftest import PHOTOS, quota_rows, s3_client
from tests.integration.conftest import fresh_bucket
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess


class _DefaultChain(GatewayConfig):
    """A config whose backends take their keys from the AWS default chain (keys omitted)."""

    def render(self) -> str:
        doc = yaml.safe_load(super().render())
        for backend in doc["backends"]:
            del backend["access_key_id"], backend["secret_access_key"]
            backend["credential_source"] = "default_chain"
        return yaml.safe_dump(doc, sort_keys=False)


def _default_chain_config(spec: BackendSpec) -> _DefaultChain:
    return _DefaultChain(backends=[spec])


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """The gateway's environment without this machine's AWS settings or files."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_keys_from_the_environment_sign_for_a_signature_checking_backend(weed, aws_env, start_gateway) -> None:  # type: ignore[no-untyped-def]
    spec = BackendSpec("weed", weed.endpoint, fresh_bucket(weed), quota_bytes=1 << 20)
    aws_env.setenv("AWS_ACCESS_KEY_ID", weed.access_key)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", weed.secret_key)
    gw = start_gateway(_default_chain_config(spec))
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    s3.put_object(Bucket="photos", Key="env.txt", Body=b"signed with env keys")
    assert s3.get_object(Bucket="photos", Key="env.txt")["Body"].read() == b"signed with env keys"
    assert "signs with credentials from environment variables" in gw.log_text()
    assert weed.secret_key not in gw.log_text()


def test_wrong_keys_in_the_environment_fail_writes_cleanly(weed, aws_env, start_gateway) -> None:  # type: ignore[no-untyped-def]
    spec = BackendSpec("weed", weed.endpoint, fresh_bucket(weed), quota_bytes=1 << 20)
    aws_env.setenv("AWS_ACCESS_KEY_ID", weed.access_key)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    gw = start_gateway(_default_chain_config(spec))
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="photos", Key="k", Body=b"data")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    rows = quota_rows(gw)["weed"]
    assert (rows["used"], rows["reserved"]) == (0, 0)


def test_keys_from_a_shared_credentials_file_work_against_moto(moto_backends, aws_env, tmp_path: Path, start_gateway) -> None:  # type: ignore[no-untyped-def]
    (spec,) = moto_backends(1, quota=1 << 20)
    credentials = tmp_path / "credentials"
    credentials.write_text("[gateway]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    aws_env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    aws_env.setenv("AWS_PROFILE", "gateway")
    gw = start_gateway(_default_chain_config(spec))
    aws_env.delenv("AWS_PROFILE")  # the gateway has it; this process's boto3 must not look for it
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    s3.put_object(Bucket="photos", Key="file.txt", Body=b"from the profile")
    assert s3.get_object(Bucket="photos", Key="file.txt")["Body"].read() == b"from the profile"
    assert f"credentials from profile 'gateway' of {credentials}" in gw.log_text()


def test_a_web_identity_is_exchanged_with_sts_for_temporary_keys(moto_server, moto_backends, aws_env, tmp_path: Path, start_gateway) -> None:  # type: ignore[no-untyped-def]
    (spec,) = moto_backends(1, quota=1 << 20)
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzM29yY2gifQ.c2ln\n")
    aws_env.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    aws_env.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/s3orch")
    aws_env.setenv("AWS_ENDPOINT_URL_STS", moto_server.endpoint)  # moto serves STS on the same port
    gw = start_gateway(_default_chain_config(spec))
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    s3.put_object(Bucket="photos", Key="sts.txt", Body=b"temporary keys")
    assert s3.get_object(Bucket="photos", Key="sts.txt")["Body"].read() == b"temporary keys"
    log = gw.log_text()
    assert "web identity (arn:aws:iam::123456789012:role/s3orch" in log
    assert "cannot refresh backend credentials" not in log


def test_no_credentials_anywhere_stops_the_start_naming_the_backend(moto_backends, aws_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (spec,) = moto_backends(1, quota=1 << 20)
    gw = GatewayProcess(tmp_path / "gw", _default_chain_config(spec).render())
    with pytest.raises(RuntimeError, match="exited early"):
        gw.start()
    assert gw.proc is not None and gw.proc.wait(10) == 1
    (line,) = [line for line in gw.log_text().splitlines() if line.strip()]
    assert line.startswith(
        "error: backends[0].credential_source: default_chain for backend 'backend-1': no AWS credentials found"
    )

"""Real S3 clients against s3orch: the AWS CLI, boto3 and rclone, as users run them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import s3_client
from tests.e2e.conftest import venv_tool
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.e2e

AWKWARD_NAMES = ["plain.txt", "with space.txt", "plus+sign.txt", "per%cent.txt", "eq=amp&.txt",
                 "tilde~.txt", "ünïcödé-名前.txt", "deep/er/nested file.bin"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args[:3]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _aws(gateway: GatewayProcess, env: dict[str, str], *args: str) -> str:
    return _run([venv_tool("aws"), "--endpoint-url", gateway.endpoint, *args], env)


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _make_tree(root: Path) -> None:
    for i, name in enumerate(AWKWARD_NAMES):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1000 + 7919 * i))
        # Files predate their upload (S3 LastModified has one-second precision).
        old = time.time() - 10
        os.utime(path, (old, old))


def test_aws_cli_cp_ls_sync_presign_and_recursive_rm(gateway, client_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "upload.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    _aws(gateway, client_env, "s3", "cp", str(src), "s3://photos/cli/upload.bin")
    down = tmp_path / "download.bin"
    _aws(gateway, client_env, "s3", "cp", "s3://photos/cli/upload.bin", str(down))
    assert _sha(down) == _sha(src)

    tree = tmp_path / "tree"
    _make_tree(tree)
    _aws(gateway, client_env, "s3", "sync", str(tree), "s3://photos/sync/")
    listing = _aws(gateway, client_env, "s3", "ls", "--recursive", "s3://photos/sync/")
    for name in AWKWARD_NAMES:
        assert f"sync/{name}" in listing
    top = _aws(gateway, client_env, "s3", "ls", "s3://photos/sync/")
    assert "PRE deep/" in top and "plain.txt" in top and "nested file.bin" not in top
    back = tmp_path / "back"
    _aws(gateway, client_env, "s3", "sync", "s3://photos/sync/", str(back))
    assert _tree(back) == _tree(tree)
    # A second sync has nothing to do.
    assert _aws(gateway, client_env, "s3", "sync", str(tree), "s3://photos/sync/").strip() == ""

    url = _aws(gateway, client_env, "s3", "presign", "s3://photos/cli/upload.bin", "--expires-in", "300").strip()
    fetched = tmp_path / "curl.bin"
    _run(["curl", "-sSf", "-o", str(fetched), url], client_env)
    assert _sha(fetched) == _sha(src)

    _aws(gateway, client_env, "s3", "rm", "--recursive", "s3://photos/sync/")
    # `aws s3 ls` exits 1 when nothing matches: that, and no output, is the proof.
    empty = subprocess.run(
        [venv_tool("aws"), "--endpoint-url", gateway.endpoint, "s3", "ls", "--recursive", "s3://photos/sync/"],
        env=client_env, capture_output=True, text=True, timeout=60,
    )
    assert (empty.returncode, empty.stdout.strip()) == (1, "")


def test_boto3_upload_download_and_batch_delete(gateway, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from boto3.s3.transfer import TransferConfig

    s3 = s3_client(gateway.endpoint, "photoskey", "photossecret")
    src = tmp_path / "b.bin"
    src.write_bytes(os.urandom(5 * 1024 * 1024))
    config = TransferConfig(multipart_threshold=64 * 1024 * 1024)
    s3.upload_file(str(src), "photos", "boto/b.bin", Config=config)
    dst = tmp_path / "b.out"
    s3.download_file("photos", "boto/b.bin", str(dst), Config=config)
    assert _sha(dst) == _sha(src)
    for i in range(20):
        s3.put_object(Bucket="photos", Key=f"boto/many/{i:02d}", Body=b"%d" % i)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="photos", Prefix="boto/many/")["Contents"]]
    assert len(keys) == 20
    result = s3.delete_objects(Bucket="photos", Delete={"Objects": [{"Key": k} for k in keys]})
    assert len(result["Deleted"]) == 20
    assert s3.list_objects_v2(Bucket="photos", Prefix="boto/many/")["KeyCount"] == 0


def test_rclone_copy_check_sync(gateway, client_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = dict(client_env)
    env.update(
        RCLONE_CONFIG_GW_TYPE="s3",
        RCLONE_CONFIG_GW_PROVIDER="Other",
        RCLONE_CONFIG_GW_ENDPOINT=gateway.endpoint,
        RCLONE_CONFIG_GW_ACCESS_KEY_ID="photoskey",
        RCLONE_CONFIG_GW_SECRET_ACCESS_KEY="photossecret",
        RCLONE_CONFIG_GW_REGION="us-east-1",
        RCLONE_CONFIG_GW_FORCE_PATH_STYLE="true",
    )
    rclone = [venv_tool("rclone"), "--config", str(tmp_path / "rclone.conf")]
    tree = tmp_path / "tree"
    _make_tree(tree)
    _run([*rclone, "copy", str(tree), "gw:photos/rclone"], env)
    _run([*rclone, "check", str(tree), "gw:photos/rclone"], env)
    listed = _run([*rclone, "lsf", "-R", "gw:photos/rclone"], env)
    for name in AWKWARD_NAMES:
        assert name in listed
    back = tmp_path / "back"
    _run([*rclone, "sync", "gw:photos/rclone", str(back)], env)
    assert _tree(back) == _tree(tree)
    _run([*rclone, "purge", "gw:photos/rclone/deep"], env)
    assert "deep/" not in _run([*rclone, "lsf", "-R", "gw:photos/rclone"], env)

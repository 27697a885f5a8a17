"""Every common S3 client, with its defaults, against s3orch over real (moto) backends.

One gateway per module (tests/e2e/conftest.py), one prefix per test.  Each client does
what its users do, including a 40 MiB transfer (multipart for most of them), and every
download is compared by SHA-256.  ``test_wrong_secret_shows_the_s3_error`` proves each
client's failure shows the S3 error code, promptly.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e import clients
from tests.e2e.clients import AWKWARD_NAMES, make_tree, run, sha256_file, tree_digests
from tests.e2e.conftest import venv_tool
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.e2e

BIG = 40 * 1024 * 1024
ACCESS_KEY, SECRET_KEY = "photoskey", "photossecret"


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One 40 MiB random file shared by the module, and its SHA-256."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    with open(path, "wb") as f:
        for _ in range(BIG // (1 << 20)):
            f.write(os.urandom(1 << 20))
    return path, sha256_file(path)


def _prefix(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _boto3(gateway: GatewayProcess, **config: object) -> object:
    """A boto3 client as users write it: endpoint, keys, region; everything else default."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=gateway.endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(**config) if config else None,  # type: ignore[arg-type]
    )


def _remaining_keys(gateway: GatewayProcess, prefix: str) -> list[str]:
    s3 = _boto3(gateway)
    found = s3.list_objects_v2(Bucket="photos", Prefix=prefix)  # type: ignore[attr-defined]
    return [o["Key"] for o in found.get("Contents", [])]


# -- AWS CLI ----------------------------------------------------------------------------------


def _aws(gateway: GatewayProcess, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([venv_tool("aws"), "--endpoint-url", gateway.endpoint, *args], env, check=check)


def test_aws_cli_sync_ls_presign_and_recursive_rm(gateway, client_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    top = _prefix("awscli")
    tree = tmp_path / "tree"
    digests = make_tree(tree)
    _aws(gateway, client_env, "s3", "sync", str(tree), f"s3://photos/{top}/")
    listing = _aws(gateway, client_env, "s3", "ls", "--recursive", f"s3://photos/{top}/").stdout
    for name in AWKWARD_NAMES:
        assert f"{top}/{name}" in listing
    back = tmp_path / "back"
    _aws(gateway, client_env, "s3", "sync", f"s3://photos/{top}/", str(back))
    assert tree_digests(back) == digests
    assert _aws(gateway, client_env, "s3", "sync", str(tree), f"s3://photos/{top}/").stdout.strip() == ""

    # `aws s3 presign` signs with SigV2 query parameters by default; curl fetches it as is.
    name = "with space.txt"
    url = _aws(gateway, client_env, "s3", "presign", f"s3://photos/{top}/{name}").stdout.strip()
    assert "AWSAccessKeyId=" in url or "X-Amz-Signature=" in url
    fetched = tmp_path / "curl.out"
    run(["curl", "-sSf", "-o", str(fetched), url], client_env)
    assert sha256_file(fetched) == digests[name]

    _aws(gateway, client_env, "s3", "rm", "--recursive", f"s3://photos/{top}/")
    empty = _aws(gateway, client_env, "s3", "ls", "--recursive", f"s3://photos/{top}/", check=False)
    assert (empty.returncode, empty.stdout.strip()) == (1, "")


def test_aws_cli_cp_40mib_up_and_down(gateway, client_env, tmp_path, big_file) -> None:  # type: ignore[no-untyped-def]
    src, digest = big_file
    key = f"{_prefix('awscli-big')}/big file.bin"
    target = f"s3://photos/{key}"
    _aws(gateway, client_env, "s3", "cp", str(src), target)
    assert clients.uploaded_parts(gateway.log_path, key) == 5  # 8 MiB parts by default
    down = tmp_path / "down.bin"
    _aws(gateway, client_env, "s3", "cp", target, str(down))
    assert sha256_file(down) == digest
    _aws(gateway, client_env, "s3", "rm", target)


def test_aws_cli_bucket_commands_answer_as_aws(gateway, client_env) -> None:  # type: ignore[no-untyped-def]
    # `s3 mb` of the caller's own bucket: AWS (us-east-1) answers 200 to its owner.
    assert "make_bucket: photos" in _aws(gateway, client_env, "s3", "mb", "s3://photos").stdout
    other = _aws(gateway, client_env, "s3", "mb", "s3://not-mine", check=False)
    assert other.returncode != 0 and "AccessDenied" in other.stderr
    key = f"{_prefix('awscli-rb')}/keep.txt"
    _boto3(gateway).put_object(Bucket="photos", Key=key, Body=b"keep")  # type: ignore[attr-defined]
    removed = _aws(gateway, client_env, "s3", "rb", "s3://photos", check=False)
    assert removed.returncode != 0 and "BucketNotEmpty" in removed.stderr
    versioning = _aws(gateway, client_env, "s3api", "get-bucket-versioning", "--bucket", "photos").stdout
    assert versioning.strip() == ""  # never enabled: an empty document
    policy = _aws(gateway, client_env, "s3api", "get-bucket-policy", "--bucket", "photos", check=False)
    assert "NoSuchBucketPolicy" in policy.stderr
    change = _aws(gateway, client_env, "s3api", "put-bucket-versioning", "--bucket", "photos",
                  "--versioning-configuration", "Status=Enabled", check=False)
    assert change.returncode != 0 and "NotImplemented" in change.stderr
    _aws(gateway, client_env, "s3", "rm", f"s3://photos/{key}")


# -- boto3 ------------------------------------------------------------------------------------


def _plain_http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    """A bare request, as curl sends one: no Content-Type (SigV2 signs it), nothing added."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, f"{parts.path}?{parts.query}", body=body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("signature_version", [None, "s3v4"])
def test_boto3_presigned_get_and_put_with_plain_http(gateway, signature_version) -> None:  # type: ignore[no-untyped-def]
    config = {"signature_version": signature_version} if signature_version else {}
    s3 = _boto3(gateway, **config)
    key = f"{_prefix('boto3-presign')}/a b+c=d&e~ü.bin"
    data = os.urandom(100_000)
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "photos", "Key": key})  # type: ignore[attr-defined]
    if signature_version is None:
        assert "AWSAccessKeyId=" in put_url  # botocore's default for S3 presigning: SigV2
    else:
        assert "X-Amz-Signature=" in put_url
    assert _plain_http("PUT", put_url, data) == (200, b"")
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": key})  # type: ignore[attr-defined]
    assert _plain_http("GET", get_url) == (200, data)
    s3.delete_object(Bucket="photos", Key=key)  # type: ignore[attr-defined]


def test_boto3_metadata_round_trip(gateway) -> None:  # type: ignore[no-untyped-def]
    s3 = _boto3(gateway)
    key = f"{_prefix('boto3-meta')}/doc.html"
    s3.put_object(  # type: ignore[attr-defined]
        Bucket="photos", Key=key, Body=b"<p>hi</p>", ContentType="text/html; charset=utf-8",
        CacheControl="max-age=60", ContentDisposition='attachment; filename="doc.html"',
        ContentLanguage="en", Metadata={"owner": "me, myself & I", "Mixed-Case": "v"},
    )
    head = s3.head_object(Bucket="photos", Key=key, ChecksumMode="ENABLED")  # type: ignore[attr-defined]
    attributes = s3.get_object_attributes(  # type: ignore[attr-defined]
        Bucket="photos", Key=key, ObjectAttributes=["ETag", "Checksum", "ObjectSize"]
    )
    assert attributes["ObjectSize"] == len(b"<p>hi</p>") and f'"{attributes["ETag"]}"' == head["ETag"]
    # botocore sends a CRC32 with every upload by default; it comes back on request.
    assert attributes["Checksum"]["ChecksumCRC32"] == head["ChecksumCRC32"]
    assert head["ContentType"] == "text/html; charset=utf-8"
    assert head["CacheControl"] == "max-age=60"
    assert head["ContentDisposition"] == 'attachment; filename="doc.html"'
    assert head["ContentLanguage"] == "en"
    assert head["Metadata"] == {"owner": "me, myself & I", "mixed-case": "v"}
    copied = key + ".copy"
    s3.copy_object(Bucket="photos", Key=copied, CopySource={"Bucket": "photos", "Key": key})  # type: ignore[attr-defined]
    assert s3.head_object(Bucket="photos", Key=copied)["Metadata"] == head["Metadata"]  # type: ignore[attr-defined]
    s3.delete_objects(Bucket="photos", Delete={"Objects": [{"Key": key}, {"Key": copied}]})  # type: ignore[attr-defined]


def test_boto3_upload_and_download_file_40mib(gateway, tmp_path, big_file) -> None:  # type: ignore[no-untyped-def]
    src, digest = big_file
    s3 = _boto3(gateway)
    key = f"{_prefix('boto3-big')}/big.bin"
    s3.upload_file(str(src), "photos", key)  # type: ignore[attr-defined]
    assert clients.uploaded_parts(gateway.log_path, key) == 5  # 8 MiB parts by default
    down = tmp_path / "down.bin"
    s3.download_file("photos", key, str(down))  # type: ignore[attr-defined]
    assert sha256_file(down) == digest
    attributes = s3.get_object_attributes(  # type: ignore[attr-defined]
        Bucket="photos", Key=key, ObjectAttributes=["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]
    )
    assert attributes["ObjectSize"] == BIG and attributes["StorageClass"] == "STANDARD"
    assert attributes["ObjectParts"]["TotalPartsCount"] == 5
    assert attributes["ETag"].endswith("-5")
    s3.delete_object(Bucket="photos", Key=key)  # type: ignore[attr-defined]


# -- rclone -----------------------------------------------------------------------------------


def test_rclone_copy_check_sync_purge(gateway, client_env, tmp_path, big_file) -> None:  # type: ignore[no-untyped-def]
    env = clients.rclone_env(client_env, gateway.endpoint, ACCESS_KEY, SECRET_KEY)
    rclone = [venv_tool("rclone"), "--config", str(tmp_path / "rclone.conf")]
    top = _prefix("rclone")
    tree = tmp_path / "tree"
    make_tree(tree)
    os.link(big_file[0], tree / "big.bin")
    digests = tree_digests(tree)
    # No --s3-no-check-bucket: rclone probes/creates the bucket first.
    run([*rclone, "copy", str(tree), f"gw:photos/{top}"], env)
    run([*rclone, "check", str(tree), f"gw:photos/{top}"], env)
    back = tmp_path / "back"
    run([*rclone, "sync", f"gw:photos/{top}", str(back)], env)
    assert tree_digests(back) == digests
    run([*rclone, "purge", f"gw:photos/{top}/deep"], env)
    listed = run([*rclone, "lsf", "-R", f"gw:photos/{top}"], env).stdout
    assert "deep/" not in listed and "plain.txt" in listed
    run([*rclone, "purge", f"gw:photos/{top}"], env)
    assert _remaining_keys(gateway, top + "/") == []


# -- s3cmd ------------------------------------------------------------------------------------


@pytest.mark.parametrize("signature_v2", [False, True], ids=["default", "signature_v2"])
def test_s3cmd_put_get_ls_info_sync_del(gateway, client_env, tmp_path, signature_v2) -> None:  # type: ignore[no-untyped-def]
    config = clients.s3cmd_config(tmp_path / "s3cfg", gateway.endpoint, ACCESS_KEY, SECRET_KEY, signature_v2)
    s3cmd = clients.s3cmd(config)
    top = _prefix("s3cmd")
    one = tmp_path / "one.bin"
    one.write_bytes(os.urandom(300_000))
    run([*s3cmd, "put", str(one), f"s3://photos/{top}/one.bin"], client_env)
    got = tmp_path / "got.bin"
    run([*s3cmd, "get", f"s3://photos/{top}/one.bin", str(got)], client_env)
    assert sha256_file(got) == sha256_file(one)
    assert f"s3://photos/{top}/one.bin" in run([*s3cmd, "ls", f"s3://photos/{top}/"], client_env).stdout

    # `info` reads ?acl and ?policy (and more): all must answer as AWS does, not fail.
    info = run([*s3cmd, "info", f"s3://photos/{top}/one.bin"], client_env).stdout
    assert "File size: 300000" in info and "FULL_CONTROL" in info
    bucket_info = run([*s3cmd, "info", "s3://photos"], client_env).stdout
    assert "Location:" in bucket_info and "Policy:    none" in bucket_info and "FULL_CONTROL" in bucket_info

    tree = tmp_path / "tree"
    digests = make_tree(tree)
    run([*s3cmd, "sync", f"{tree}/", f"s3://photos/{top}/tree/"], client_env)
    back = tmp_path / "back"
    run([*s3cmd, "sync", f"s3://photos/{top}/tree/", f"{back}/"], client_env)
    assert tree_digests(back) == digests

    run([*s3cmd, "del", f"s3://photos/{top}/one.bin"], client_env)
    run([*s3cmd, "del", "--recursive", "--force", f"s3://photos/{top}/"], client_env)
    assert _remaining_keys(gateway, top + "/") == []


@pytest.mark.parametrize("signature_v2", [False, True], ids=["default", "signature_v2"])
def test_s3cmd_multipart_put_40mib(gateway, client_env, tmp_path, big_file, signature_v2) -> None:  # type: ignore[no-untyped-def]
    src, digest = big_file
    config = clients.s3cmd_config(tmp_path / "s3cfg", gateway.endpoint, ACCESS_KEY, SECRET_KEY, signature_v2)
    s3cmd = clients.s3cmd(config)
    key = f"{_prefix('s3cmd-big')}/big.bin"
    target = f"s3://photos/{key}"
    run([*s3cmd, "put", str(src), target], client_env)
    assert clients.uploaded_parts(gateway.log_path, key) == 3  # s3cmd's default 15 MiB chunks
    got = tmp_path / "got.bin"
    run([*s3cmd, "get", target, str(got)], client_env)
    assert sha256_file(got) == digest
    run([*s3cmd, "del", target], client_env)


# -- MinIO Python SDK -------------------------------------------------------------------------


def _minio(gateway: GatewayProcess, secret_key: str = SECRET_KEY) -> object:
    from minio import Minio

    return Minio(clients.host_port(gateway.endpoint), access_key=ACCESS_KEY, secret_key=secret_key, secure=False)


def test_minio_put_get_stat_list_copy_remove_presign(gateway) -> None:  # type: ignore[no-untyped-def]
    import io

    from minio.commonconfig import CopySource
    from minio.deleteobjects import DeleteObject

    mc = _minio(gateway)
    top = _prefix("minio")
    data = os.urandom(250_000)
    mc.put_object("photos", f"{top}/a b.bin", io.BytesIO(data), len(data),  # type: ignore[attr-defined]
                  content_type="application/x-test", metadata={"colour": "blue"})
    resp = mc.get_object("photos", f"{top}/a b.bin")  # type: ignore[attr-defined]
    try:
        assert resp.read() == data
    finally:
        resp.close()
        resp.release_conn()
    stat = mc.stat_object("photos", f"{top}/a b.bin")  # type: ignore[attr-defined]
    assert (stat.size, stat.content_type) == (len(data), "application/x-test")
    assert stat.metadata.get("x-amz-meta-colour") == "blue"
    mc.copy_object("photos", f"{top}/copy+1.bin", CopySource("photos", f"{top}/a b.bin"))  # type: ignore[attr-defined]
    names = sorted(o.object_name for o in mc.list_objects("photos", prefix=f"{top}/", recursive=True))  # type: ignore[attr-defined]
    assert names == [f"{top}/a b.bin", f"{top}/copy+1.bin"]
    url = mc.presigned_get_object("photos", f"{top}/copy+1.bin")  # type: ignore[attr-defined]
    with urllib.request.urlopen(url, timeout=30) as got:
        assert got.read() == data
    errors = list(mc.remove_objects("photos", [DeleteObject(n) for n in names]))  # type: ignore[attr-defined]
    assert errors == []
    assert list(mc.list_objects("photos", prefix=f"{top}/", recursive=True)) == []  # type: ignore[attr-defined]


def test_minio_fput_fget_40mib(gateway, tmp_path, big_file) -> None:  # type: ignore[no-untyped-def]
    src, digest = big_file
    mc = _minio(gateway)
    key = f"{_prefix('minio-big')}/big.bin"
    mc.fput_object("photos", key, str(src))  # type: ignore[attr-defined]
    assert clients.uploaded_parts(gateway.log_path, key) > 1
    down = tmp_path / "down.bin"
    mc.fget_object("photos", key, str(down))  # type: ignore[attr-defined]
    assert sha256_file(down) == digest
    mc.remove_object("photos", key)  # type: ignore[attr-defined]


# -- AWS SDK for JavaScript v3 ----------------------------------------------------------------


def _js(env: dict[str, str], *args: str) -> dict[str, object]:
    out = run([*clients.node_driver(), *args], env).stdout
    result: dict[str, object] = json.loads(out)
    return result


def test_js_sdk_put_get_list_copy_delete(gateway, client_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = clients.node_env(client_env, gateway.endpoint, ACCESS_KEY, SECRET_KEY)
    top = _prefix("js")
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(700_000))
    # A Buffer body: x-amz-checksum-crc32 header.  A file stream: Transfer-Encoding: chunked
    # around an aws-chunked body with a CRC32 trailer.
    put = _js(env, "put", f"{top}/buffer.bin", str(src))
    stream = _js(env, "put-stream", f"{top}/stream ü+.bin", str(src))
    assert put["checksums"] == stream["checksums"] and "ChecksumCRC32" in put["checksums"]  # type: ignore[operator]
    for key in (f"{top}/buffer.bin", f"{top}/stream ü+.bin"):
        out = tmp_path / "out.bin"
        got = _js(env, "get", key, str(out))  # validates the CRC32 the gateway returns
        assert got["checksums"] == put["checksums"]
        assert sha256_file(out) == sha256_file(src)
    _js(env, "copy", f"{top}/stream ü+.bin", f"{top}/copy=1&.bin")
    listed = _js(env, "list", f"{top}/")
    keys = sorted([f"{top}/buffer.bin", f"{top}/copy=1&.bin", f"{top}/stream ü+.bin"])
    assert listed["keys"] == keys
    deleted = _js(env, "delete-many", *keys)
    assert sorted(deleted["deleted"]) == keys and deleted["errors"] == []  # type: ignore[call-overload]
    assert _js(env, "list", f"{top}/")["keys"] == []


def test_js_sdk_upload_40mib(gateway, client_env, tmp_path, big_file) -> None:  # type: ignore[no-untyped-def]
    src, digest = big_file
    env = clients.node_env(client_env, gateway.endpoint, ACCESS_KEY, SECRET_KEY)
    key = f"{_prefix('js-big')}/big.bin"
    _js(env, "upload", key, str(src))
    assert clients.uploaded_parts(gateway.log_path, key) == 8  # lib-storage's 5 MiB parts
    out = tmp_path / "out.bin"
    _js(env, "get", key, str(out))
    assert sha256_file(out) == digest
    _js(env, "delete-many", key)


# -- restic -----------------------------------------------------------------------------------


def test_restic_init_backup_check_restore_forget(gateway, client_env, tmp_path, big_file) -> None:  # type: ignore[no-untyped-def]
    top = _prefix("restic")
    env = clients.restic_env(client_env, gateway.endpoint, top, ACCESS_KEY, SECRET_KEY, tmp_path / "cache")
    restic = clients.restic()
    data = tmp_path / "data"
    make_tree(data)
    os.link(big_file[0], data / "big.bin")
    run([restic, "init"], env)
    run([restic, "backup", "--host", "e2e", str(data)], env, timeout=300)
    (data / "plain.txt").write_bytes(os.urandom(5000))
    run([restic, "backup", "--host", "e2e", str(data)], env, timeout=300)
    run([restic, "check", "--read-data"], env, timeout=300)
    target = tmp_path / "restore"
    run([restic, "restore", "latest", "--target", str(target)], env, timeout=300)
    assert tree_digests(target / data.relative_to("/")) == tree_digests(data)
    run([restic, "forget", "--keep-last", "1", "--prune"], env, timeout=300)
    snapshots = json.loads(run([restic, "snapshots", "--json"], env).stdout)
    assert len(snapshots) == 1
    run([restic, "check"], env)


# -- s3fs -------------------------------------------------------------------------------------


def test_s3fs_put_get_find_ranged_cat_rm(gateway, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import s3fs

    fs = s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=gateway.endpoint,
                           skip_instance_cache=True)
    top = _prefix("s3fs")
    tree = tmp_path / "tree"
    digests = make_tree(tree)
    fs.put(f"{tree}/", f"photos/{top}/", recursive=True)
    found = sorted(fs.find(f"photos/{top}/"))
    assert found == sorted(f"photos/{top}/{name}" for name in AWKWARD_NAMES)
    back = tmp_path / "back"
    fs.get(f"photos/{top}/", f"{back}/", recursive=True)
    assert tree_digests(back) == digests
    whole = (tree / "deep/er/nested file.bin").read_bytes()
    part = fs.cat_file(f"photos/{top}/deep/er/nested file.bin", start=1000, end=20000)
    assert part == whole[1000:20000]
    fs.rm(f"photos/{top}/", recursive=True)
    fs.invalidate_cache()
    assert fs.find(f"photos/{top}/") == []
    assert _remaining_keys(gateway, top + "/") == []


# -- failure modes ----------------------------------------------------------------------------


def _fail_aws(gateway: GatewayProcess, env: dict[str, str], tmp_path: Path) -> str:
    env = dict(env, AWS_SECRET_ACCESS_KEY="wrong")
    return _aws(gateway, env, "s3", "ls", "s3://photos/", check=False).stderr


def _fail_boto3(gateway: GatewayProcess, env: dict[str, str], tmp_path: Path) -> str:
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client("s3", endpoint_url=gateway.endpoint, aws_access_key_id=ACCESS_KEY,
                      aws_secret_access_key="wrong", region_name="us-east-1")
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="photos", Key="denied", Body=b"x")
    return str(info.value)


def _fail_rclone(gateway: GatewayProcess, env: dict[str, str], tmp_path: Path) -> str:
    env = clients.rclone_env(env, gateway.endpoint, ACCESS_KEY, "wrong")
    return run([venv_tool("rclone"), "--config", str(tmp_path / "rc.conf"), "lsf", "gw:photos"], env,
               check=False).stderr


def _fail_s3cmd(gateway: GatewayProcess, env: dict[str, str], tmp_path: Path) -> str:
    config = clients.s3cmd_config(tmp_path / "s3cfg", gateway.endpoint, ACCESS_KEY, "wrong", False)
    return run([*clients.s3cmd(config), "ls", "s3://photos/"], env, check=False).stderr


def _fail_minio(gateway: GatewayProcess, env: dict[str, str], tmp_path: Path) -> str:
    from minio.error import S3Error

    with pytest.raises(S3Error) as info:
        list(_minio(gateway, "wrong").list_objects("photos"))  # type: ignore[attr-defined]
    return f"{info.value.code}: {info.value}"


def _fail_js(gateway: GatewayProcess, env: dict[str, str], tmp_path: Path) -> str:
    env = clients.node_env(env, gateway.endpoint, ACCESS_KEY, "wrong")
    return run([*clients.node_driver(), "list", ""], env, check=False).stderr


def _fail_restic(gateway: GatewayProcess, env: dict[str, str], tmp_path: Path) -> str:
    env = clients.restic_env(env, gateway.endpoint, "denied", ACCESS_KEY, "wrong", tmp_path / "cache")
    return run([clients.restic(), "init"], env, check=False).stderr


def _fail_s3fs(gateway: GatewayProcess, env: dict[str, str], tmp_path: Path) -> str:
    import s3fs

    fs = s3fs.S3FileSystem(key=ACCESS_KEY, secret="wrong", endpoint_url=gateway.endpoint, skip_instance_cache=True)
    with pytest.raises(PermissionError) as info:
        fs.ls("photos/")
    # s3fs maps the S3 error to a Python one and keeps botocore's error (with the code) as the cause.
    return f"{info.value} ({info.value.__cause__})"


FAILURES: dict[str, Callable[[GatewayProcess, dict[str, str], Path], str]] = {
    "aws-cli": _fail_aws,
    "boto3": _fail_boto3,
    "rclone": _fail_rclone,
    "s3cmd": _fail_s3cmd,
    "minio": _fail_minio,
    "js-sdk": _fail_js,
    "restic": _fail_restic,
    "s3fs": _fail_s3fs,
}


@pytest.mark.parametrize("client", sorted(FAILURES))
def test_wrong_secret_shows_the_s3_error(gateway, client_env, tmp_path, client) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    shown = FAILURES[client](gateway, client_env, tmp_path)
    if client == "restic":
        # restic probes with HEAD, whose error answer has no body (as on AWS): it shows the status.
        assert "Access Denied" in shown, shown
    else:
        assert "SignatureDoesNotMatch" in shown, shown
    assert time.monotonic() - started < 60


def test_refused_acl_shows_not_implemented(gateway, client_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "public.txt"
    src.write_bytes(b"public?")
    key = f"{_prefix('acl')}/public.txt"
    proc = _aws(gateway, client_env, "s3", "cp", "--acl", "public-read", str(src), f"s3://photos/{key}", check=False)
    assert proc.returncode != 0 and "NotImplemented" in proc.stderr, proc.stderr
    assert _remaining_keys(gateway, key) == []

"""How the end-to-end tests run real S3 client programs: files, trees, and each client's setup.

Every client is configured the way a user configures it for a custom endpoint (endpoint,
credentials, and for some the region) and nothing else: no tuning for the gateway.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.e2e.conftest import venv_tool

#: Names users have: spaces, unicode, and the characters that trip URL encoding and signing.
AWKWARD_NAMES = [
    "plain.txt",
    "with space.txt",
    "plus+sign.txt",
    "per%cent.txt",
    "eq=amp&.txt",
    "tilde~.txt",
    "ünïcödé-名前.txt",
    "deep/er/nested file.bin",
]

JS_DIR = Path(__file__).resolve().parent / "js"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_digests(root: Path) -> dict[str, str]:
    """{relative path: SHA-256} of every file under ``root``."""
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def make_tree(root: Path, names: list[str] = AWKWARD_NAMES) -> dict[str, str]:
    """Write small random files under ``root``, dated in the past (S3 has 1 s precision)."""
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1000 + 7919 * i))
        old = time.time() - 10
        os.utime(path, (old, old))
    return tree_digests(root)


def run(args: list[str], env: dict[str, str], timeout: float = 180, check: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a client; on failure the assertion shows its exit status and output."""
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check:
        assert proc.returncode == 0, (
            f"{' '.join(args[:4])} ... failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def host_port(endpoint: str) -> str:
    return endpoint.split("://", 1)[1]


def rclone_env(base: dict[str, str], endpoint: str, access_key: str, secret_key: str) -> dict[str, str]:
    """An rclone remote ``gw:`` as `rclone config` writes one for a generic S3 provider."""
    env = dict(base)
    env.update(
        RCLONE_CONFIG_GW_TYPE="s3",
        RCLONE_CONFIG_GW_PROVIDER="Other",
        RCLONE_CONFIG_GW_ENDPOINT=endpoint,
        RCLONE_CONFIG_GW_ACCESS_KEY_ID=access_key,
        RCLONE_CONFIG_GW_SECRET_ACCESS_KEY=secret_key,
        RCLONE_CONFIG_GW_REGION="us-east-1",
        RCLONE_CONFIG_GW_FORCE_PATH_STYLE="true",
    )
    return env


def s3cmd_config(path: Path, endpoint: str, access_key: str, secret_key: str, signature_v2: bool) -> Path:
    """What `s3cmd --configure` writes for a custom endpoint over plain HTTP."""
    lines = [
        "[default]",
        f"access_key = {access_key}",
        f"secret_key = {secret_key}",
        f"host_base = {host_port(endpoint)}",
        f"host_bucket = {host_port(endpoint)}",
        "use_https = False",
    ]
    if signature_v2:
        lines.append("signature_v2 = True")
    path.write_text("\n".join(lines) + "\n")
    return path


def s3cmd(config: Path) -> list[str]:
    return [venv_tool("s3cmd"), "-c", str(config)]


def node_env(base: dict[str, str], endpoint: str, access_key: str, secret_key: str) -> dict[str, str]:
    env = dict(base)
    env.update(
        S3_ENDPOINT=endpoint,
        S3_BUCKET="photos",
        AWS_ACCESS_KEY_ID=access_key,
        AWS_SECRET_ACCESS_KEY=secret_key,
        NODE_NO_WARNINGS="1",  # the SDK's notice about future Node versions
    )
    return env


def node_driver() -> list[str]:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "@aws-sdk" / "client-s3").is_dir():
        raise RuntimeError("the AWS SDK for JavaScript is not installed: run make test (npm ci in tests/e2e/js)")
    return [node, str(JS_DIR / "driver.mjs")]


def restic_env(base: dict[str, str], endpoint: str, prefix: str, access_key: str, secret_key: str,
               cache: Path) -> dict[str, str]:
    env = dict(base)
    env.update(
        AWS_ACCESS_KEY_ID=access_key,
        AWS_SECRET_ACCESS_KEY=secret_key,
        RESTIC_REPOSITORY=f"s3:{endpoint}/photos/{prefix}",
        RESTIC_PASSWORD="correct horse battery staple",
        RESTIC_CACHE_DIR=str(cache),
    )
    return env


def restic() -> str:
    found = shutil.which("restic")
    if found is None:
        raise RuntimeError("restic is not installed: run make test (it installs it when root) "
                           "or `apt-get install restic`")
    return found


def audit_events(log_path: Path, key: str) -> list[tuple[str, int]]:
    """(event, status) of every audited S3 request on ``key``, in order, from a gateway's log."""
    events = []
    for line in log_path.read_text(errors="replace").splitlines():
        if '"audit":true' not in line.replace(" ", ""):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("key") == key:
            events.append((str(record.get("event")), int(record.get("status") or 0)))
    return events


def uploaded_parts(log_path: Path, key: str) -> int:
    """How many parts of ``key`` were uploaded with UploadPart (0: it was a single PUT)."""
    return sum(1 for event, status in audit_events(log_path, key) if event == "s3.UploadPart" and status == 200)

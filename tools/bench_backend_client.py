"""Micro-harness: N small backend requests of one kind through S3Backend against a local
SeaweedFS, with one HTTP client (``lean`` or ``twisted``).

Meant to run under ``valgrind --tool=callgrind`` (instructions, not wall time, on a shared
machine): the instructions of a run with ``--count 0`` (start-up, one warm-up request of
each kind) subtracted from a run with ``--count N``, divided by N, is the cost of one
request of that kind in this process (SigV4, client, parsing, metrics; not the server)::

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p \\
        python -m tools.bench_backend_client --client lean --op get --count 300

``--profile`` prints a cProfile of the timed loop instead (the shares of each function).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import pstats
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred

from s3orch.backend.interface import IBodyConsumer
from s3orch.backend.s3 import S3Backend
from s3orch.config import BackendConfig
from s3orch.payload import Payload
from tests.support.servers import WeedServer, create_bucket

BODY = b"x" * 1024


class _Sink:
    """Consumes a GET body."""

    def __init__(self) -> None:
        self.size = 0

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.size += len(data)


def _payload() -> Payload:
    return Payload(io.BytesIO(BODY), len(BODY), hashlib.md5(BODY).hexdigest(), hashlib.sha256(BODY).hexdigest())


async def _one(backend: S3Backend, op: str) -> None:
    if op == "put":
        await backend.put_object("bench/put", _payload())
    elif op == "head":
        await backend.head_object("bench/obj")
    elif op == "get":
        stream = await backend.get_object("bench/obj")
        sink: IBodyConsumer = _Sink()
        await stream.deliver(sink)


async def _run(backend: S3Backend, op: str, count: int, profile: bool) -> None:
    await backend.put_object("bench/obj", _payload())
    for kind in ("put", "get", "head"):  # warm-up: connections, caches, first-call imports
        await _one(backend, kind)
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    for _ in range(count):
        await _one(backend, op)
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    await backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client", choices=("lean", "twisted"), default="lean")
    parser.add_argument("--op", choices=("put", "get", "head"), default="get")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        weed = WeedServer(Path(data), "bench", "benchsecret").start()
        try:
            create_bucket(weed.endpoint, "bench", weed.access_key, weed.secret_key)
            config = BackendConfig(
                name="bench", endpoint=weed.endpoint, region="us-east-1", bucket="bench",
                access_key_id=weed.access_key, secret_access_key=weed.secret_key, force_path_style=True,
            )
            backend = S3Backend(config, reactor, 30.0, http_client=args.client)
            outcome: list[Any] = []
            done = Deferred.fromCoroutine(_run(backend, args.op, args.count, args.profile))
            done.addBoth(outcome.append).addBoth(lambda _: reactor.stop())
            reactor.run()
            if outcome and hasattr(outcome[0], "raiseException"):
                outcome[0].raiseException()
        finally:
            weed.stop()


if __name__ == "__main__":
    main()

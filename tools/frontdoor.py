"""Front-door cost per request: one gateway over one SeaweedFS, driven over loopback HTTP.

``make bench`` measures throughput against peers; this measures what the gateway process
itself spends per small request (4 KiB GET/HEAD/PUT, LIST of 100 keys), so a change to the
HTTP front door can be judged on a noisy shared machine:

* ``--callgrind``: the gateway runs under ``valgrind --tool=callgrind``; counters are dumped
  (and zeroed) with ``callgrind_control -d`` around each phase, so each phase's instruction
  count covers exactly its requests (plus the little the idle timers do meanwhile);
* ``--cprofile DIR``: the gateway profiles each phase with cProfile (SIGUSR1 starts, SIGUSR2
  dumps ``DIR/<n>.prof``), for where the time goes by function (deterministic, but it
  inflates call-heavy code);
* ``--py-spy DIR``: ``py-spy record`` samples the gateway during each phase into
  ``DIR/<phase>.txt`` (collapsed stacks, one per line with its sample count): unbiased shares;
* ``--logs``: the gateway writes its log lines (two audit lines per request) through the
  observer twistd would install, to ``gateway.log``, as in production; without it they
  stay in Twisted's small in-memory buffer, unrendered.

The client is tools.bench's asyncio keep-alive client in this (separate) process.  Usage::

    PYTHONPATH=$PWD python -m tools.frontdoor --requests 300 --callgrind
    PYTHONPATH=$PWD python -m tools.frontdoor --requests 2000 --cprofile /tmp/prof
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.configs import BackendSpec, BucketSpec, GatewayConfig
from tests.support.servers import WeedServer, create_bucket, free_port
from tools.bench.client import Connection
from tools.bench.workloads import REGION, Target

BUCKET = BucketSpec("bench", "benchkey", "benchsecret")
BODY = os.urandom(4096)
LIST_KEYS = 100
PHASES = ("get", "head", "put", "list")


def serve(config_path: str, profile_dir: str | None, logs: bool = False) -> None:
    """The gateway (``api`` mode: the S3 front door without most background workers)."""
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from s3orch import tap
    from s3orch.modes import MODE_API
    from s3orch.startup import load_checked_config

    config = load_checked_config(config_path)
    service = tap.build(config, reactor, mode=MODE_API)
    if logs and service.log_observer is not None:  # as twistd does with the application's observer
        globalLogBeginner.beginLoggingTo([service.log_observer], redirectStandardIO=False)
    if profile_dir is not None:
        state: dict[str, Any] = {"profile": None, "count": 0}

        def start(*_: object) -> None:
            state["profile"] = cProfile.Profile()
            state["profile"].enable()

        def dump(*_: object) -> None:
            profile = state["profile"]
            if profile is not None:
                profile.disable()
                profile.dump_stats(os.path.join(profile_dir, f"{state['count']}.prof"))
                state["count"] += 1
                state["profile"] = None

        signal.signal(signal.SIGUSR1, start)
        signal.signal(signal.SIGUSR2, dump)
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


async def _run(target: Target, op: str, count: int, concurrency: int, prefix: str = "put/") -> None:
    async def worker(index: int) -> None:
        connection = Connection(target)
        try:
            for n in range(index, count, concurrency):
                key = f"obj/{n % LIST_KEYS:04d}"
                if op == "get":
                    response = await connection.request("GET", key)
                elif op == "head":
                    response = await connection.request("HEAD", key)
                elif op == "put":
                    response = await connection.request("PUT", f"{prefix}{n:04d}", body=BODY)
                else:
                    response = await connection.request("GET", None, query="list-type=2&prefix=obj%2F")
                if response.status != 200:
                    raise RuntimeError(f"{op}: HTTP {response.status} {response.body[:300]!r}")
        finally:
            await connection.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))


def _callgrind_total(path: Path) -> int:
    text = path.read_text(errors="replace")
    found = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.MULTILINE)
    if not found:
        raise RuntimeError(f"no totals in {path}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--cprofile", metavar="DIR")
    parser.add_argument("--py-spy", metavar="DIR", dest="py_spy")
    parser.add_argument("--only", nargs="*", default=list(PHASES))
    parser.add_argument("--logs", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="frontdoor-"))
    weed = WeedServer(work / "weed", "fdkey", "fdsecret")
    weed.start()
    gateway = None
    try:
        create_bucket(weed.endpoint, "fd-backend", weed.access_key, weed.secret_key, REGION)
        port = free_port()
        config = GatewayConfig(
            backends=[BackendSpec("weed1", weed.endpoint, "fd-backend", weed.access_key, weed.secret_key)],
            buckets=[BUCKET],
            # Background passes run per second of wall time, and a phase under valgrind lasts
            # minutes: rare passes keep each phase's count to its requests.
            extra={
                "usage_flush": {"interval": "1h", "fast_interval": "30m"},
                "circuit_breaker": {"journal_refresh": "1h"},
            },
        ).render()
        config_path = work / "config.yaml"
        config_path.write_text(config.replace("{port}", str(port)).replace("{workdir}", str(work)))
        command = [sys.executable, "-m", "tools.frontdoor", "--serve", str(config_path)]
        if args.cprofile:
            os.makedirs(args.cprofile, exist_ok=True)
            command += ["--profile-dir", args.cprofile]
        if args.logs:
            command.append("--logs")
        out_dir = work / "callgrind"
        if args.callgrind:
            out_dir.mkdir()
            command = [
                "valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/cg.out",
                "--dump-instr=no", *command,
            ]
        log = open(work / "gateway.log", "wb")  # noqa: SIM115 - owned by the child
        env = dict(os.environ, PYTHONPATH=os.getcwd())
        gateway = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(work))
        deadline = time.monotonic() + 900
        while not _ready(port):
            if gateway.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((work / "gateway.log").read_text()[-3000:])
            time.sleep(0.5)
        target = Target("s3orch", "127.0.0.1", port, BUCKET.name, BUCKET.access_key, BUCKET.secret_key)
        asyncio.run(_run(target, "put", LIST_KEYS, 1, "obj/"))  # the objects GET/HEAD/LIST read (and warm-up)
        for op in args.only:
            asyncio.run(_run(target, op, min(args.requests, 20), args.concurrency))  # warm this path
            if args.callgrind:
                subprocess.run(["callgrind_control", "-d", str(gateway.pid)], check=True, capture_output=True)
            if args.cprofile:
                gateway.send_signal(signal.SIGUSR1)
                time.sleep(0.2)
            sampler = None
            if args.py_spy:
                os.makedirs(args.py_spy, exist_ok=True)
                sampler = subprocess.Popen(
                    [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(gateway.pid),
                     "--rate", "1000", "--format", "raw", "--nonblocking", "--output",
                     os.path.join(args.py_spy, f"{op}.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                time.sleep(1.0)
            started = time.monotonic()
            asyncio.run(_run(target, op, args.requests, args.concurrency))
            elapsed = time.monotonic() - started
            if sampler is not None:
                sampler.send_signal(signal.SIGINT)
                sampler.wait(60)
            if args.callgrind:
                before = set(out_dir.iterdir())
                subprocess.run(["callgrind_control", "-d", str(gateway.pid)], check=True, capture_output=True)
                dumps = sorted(out_dir.iterdir(), key=lambda p: p.stat().st_mtime)
                newest = [p for p in dumps if p not in before] or dumps[-1:]
                total = _callgrind_total(newest[-1])
                print(f"{op:5s} c{args.concurrency}: {total / args.requests:,.0f} instructions/request "
                      f"({args.requests} requests, {newest[-1].name})", flush=True)
            else:
                print(f"{op:5s} c{args.concurrency}: {args.requests / elapsed:,.0f} req/s (wall clock, noisy)",
                      flush=True)
            if args.cprofile:
                gateway.send_signal(signal.SIGUSR2)
                time.sleep(0.5)
    finally:
        if gateway is not None:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(60)
            except subprocess.TimeoutExpired:
                gateway.kill()
        weed.stop()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve(
            sys.argv[2],
            sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--profile-dir" else None,
            logs="--logs" in sys.argv[3:],
        )
    else:
        main()

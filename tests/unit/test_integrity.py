"""Integrity through a whole in-process gateway (three in-memory backends, a clock): read
verification aborts the client on bad bytes, the scrubber finds a corrupt copy and drops it with
its row so the replicator rebuilds it, the last copy is kept, the backfill stores missing
SHA-256s, and the admin routes, CLI, metrics and events say so (BEHAVIOURS §1.21)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from s3orch.cli import admin as admin_cli
from s3orch.cli.main import cli
from s3orch.core.integrity import DigestMismatch, StreamVerifier, read_segments
from s3orch.testing.harness import GatewayHarness
from s3orch.testing.httpclient import ResponseMissing
from s3orch.workers.scrubber import ScrubberWorker
from tests.unit.test_over_replication import HarnessClient, admin
from tests.unit.test_replicator import (
    CONFIG,
    INTERVAL,
    TOKEN,
    holders,
    metric,
    multipart,
    record,
    stored,
    used,
)
from tests.unit.test_replicator import worker as replicator_worker

INTEGRITY = "integrity:\n  enabled: true\n  verify_on_read: true\n  scrubber_interval: 1h\n  scrubber_batch_size: 50\n"
BODY = bytes(range(256)) * 1200  # 300 KiB: several relay chunks


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path, CONFIG + INTEGRITY).start()
    try:
        yield harness
    finally:
        harness.stop()


def scrubber(h: GatewayHarness) -> ScrubberWorker:
    found: Any = h.service.getServiceNamed("scrubber")
    assert isinstance(found, ScrubberWorker)
    return found


def corrupt(h: GatewayHarness, backend: str, key: str, at: int = 1000) -> None:
    """Flip one byte of ``key``'s copy on ``backend``, behind the gateway's back."""
    (location,) = [loc for loc in record(h, key).locations if loc.backend == backend]
    server = h.backends[backend]
    bucket = {"backend-1": "store-1", "backend-2": "store-2", "backend-3": "store-3"}[backend]
    stored_object = server.objects(bucket)[location.storage_key]
    data = bytearray(stored_object.data)
    data[at] ^= 0xFF
    stored_object.data = bytes(data)


def replicated(h: GatewayHarness, key: str, body: bytes = BODY) -> list[str]:
    assert h.put("photos", key, body).status == 200
    h.run(replicator_worker(h).replicator.run_pass())
    (copies,) = holders(h, key)
    assert len(copies) == 2
    return copies


# -- the stream verifier ------------------------------------------------------------------------


def test_the_verifier_checks_each_extent_and_the_end() -> None:
    a, b = b"a" * 10, b"b" * 5
    segments = [(10, ("md5", hashlib.md5(a).hexdigest())), (0, None), (5, ("sha256", hashlib.sha256(b).hexdigest()))]
    good = StreamVerifier(segments)
    for piece in (a[:3], a[3:] + b[:2], b[2:]):
        good.update(piece)
    good.finish()
    bad = StreamVerifier(segments)
    with pytest.raises(DigestMismatch):
        bad.update(b"x" + a[1:] + b)  # the first extent is judged as soon as it ends
    short = StreamVerifier(segments)
    short.update(a + b[:4])
    with pytest.raises(DigestMismatch):
        short.finish()
    extra = StreamVerifier(segments)
    with pytest.raises(DigestMismatch):
        extra.update(a + b + b"!")
    unknown = StreamVerifier([(3, None)])
    unknown.update(b"zzz")
    unknown.finish()


def test_segments_name_sha256_for_a_put_and_each_parts_md5_for_multipart(gateway: GatewayHarness) -> None:
    h = gateway
    assert h.put("photos", "single", b"hello").status == 200
    assert read_segments(record(h, "single")) == [(5, ("sha256", hashlib.sha256(b"hello").hexdigest()))]
    parts = [b"p" * 5 * 1024 * 1024, b"q" * 1000]
    multipart(h, "multi", parts)
    assert read_segments(record(h, "multi")) == [
        (len(p), ("md5", hashlib.md5(p).hexdigest())) for p in parts
    ]


# -- verify_on_read -----------------------------------------------------------------------------


def test_a_corrupt_copy_read_never_completes_a_200_and_the_scrub_that_follows_drops_it(
    gateway: GatewayHarness,
) -> None:
    h = gateway
    first, second = replicated(h, "k")
    corrupt(h, first, "k")
    corrupt_reads = metric("s3o_integrity_errors_total", operation="read")
    # reads prefer the first copy: its bytes are bad, so the read fails before the end: a 503
    # while nothing was sent (this small body is held back until verified), else an abort
    aborted = 0
    for _ in range(2):
        try:
            got = h.get("photos", "k")
        except ResponseMissing:
            aborted += 1
        else:
            if got.status == 503:
                assert b"<Code>ServiceUnavailable</Code>" in got.body and BODY not in got.body
                aborted += 1
            else:
                assert got.status == 200 and got.body == BODY  # never a complete 200 of other bytes
    assert aborted >= 1
    assert metric("s3o_integrity_errors_total", operation="read") - corrupt_reads == aborted
    h.settle()
    # the scrub after the bad read dropped the corrupt copy with its row (not the good one)
    assert holders(h, "k") == [[second]]
    assert h.get("photos", "k").body == BODY
    h.run(replicator_worker(h).replicator.run_pass())  # the replicator rebuilds from the good copy
    (rebuilt,) = holders(h, "k")
    assert len(rebuilt) == 2 and second in rebuilt
    h.settle()
    for backend in rebuilt:
        (loc,) = [loc for loc in record(h, "k").locations if loc.backend == backend]
        assert stored(h, backend)[loc.storage_key] == BODY
    assert sum(u[1] + u[2] for u in used(h).values()) == 0  # the corrupt bytes deleted, no orphan left
    assert sum(u[0] for u in used(h).values()) == 2 * len(BODY)


def test_ranges_and_verification_off_are_not_checked(tmp_path: Path) -> None:
    with GatewayHarness(tmp_path, CONFIG + INTEGRITY.replace("verify_on_read: true", "verify_on_read: false")) as h:
        assert h.put("photos", "k", BODY).status == 200
        (location,) = record(h, "k").locations
        corrupt(h, location.backend, "k")
        got = h.get("photos", "k")  # the documented cost of verify_on_read: false
        assert got.status == 200 and got.body != BODY
    with GatewayHarness(tmp_path / "on", CONFIG + INTEGRITY) as h:
        assert h.put("photos", "k", BODY).status == 200
        (location,) = record(h, "k").locations
        corrupt(h, location.backend, "k", at=5000)
        ranged = h.get("photos", "k", headers={"range": "bytes=0-99"})
        assert ranged.status == 206 and ranged.body == BODY[:100]  # a range cannot be hashed whole


# -- the scrubber -------------------------------------------------------------------------------


def test_a_scheduled_scrub_drops_the_corrupt_copy_and_the_replicator_rebuilds_it(gateway: GatewayHarness) -> None:
    h = gateway
    keys = [f"s{i}" for i in range(4)]
    for key in keys:
        replicated(h, key)
    victim = holders(h, "s2")[0][1]
    corrupt(h, victim, "s2")
    checks = metric("s3o_integrity_checks_total", operation="scrub")
    errors = metric("s3o_integrity_errors_total", operation="scrub")
    h.advance(3600)  # the scrubber's first pass (after its jitter) and the replicator's
    h.advance(3600)
    assert metric("s3o_integrity_checks_total", operation="scrub") - checks >= 8
    assert metric("s3o_integrity_errors_total", operation="scrub") - errors == 1
    h.run(replicator_worker(h).replicator.run_pass())
    for key in keys:
        copies = holders(h, key)[0]
        assert len(copies) == 2
        assert h.get("photos", key).body == BODY
    (rebuilt,) = [loc for loc in record(h, "s2").locations if loc.backend == victim] or [None]
    if rebuilt is not None:  # rebuilt on the same backend: a new, good copy
        assert stored(h, victim)[rebuilt.storage_key] == BODY


def test_the_last_copy_is_kept_and_reported(tmp_path: Path) -> None:
    config = CONFIG.replace("factor: 2", "factor: 1") + INTEGRITY
    with GatewayHarness(tmp_path, config) as h:
        assert h.put("photos", "only", BODY).status == 200
        (location,) = record(h, "only").locations
        corrupt(h, location.backend, "only")
        verdicts = admin(h, "POST", "object-scrub?key=photos/only")
        assert verdicts["mismatches"] == 1
        assert verdicts["copies"] == [{
            "part_number": 0, "backend": location.backend, "storage_key": location.storage_key,
            "verdict": "mismatch", "dropped": False,
        }]
        assert record(h, "only").locations == (location,)  # kept: its reads keep failing loudly


def test_object_scrub_gives_a_verdict_per_copy_and_the_routes_refuse_when_disabled(
    gateway: GatewayHarness, tmp_path: Path
) -> None:
    h = gateway
    first, second = replicated(h, "v")
    answer = admin(h, "POST", "object-scrub?key=photos/v")
    assert answer["key"] == "photos/v" and answer["checked"] == 2 and answer["mismatches"] == 0
    assert sorted((c["backend"], c["verdict"]) for c in answer["copies"]) == [(first, "verified"), (second, "verified")]
    missing = h.send_raw(
        b"POST /admin/api/object-scrub?key=photos/nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        b"X-Admin-Token: replicate-token\r\n\r\n"
    )
    assert missing.status == 404 and "error" in json.loads(missing.body)
    with GatewayHarness(tmp_path / "off", CONFIG) as off:
        for path in ("object-scrub?key=photos/v", "scrub", "backfill-checksums"):
            refused = off.send_raw(
                f"POST /admin/api/{path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                "X-Admin-Token: replicate-token\r\n\r\n".encode()
            )
            assert refused.status == 409, (path, refused.body)
            assert "integrity.enabled" in json.loads(refused.body)["error"]


def test_an_admin_scrub_streams_progress_and_marks_copies_verified(gateway: GatewayHarness) -> None:
    h = gateway
    for key in ("a", "b"):
        replicated(h, key, b"x" * 1000)
    never_before, _ = h.run(h.store.integrity_stats())
    assert never_before == 4
    events = admin(h, "POST", "scrub?batch_size=3", ndjson=True)
    assert events[0]["type"] == "start" and events[0]["total"] == 3
    (result,) = [e for e in events if e["type"] == "result"]
    assert result["status"] == "complete" and result["checked"] == 3 and result["mismatches"] == 0
    never_after, oldest = h.run(h.store.integrity_stats())
    assert never_after == 1 and oldest == h.clock.seconds()
    again = admin(h, "POST", "scrub?batch_size=1")
    assert again["checked"] == 1
    assert h.run(h.store.integrity_stats())[0] == 0  # never-verified copies go first


def test_backfill_stores_the_sha256_of_objects_written_without_one(gateway: GatewayHarness) -> None:
    h = gateway
    for key in ("old1", "old2", "fresh"):
        assert h.put("photos", key, key.encode() * 100).status == 200
    for key in ("old1", "old2"):  # as written by a build that stored no SHA-256
        h.run(_clear_hash(h, key))
    corrupt(h, record(h, "old2").locations[0].backend, "old2", at=3)  # its only copy fails its MD5
    result = admin(h, "POST", "backfill-checksums")
    assert (result["hashed"], result["failed"]) == (1, 1)
    assert record(h, "old1").content_hash == hashlib.sha256(b"old1" * 100).hexdigest()
    assert record(h, "old2").content_hash is None  # never the hash of bad bytes
    assert admin(h, "POST", "backfill-checksums")["hashed"] == 0


async def _clear_hash(h: GatewayHarness, key: str) -> None:
    store: Any = h.store

    def clear(tx: Any, notes: Any, key: str) -> None:
        tx.execute("UPDATE objects SET content_hash = NULL WHERE bucket = 'photos' AND object_key = ?", (key,))

    await store._write(clear, key)


def test_the_cli_commands_print_the_answers(gateway: GatewayHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    h = gateway
    replicated(h, "c", b"c" * 2000)
    monkeypatch.setattr(admin_cli, "client_from", lambda options: HarnessClient(h))
    env = {"S3ORCH_ADMIN_TOKEN": TOKEN}
    runner = CliRunner()
    out = runner.invoke(cli, ["object-scrub", "photos/c", "--addr", "127.0.0.1:1"], env=env)
    assert out.exit_code == 0, out.output
    assert "checked 2, mismatches 0" in out.stdout and "verified" in out.stdout
    h.advance(1)  # copies verified at this very second are not due again
    out = runner.invoke(cli, ["scrub", "--batch-size", "5", "--addr", "127.0.0.1:1"], env=env)
    assert out.exit_code == 0 and "checked: 2" in out.stdout, out.output
    out = runner.invoke(cli, ["backfill-checksums", "--max", "10", "--addr", "127.0.0.1:1"], env=env)
    assert out.exit_code == 0 and "hashed: 0" in out.stdout, out.output


def test_a_reload_switches_verification_and_the_schedule(gateway: GatewayHarness) -> None:
    from dataclasses import replace

    worker = scrubber(gateway)
    config = worker.scrubber.config
    worker.reconfigure(replace(config, enabled=False))
    assert not worker.scheduled and worker.scrubber.config.enabled is False
    worker.reconfigure(replace(config, scrubber_interval=120.0))
    assert worker.scheduled and worker.interval == 120.0
    assert INTERVAL == 60.0


def test_the_replicator_never_copies_a_source_that_fails_its_digest(gateway: GatewayHarness) -> None:
    """``verify_on_replicate`` (always on here): a source copy is checked against its MD5
    before its bytes are written elsewhere."""
    h = gateway
    assert h.put("photos", "lonely", BODY).status == 200
    (location,) = record(h, "lonely").locations
    corrupt(h, location.backend, "lonely")
    result = h.run(replicator_worker(h).replicator.run_pass())
    assert result.copies_created == 0 and result.failed == 1
    assert holders(h, "lonely") == [[location.backend]]
    assert all(BODY[:1000] + bytes([BODY[1000] ^ 0xFF]) not in data
               for backend in h.backends if backend != location.backend for data in stored(h, backend).values())

"""Degraded mode wired through ``tap.build`` (BEHAVIOURS §1.26), in the in-process harness: the
database breaker, the location cache and journal, and what a database outage leaves working."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from s3orch.backend.breaker import CLOSED, OPEN
from s3orch.core.broadcast import BroadcastingObjectService
from s3orch.core.degraded_reads import DegradedReads
from s3orch.observe.metrics import REGISTRY
from s3orch.store.interface import StoreUnavailable
from s3orch.store.sqlstore import SQLStore
from s3orch.testing import GatewayHarness
from s3orch.testing.harness import DEFAULT_CONFIG
from s3orch.workers.journal_refresh import JournalRefresher

CONFIG = DEFAULT_CONFIG + "circuit_breaker:\n  open_timeout: 5s\n  cache_ttl: 1s\n  journal_refresh: 1s\n"


class Outage:
    """Switches the harness's SQLite store down: every transaction fails as unavailable."""

    def __init__(self, store: Any) -> None:
        assert isinstance(store, SQLStore)
        self.store = store
        self.calls = 0

    def __enter__(self) -> Outage:
        async def down(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            raise StoreUnavailable("SQLite s3orch.db: database is locked")

        self.store._call = down  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.store._call


def _reads(source: str) -> float:
    return REGISTRY.get_sample_value("s3o_degraded_reads_total", {"operation": source}) or 0.0


def _parts(gateway: GatewayHarness) -> tuple[DegradedReads, JournalRefresher]:
    refresher = gateway.service.getServiceNamed("journal-refresh")
    assert isinstance(refresher, JournalRefresher)
    reads: Any = refresher.store
    assert isinstance(reads, DegradedReads)
    return reads, refresher


@pytest.fixture
def gateway(tmp_path: Path) -> Any:
    with GatewayHarness(tmp_path, CONFIG) as harness:
        yield harness


def test_an_outage_serves_every_journaled_object_and_refuses_writes_and_lists(gateway: GatewayHarness) -> None:
    bodies = {f"k{i}": f"body {i}".encode() * (i + 1) for i in range(5)}
    for key, body in bodies.items():
        assert gateway.put("photos", key, body).status == 200
    assert gateway.put("photos", "gone", b"x").status == 200
    assert gateway.delete("photos", "gone").status == 204
    gateway.advance(2)  # batches written; the cache (1 s) has expired: only the journal knows
    journal_before = _reads("journal")
    with Outage(gateway.store) as outage:
        for key, body in bodies.items():
            got = gateway.get("photos", key)
            assert (got.status, got.body) == (200, body), got.text
        head = gateway.head("photos", "k3")
        assert head.status == 200 and head.header("content-length") == str(len(bodies["k3"]))
        assert gateway.get("photos", "gone").status == 404  # known deleted: never its old bytes
        unknown = gateway.get("photos", "never-written")
        assert unknown.status == 503 and unknown.header("retry-after")  # not known: no 404
        reads, _ = _parts(gateway)
        assert reads.journal.file.path.endswith("s3orch.db.locations")
        assert outage.calls == 3  # failure_threshold: then the breaker answers
        status = gateway.send_raw(b"GET /health HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        assert status.status == 200 and b'"degraded"' in status.body
        put = gateway.put("photos", "new", b"data")
        assert put.status == 503 and put.header("retry-after") and b"writes are temporarily rejected" in put.body
        assert gateway.delete("photos", "k1").status == 503
        listing = gateway.list("photos")
        assert listing.status == 503 and listing.header("retry-after")
        assert outage.calls == 3
    assert _reads("journal") >= journal_before + 6
    gateway.advance(5)  # open_timeout: the next call is the probe, and the database answers
    assert gateway.put("photos", "new", b"data").status == 200
    assert _breaker(gateway).state == CLOSED
    assert b'"ok"' in gateway.send_raw(b"GET /health HTTP/1.1\r\nHost: gateway.test\r\n\r\n").body


def _breaker(gateway: GatewayHarness) -> Any:
    reads, _ = _parts(gateway)
    return reads._store._breaker.breaker  # type: ignore[attr-defined]


def test_a_hot_key_is_answered_from_the_cache_within_cache_ttl(gateway: GatewayHarness) -> None:
    assert gateway.put("photos", "hot", b"hot bytes").status == 200
    assert gateway.get("photos", "hot").status == 200  # read: cached for cache_ttl (1 s)
    hits = REGISTRY.get_sample_value("s3o_degraded_cache_hits_total") or 0.0
    with Outage(gateway.store):
        got = gateway.get("photos", "hot")
        assert (got.status, got.body) == (200, b"hot bytes")
        assert (REGISTRY.get_sample_value("s3o_degraded_cache_hits_total") or 0.0) == hits + 1
        gateway.advance(1)  # past cache_ttl: the journal answers now
        got = gateway.get("photos", "hot")
        assert (got.status, got.body) == (200, b"hot bytes")
    assert (REGISTRY.get_sample_value("s3o_degraded_cache_hits_total") or 0.0) == hits + 1


def test_the_refresh_learns_other_instances_writes_and_deletes(gateway: GatewayHarness) -> None:
    """Writes and deletes that bypass this instance's journal (as another instance's would)
    reach it through the refresh (changes since the watermark) and the sweep."""
    reads, refresher = _parts(gateway)
    assert gateway.put("photos", "theirs", b"their bytes").status == 200
    assert gateway.put("photos", "deleted-there", b"old bytes").status == 200
    gateway.advance(1)
    # Forget everything this instance noted: only the database can tell it now.
    reads.journal.file._db().execute("DELETE FROM entries")
    refresher.watermark = 0.0
    gateway.advance(1)
    theirs = _lookup(gateway, reads, "theirs")
    assert theirs is not None and theirs.record is not None and theirs.record.size == len(b"their bytes")
    # Deleted by "another instance": straight in the database, not through this one.
    gateway.run(gateway.store.delete_object("photos", "deleted-there", gateway.clock.seconds()))
    gateway.advance(1)  # the sweep's next page (one tick: this store is one page) sees it gone
    assert refresher.cycles >= 1
    with Outage(gateway.store):
        assert gateway.get("photos", "theirs").body == b"their bytes"
        assert gateway.get("photos", "deleted-there").status == 404


def _lookup(gateway: GatewayHarness, reads: DegradedReads, key: str) -> Any:
    return gateway.run(reads.journal.lookup("photos", key))


def test_the_breaker_opens_only_on_outages_and_stays_closed_while_reads_work(gateway: GatewayHarness) -> None:
    assert gateway.get("photos", "missing").status == 404
    assert _breaker(gateway).state == CLOSED
    with Outage(gateway.store):
        for _ in range(3):
            gateway.get("photos", "missing")
        assert _breaker(gateway).state == OPEN


def test_parallel_broadcast_races_copies_only_while_degraded(tmp_path: Path) -> None:
    text = CONFIG + "  parallel_broadcast: true\n  degraded_broadcast_parallelism: 2\n"
    with GatewayHarness(tmp_path, text) as gateway:
        targets: Any = gateway.service.reloader.targets
        objects = targets.multipart.objects
        assert isinstance(objects, BroadcastingObjectService) and objects.parallelism == 2
        assert not objects.racing()
        with Outage(gateway.store):
            for _ in range(3):
                gateway.get("photos", "missing")
            assert objects.racing()
        gateway.advance(5)
        assert gateway.put("photos", "k", b"x").status == 200  # the probe closes the breaker
        assert not objects.racing()


def test_by_default_copies_are_never_raced(gateway: GatewayHarness) -> None:
    targets: Any = gateway.service.reloader.targets
    with Outage(gateway.store):
        for _ in range(3):
            gateway.get("photos", "missing")
        assert _breaker(gateway).state == OPEN and not targets.multipart.objects.racing()


def test_a_completed_multipart_upload_is_journaled_at_once_and_read_during_an_outage(
    gateway: GatewayHarness,
) -> None:
    created = gateway.request("POST", "photos", "mp", query=[("uploads", "")])
    assert created.status == 200, created.text
    upload_id = created.text.split("<UploadId>")[1].split("</UploadId>")[0]
    part = gateway.request("PUT", "photos", "mp", query=[("partNumber", "1"), ("uploadId", upload_id)], body=b"parts!")
    assert part.status == 200, part.text
    etag = part.header("etag")
    xml = f"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part></CompleteMultipartUpload>"
    done = gateway.request("POST", "photos", "mp", query=[("uploadId", upload_id)], body=xml.encode())
    assert done.status == 200, done.text
    reads, _ = _parts(gateway)
    entry = _lookup(gateway, reads, "mp")  # no time has passed: not the refresh's doing
    assert entry is not None and entry.record is not None and entry.record.parts_count == 1
    with Outage(gateway.store):
        got = gateway.get("photos", "mp")
        assert (got.status, got.body) == (200, b"parts!")


def test_an_unreadable_journal_leaves_the_503_never_a_500(gateway: GatewayHarness) -> None:
    reads, _ = _parts(gateway)

    async def broken(bucket: str, key: str) -> Any:
        raise OSError("journal file unreadable")

    reads.journal.lookup = broken  # type: ignore[method-assign]
    with Outage(gateway.store):
        got = gateway.get("photos", "k")
        assert got.status == 503 and got.header("retry-after")
    assert "journal file unreadable" in gateway.problems.describe()  # logged, with its cause


def test_encrypted_objects_answer_503_while_the_database_is_down(tmp_path: Path) -> None:
    """BEHAVIOURS §1.19: an encrypted object cannot be read in degraded mode (its key is in the
    row, never in the journal's hands alone): 503 from the cache and from the journal."""
    import base64

    key = base64.b64encode(bytes(32)).decode()
    config = CONFIG + f"encryption:\n  enabled: true\n  master_key: {key}\n"
    with GatewayHarness(tmp_path, config) as gateway:
        assert gateway.put("photos", "sealed", b"secret bytes").status == 200
        assert gateway.get("photos", "sealed").body == b"secret bytes"  # cached now
        with Outage(gateway.store):
            first = gateway.get("photos", "sealed")
            assert first.status == 503 and b"secret" not in first.body
            gateway.advance(1)  # past cache_ttl: the journal
            second = gateway.get("photos", "sealed")
            assert second.status == 503 and b"secret" not in second.body


def test_compressed_objects_are_read_from_the_journal_while_the_database_is_down(tmp_path: Path) -> None:
    """BEHAVIOURS §1.20: the journaled record carries the compression chunk size, so a degraded
    read decompresses (whole and ranged) and never serves the stored frames."""
    config = CONFIG + "compression:\n  enabled: true\n  chunk_size: 16KiB\n  min_size: 0\n"
    body = b"".join(b"%06d a line of text that compresses well\n" % i for i in range(2000))
    with GatewayHarness(tmp_path, config) as gateway:
        assert gateway.put("photos", "packed", body).status == 200
        stored = [len(s.data) for srv in gateway.backends.values() for b in srv.buckets for s in srv.objects(b).values()]
        assert stored and max(stored) < len(body) / 3
        gateway.advance(2)  # the journal has it; the cache has expired
        journal_before = _reads("journal")
        with Outage(gateway.store):
            got = gateway.get("photos", "packed")
            assert (got.status, got.body) == (200, body)
            ranged = gateway.get("photos", "packed", {"range": "bytes=16380-40000"})
            assert (ranged.status, ranged.body) == (206, body[16380:40001])
        assert _reads("journal") >= journal_before + 2

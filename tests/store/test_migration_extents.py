"""Data written by schema version 3 (the previous build) after migration 0004 (every engine).

The database is brought to version 3, filled with what that build wrote (objects
with one location each, a completed native multipart object, native uploads left
open, creating and completing, pending intents with conditions), then opened by
this build's store, which applies 0004.  What the store answers afterwards, and
what the stale-upload cleanup does with the old native uploads, is checked
through the public APIs.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import psycopg2
import pytest_twisted
from twisted.internet.task import Clock

from s3orch.backend.memory import MemoryBackend
from s3orch.core.multipart import MultipartService
from s3orch.core.objects import ObjectService
from s3orch.store.interface import (
    INTENT_DROPPED,
    INTENT_PROMOTE,
    INTENT_PROMOTED,
    Extent,
    Location,
    MetadataStore,
)
from s3orch.store.migrate import migrate, sql_dir
from tests.store.conftest import StoreFactory
from tests.store.test_contract import counters, quota

NOW = 1_700_000_000.0


def _at_version_3(factory: StoreFactory, tmp_path: Path) -> Any:
    """A raw connection to the factory's database, migrated to version 3 only."""
    older = tmp_path / f"sql-{factory.kind}"
    older.mkdir()
    for path in sorted(sql_dir(factory.kind).iterdir()):
        if path.name[:4] in ("0001", "0002", "0003"):
            shutil.copy(path, older / path.name)
    if factory.kind == "sqlite":
        conn: Any = sqlite3.connect(factory.tmp_path / "metadata.db", isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")
    else:
        assert factory.postgres is not None and factory.schema is not None
        conn = psycopg2.connect(factory.postgres.schema_dsn(factory.schema))
    assert migrate(conn, factory.engine(), older) == [1, 2, 3]
    return conn


def _fill_version_3(conn: Any, engine: str) -> None:
    """What the previous build wrote: its own statements, values as it bound them."""
    mark = "?" if engine == "sqlite" else "%s"
    true, false = (1, 0) if engine == "sqlite" else (True, False)
    cur = conn.cursor()

    def run(sql: str, *params: Any) -> None:
        cur.execute(sql.replace("?", mark), params)

    for name, used, reserved, count in (("b1", 150, 70, 2), ("b2", 0, 0, 0)):
        run("INSERT INTO backend_quotas (backend_name, bytes_limit, bytes_used, reserved_bytes,"
            " object_count, updated_at) VALUES (?, 10000, ?, ?, ?, ?)", name, used, reserved, count, NOW)
    objects = (
        ("plain", "w1", 100, "e" * 32, None, None),
        ("native-mp", "u0", 50, "f" * 32 + "-2", 2, json.dumps([30, 20])),
    )
    for key, write_id, size, etag, parts_count, part_sizes in objects:
        run("INSERT INTO objects (bucket, object_key, write_id, size_bytes, etag, parts_count, part_sizes,"
            " last_modified, created_at) VALUES ('bkt', ?, ?, ?, ?, ?, ?, ?, ?)",
            key, write_id, size, etag, parts_count, part_sizes, NOW, NOW)
        run("INSERT INTO object_locations (bucket, object_key, backend_name, storage_key, write_id,"
            " size_bytes, created_at) VALUES ('bkt', ?, 'b1', ?, ?, ?, ?)",
            key, f"bkt/{key}@{write_id}", write_id, size, NOW)
    uploads = (
        ("u-open", "open-key", "bid-open", "open", None),
        ("u-creating", "creating-key", None, "creating", None),
        ("u-completing", "completing-key", "bid-completing", "completing", json.dumps([1])),
    )
    for upload_id, key, backend_id, state, complete_parts in uploads:
        run("INSERT INTO multipart_uploads (upload_id, bucket, object_key, backend_name, backend_upload_id,"
            " storage_key, checksum_algorithm, state, complete_parts, created_at, updated_at)"
            " VALUES (?, 'bkt', ?, 'b1', ?, ?, ?, ?, ?, ?, ?)",
            upload_id, key, backend_id, f"bkt/{key}@{upload_id}", "SHA256" if state == "open" else None,
            state, complete_parts, NOW, NOW)
    run("INSERT INTO multipart_parts (upload_id, part_number, etag, size_bytes, backend_etag, created_at)"
        " VALUES ('u-open', 1, ?, 30, 'be1', ?)", "a" * 32, NOW)
    run("INSERT INTO multipart_parts (upload_id, part_number, etag, size_bytes, backend_etag, created_at)"
        " VALUES ('u-completing', 1, ?, 25, 'be2', ?)", "b" * 32, NOW)
    run("INSERT INTO multipart_part_attempts (attempt_id, upload_id, part_number, size_bytes, created_at)"
        " VALUES ('att-open', 'u-open', 2, 15, ?)", NOW)
    # two intents of PUTs whose commit failed, with the conditions that build recorded
    for write_id, size, if_none_match, if_match in (("i1", 3, true, None), ("i2", 4, false, '"' + "e" * 32 + '"')):
        run("INSERT INTO pending_objects (write_id, bucket, object_key, backend_name, storage_key, size_bytes,"
            " created_at, etag, content_type, headers, user_metadata, if_none_match, if_match)"
            " VALUES (?, 'bkt', 'plain', 'b2', ?, ?, ?, ?, 'text/plain', '{}', '{}', ?, ?)",
            write_id, f"bkt/plain@{write_id}", size, NOW, "c" * 32, if_none_match, if_match)
    run("UPDATE backend_quotas SET reserved_bytes = 7 WHERE backend_name = 'b2'")
    conn.commit()
    cur.close()


@pytest_twisted.ensureDeferred
async def test_data_of_the_previous_version_reads_and_cleans_up_after_migration(
    store_factory: StoreFactory, tmp_path: Path
) -> None:
    conn = _at_version_3(store_factory, tmp_path)
    try:
        _fill_version_3(conn, store_factory.kind)
    finally:
        conn.close()
    store: MetadataStore = store_factory.make()
    await store.start()  # applies 0004
    try:
        # Every object is one extent, part 0, with the copy it had.
        plain = await store.get_object("bkt", "plain")
        assert plain is not None and plain.parts == ()
        assert plain.extents == (Extent(0, 0, 100, (Location("b1", "bkt/plain@w1", 100),)),)
        native = await store.get_object("bkt", "native-mp")
        assert native is not None and native.parts == () and native.part_sizes == (30, 20)
        assert native.extents[0].locations == (Location("b1", "bkt/native-mp@u0", 50),)

        # Native uploads in progress can only be aborted now: marked for the cleanup.
        for upload_id, key in (("u-open", "open-key"), ("u-creating", "creating-key"),
                               ("u-completing", "completing-key")):
            upload = await store.get_multipart_upload("bkt", key, upload_id)
            assert upload is not None and upload.native and upload.state == "aborting"
            assert upload.updated_at == 0
        assert (await store.get_multipart_upload("bkt", "open-key", "u-open")).checksum_type == "COMPOSITE"  # type: ignore[union-attr]

        # The stale-upload cleanup aborts them on their backend and releases their bytes.
        clock = Clock()
        clock.advance(NOW + 10)
        b1 = MemoryBackend("b1")
        b1.uploads = {
            "bid-open": ("bkt/open-key@u-open", {1: b"x" * 30}),
            "bid-lost": ("bkt/creating-key@u-creating", {}),  # its id was never recorded
            "bid-completing": ("bkt/completing-key@u-completing", {}),
        }
        b1.objects["bkt/completing-key@u-completing"] = b"y" * 25  # the backend had assembled it
        configs = [type("Cfg", (), {"name": n, "max_object_size": 0})() for n in ("b1", "b2")]
        objects = ObjectService(
            store=store, backends={"b1": b1, "b2": MemoryBackend("b2")}, backend_configs=configs,
            routing_strategy="pack", clock=clock,
        )
        service = MultipartService(objects=objects, bucket_limits={}, clock=clock)
        assert await service.abort_stale() == 3
        assert b1.uploads == {}
        assert "bkt/completing-key@u-completing" not in b1.objects
        # b1: reserved 70 - (30 + 15 of u-open) - 25 of u-completing = 0
        assert counters(await quota(store, "b1")) == (150, 0, 0, 2)

        # Pending intents keep their conditions: If-None-Match * over an existing key is
        # dropped; If-Match of the current ETag is promoted.
        intents = {i.write_id: i for i in await store.stale_intents(NOW + 1000, 0, 10, "t")}
        assert set(intents) == {"i1", "i2"}
        assert (await store.resolve_intent("i1", INTENT_PROMOTE, NOW + 1000)).status == INTENT_DROPPED
        assert (await store.resolve_intent("i2", INTENT_PROMOTE, NOW + 1000)).status == INTENT_PROMOTED
        got = await store.get_object("bkt", "plain")
        assert got is not None and got.write_id == "i2"
    finally:
        await store.close()

"""The fault rig's auditor: proves invariants I1, I4 and I5 against a real store and real backends.

Run it once the gateway's workers are quiet (no write in flight, the reaper and
the multipart GC done).  It reads the metadata tables directly (a DB-API
connection: ``sqlite3`` on the gateway's file or ``psycopg2`` on its database;
the SQL is the same for both) and lists every backend bucket with boto3, then:

* **I4, nothing leaks**: every object on a backend is referenced by an object
  location (or a part of an upload still open), queued for cleanup, or in the
  dead-letter table with a reason; no pending intent, no part attempt and no
  unfinished upload is left; no key is both referenced and queued (the queue
  would delete live bytes);
* **I1, referenced bytes exist**: every referenced location is on its backend
  with its recorded size;
* **I5, quotas exact**: per backend ``bytes_used`` is the sum of referenced
  sizes, ``orphan_bytes`` the sum of queued and dead-lettered sizes,
  ``reserved_bytes`` what intents and open uploads still hold, ``object_count``
  the referenced locations; and the three together stay within ``bytes_limit``;
* **I1, acknowledged writes read back** (:meth:`Auditor.check_reads`): each key
  reads back through the gateway with one of the SHA-256s the test allows (the
  last acknowledged value, or a later write whose client got no definitive
  answer, which I3 lets become visible); None allows "absent" (404).

Every finding is collected (not only the first) so one run shows the whole damage.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.configs import BackendSpec

#: Upload states in which the upload still holds parts (and quota).
UNFINISHED = ("creating", "open", "completing", "aborting")


@dataclass
class Report:
    """What the audit found; :meth:`assert_clean` fails with all of it."""

    problems: list[str] = field(default_factory=list)
    #: Backend objects seen, and how each was accounted for (for the test's own assertions).
    backend_objects: int = 0
    referenced: int = 0
    queued: int = 0
    dead_lettered: int = 0

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def assert_clean(self) -> None:
        assert not self.problems, "audit failed:\n  " + "\n  ".join(self.problems)


def _rows(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    try:
        cur.execute(sql)
        return [tuple(r) for r in cur.fetchall()]
    finally:
        cur.close()


def list_backend(spec: BackendSpec, region: str = "us-east-1") -> dict[str, int]:
    """Every object in a backend bucket: storage key -> size (blocking, boto3)."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=spec.endpoint,
        aws_access_key_id=spec.access_key,
        aws_secret_access_key=spec.secret_key,
        region_name=region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )
    found: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=spec.bucket):
        for item in page.get("Contents", []):
            found[str(item["Key"])] = int(item["Size"])
    return found


class Auditor:
    """Audits one gateway's store (``connect()`` gives a DB-API connection) and backends."""

    def __init__(
        self,
        connect: Callable[[], Any],
        backends: Sequence[BackendSpec],
        lister: Callable[[BackendSpec], dict[str, int]] = list_backend,
    ) -> None:
        self.connect = connect
        self.backends = list(backends)
        self.lister = lister

    def audit(self) -> Report:
        """I4 and I5 (see the module)."""
        report = Report()
        conn = self.connect()
        try:
            tables = self._read(conn)
        finally:
            conn.close()
        self._check_quiet(tables, report)
        self._check_objects(tables, report)
        self._check_quotas(tables, report)
        return report

    @staticmethod
    def _read(conn: Any) -> dict[str, list[tuple[Any, ...]]]:
        unfinished = ", ".join(f"'{s}'" for s in UNFINISHED)
        return {
            "locations": _rows(conn, "SELECT backend_name, storage_key, size_bytes, bucket, object_key"
                                     " FROM object_locations"),
            "parts": _rows(
                conn,
                "SELECT p.backend_name, p.storage_key, p.size_bytes, p.upload_id FROM multipart_parts p"
                f" JOIN multipart_uploads u ON u.upload_id = p.upload_id WHERE u.state IN ({unfinished})"
                " AND p.backend_name IS NOT NULL",
            ),
            "uploads": _rows(conn, "SELECT upload_id, state, bucket, object_key FROM multipart_uploads"
                                   f" WHERE state IN ({unfinished})"),
            "attempts": _rows(conn, "SELECT backend_name, storage_key, size_bytes, attempt_id"
                                    " FROM multipart_part_attempts"),
            "intents": _rows(conn, "SELECT backend_name, storage_key, size_bytes, write_id, bucket,"
                                   " object_key FROM pending_objects"),
            "queue": _rows(conn, "SELECT backend_name, storage_key, size_bytes, reason, attempts"
                                 " FROM cleanup_queue"),
            "dlq": _rows(conn, "SELECT backend_name, storage_key, size_bytes, reason FROM cleanup_dlq"),
            "quotas": _rows(conn, "SELECT backend_name, bytes_used, orphan_bytes, reserved_bytes,"
                                  " object_count, bytes_limit FROM backend_quotas"),
        }

    @staticmethod
    def _check_quiet(tables: Mapping[str, list[tuple[Any, ...]]], report: Report) -> None:
        for backend, skey, size, write_id, bucket, key in tables["intents"]:
            report.add(f"pending intent left: {write_id} {bucket}/{key} on {backend}:{skey} ({size} B)")
        for backend, skey, size, attempt in tables["attempts"]:
            report.add(f"part attempt left: {attempt} on {backend}:{skey} ({size} B)")
        for upload_id, state, bucket, key in tables["uploads"]:
            report.add(f"upload left {state}: {upload_id} of {bucket}/{key}")

    def _check_objects(self, tables: Mapping[str, list[tuple[Any, ...]]], report: Report) -> None:
        referenced: dict[tuple[str, str], int] = {}
        for backend, skey, size, *_ in [*tables["locations"], *tables["parts"]]:
            referenced[(backend, skey)] = int(size)
        queued = {(b, k) for b, k, *_ in tables["queue"]}
        dead = {(b, k) for b, k, *_ in tables["dlq"]}
        for backend, skey, _, reason in tables["dlq"]:
            if not reason:
                report.add(f"dead-lettered without a reason: {backend}:{skey}")
        for where in sorted(set(referenced) & (queued | dead)):
            report.add(f"referenced AND queued for deletion (live bytes at risk): {where[0]}:{where[1]}")
        configured = {b.name for b in self.backends}
        listed: dict[tuple[str, str], int] = {}
        for spec in self.backends:
            for skey, size in self.lister(spec).items():
                listed[(spec.name, skey)] = size
        report.backend_objects = len(listed)
        for where, size in sorted(listed.items()):
            if where in referenced:
                report.referenced += 1
            elif where in queued:
                report.queued += 1
            elif where in dead:
                report.dead_lettered += 1
            else:
                report.add(f"leaked: {where[0]}:{where[1]} ({size} B) is neither referenced,"
                           " queued nor dead-lettered")
        for where, size in sorted(referenced.items()):
            if where[0] not in configured:
                continue
            found = listed.get(where)
            if found is None:
                report.add(f"referenced but missing on its backend: {where[0]}:{where[1]}")
            elif found != size:
                report.add(f"referenced with {size} B but the backend holds {found} B: {where[0]}:{where[1]}")

    @staticmethod
    def _check_quotas(tables: Mapping[str, list[tuple[Any, ...]]], report: Report) -> None:
        used: Counter[str] = Counter()
        count: Counter[str] = Counter()
        orphan: Counter[str] = Counter()
        reserved: Counter[str] = Counter()
        for backend, _, size, *_ in tables["locations"]:
            used[backend] += int(size)
            count[backend] += 1
        for backend, _, size, *_ in [*tables["queue"], *tables["dlq"]]:
            orphan[backend] += int(size)
        for backend, _, size, *_ in [*tables["intents"], *tables["attempts"], *tables["parts"]]:
            reserved[backend] += int(size)
        rows = {str(r[0]): tuple(int(v) for v in r[1:5]) for r in tables["quotas"]}
        for row in tables["quotas"]:
            occupied, limit = sum(int(v) for v in row[1:4]), int(row[5])
            if limit and occupied > limit:
                report.add(f"quota of {row[0]} exceeded: {occupied} B held or reserved, limit {limit} B")
        for backend in sorted(set(rows) | set(used) | set(orphan) | set(reserved)):
            have = rows.get(backend, (0, 0, 0, 0))
            want = (used[backend], orphan[backend], reserved[backend], count[backend])
            if have != want:
                report.add(
                    f"quota of {backend} (used, orphan, reserved, count) is {have}, the tables say {want}"
                )

    @staticmethod
    def check_reads(
        read: Callable[[str], bytes | None], allowed: Mapping[str, Iterable[str | None]]
    ) -> list[str]:
        """I1: ``read(key)`` (None for a 404; raises for anything else) gives one of the
        allowed SHA-256s of each key (None = absent).  The problems found."""
        problems: list[str] = []
        for key, options in sorted(allowed.items()):
            accepted = set(options)
            try:
                body = read(key)
            except Exception as exc:  # a 5xx or a torn read is a finding, not a crash of the audit
                problems.append(f"{key}: the read failed ({type(exc).__name__}: {exc})")
                continue
            digest = None if body is None else hashlib.sha256(body).hexdigest()
            if digest not in accepted:
                shown = "absent" if digest is None else f"sha256 {digest[:16]}…"
                problems.append(f"{key}: reads back {shown}, not one of the allowed values ({len(accepted)})")
        return problems


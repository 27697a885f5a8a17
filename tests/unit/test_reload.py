"""SIGHUP reload: the diff of two configs, what is swapped (and what waits for a restart), a bad
file changing nothing, and a request in flight finishing with the credentials it started with."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from s3orch.auth.registry import CredentialRegistry
from s3orch.config import Config
from s3orch.config.model import BackendConfig, ReplicationConfig, UsageFlushConfig
from s3orch.reload import Reloader, ReloadTargets, diff_paths, merge_reloadable
from s3orch.s3.sigv4 import sign_headers
from s3orch.testing.config import config_from_string
from s3orch.testing.harness import DEFAULT_CONFIG, GatewayHarness

BASE = DEFAULT_CONFIG.replace("{workdir}", "/tmp/unused")


def _config(text: str = BASE) -> Config:
    return config_from_string(text)


def _result(deferred: Deferred[Any]) -> Any:
    out: list[Any] = []
    deferred.addBoth(out.append)
    assert out, "the reload did not finish"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


class _Store:
    def __init__(self, fail: bool = False) -> None:
        self.synced: list[dict[str, int]] = []
        self.fail = fail

    async def sync_quota_limits(self, limits: dict[str, int], now: float) -> None:
        if self.fail:
            raise RuntimeError("database is down")
        self.synced.append(dict(limits))


@dataclasses.dataclass
class _Front:
    registry: CredentialRegistry


@dataclasses.dataclass
class _Multipart:
    bucket_limits: dict[str, int]


@dataclasses.dataclass
class _Fleet:
    configs: tuple[BackendConfig, ...]


class _Worker:
    def __init__(self) -> None:
        self.intervals: list[float] = []

    def configure(self, config: UsageFlushConfig) -> None:
        self.intervals.append(config.interval)


def _reloader(config: Config, store: _Store | None = None) -> tuple[Reloader, dict[str, Any], list[dict[str, Any]]]:
    levels: list[str] = []
    parts: dict[str, Any] = {
        "store": store or _Store(),
        "front_door": _Front(CredentialRegistry(config.buckets)),
        "multipart": _Multipart({b.name: b.max_multipart_uploads for b in config.buckets}),
        "fleet": _Fleet(config.backends),
        "usage_flush": _Worker(),
        "levels": levels,
    }
    targets = ReloadTargets(
        store=parts["store"],
        front_door=parts["front_door"],
        multipart=parts["multipart"],
        fleet=parts["fleet"],
        usage_flush=parts["usage_flush"],
        set_log_level=levels.append,
    )
    records: list[dict[str, Any]] = []
    return Reloader(current=config, targets=targets, clock=Clock(), record=records.append), parts, records


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)  # type: ignore[arg-type]
    yield events
    globalLogPublisher.removeObserver(events.append)  # type: ignore[arg-type]


# --- the diff --------------------------------------------------------------------------------


def test_diff_names_each_changed_field_by_path_and_never_shows_a_value() -> None:
    old = _config()
    new = _config(
        BASE.replace('listen_addr: "127.0.0.1:9000"', 'listen_addr: "127.0.0.1:9100"')
        .replace("secret_access_key: photossecret", "secret_access_key: rotated-secret")
        .replace("bucket: store-2", "bucket: store-9")
    )
    paths = diff_paths(old, new)
    assert paths == [
        "server.listen_addr",
        "buckets[0].credentials[0].secret_access_key",
        "backends[1].bucket",
    ]
    assert diff_paths(old, _config()) == []


def test_a_list_whose_length_changed_is_named_whole() -> None:
    old = _config()
    one_backend = BASE[: BASE.index("  - name: backend-2")]
    assert diff_paths(old, _config(one_backend)) == ["backends"]


def test_merge_takes_the_reloadable_parts_and_keeps_the_restart_only_ones() -> None:
    old = _config()
    new = _config(
        BASE.replace('listen_addr: "127.0.0.1:9000"', 'listen_addr: "127.0.0.1:9100"\n  log_level: debug')
        .replace("quota_bytes: 1048576\n  - name: backend-2", "quota_bytes: 2097152\n  - name: backend-2")
        .replace("endpoint: \"http://backend-2.s3.test\"", "endpoint: \"http://elsewhere.test\"")
    )
    merged = merge_reloadable(old, new)
    assert merged.server.log_level == "debug" and merged.server.listen_addr == "127.0.0.1:9000"
    assert merged.backends[0].quota_bytes == 2097152
    assert merged.backends[1].endpoint == "http://backend-2.s3.test"
    assert diff_paths(old, merged) == ["server.log_level", "backends[0].quota_bytes"]
    assert diff_paths(merged, new) == ["server.listen_addr", "backends[1].endpoint"]


# --- the swap --------------------------------------------------------------------------------

NEW_CREDENTIALS = BASE.replace(
    "access_key_id: photoskey\n        secret_access_key: photossecret",
    "access_key_id: newphotoskey\n        secret_access_key: newphotossecret",
).replace("  - name: documents\n", "  - name: documents\n    max_multipart_uploads: 3\n")


def test_a_reload_swaps_credentials_limits_quotas_log_level_and_interval_at_once(
    logged: list[dict[str, Any]],
) -> None:
    old = _config()
    reloader, parts, records = _reloader(old)
    registry_before = parts["front_door"].registry
    new = _config(
        NEW_CREDENTIALS.replace('listen_addr: "127.0.0.1:9000"', 'listen_addr: "127.0.0.1:9000"\n  log_level: warn')
        .replace("quota_bytes: 1048576\n  - name: backend-2", "quota_bytes: 4096\n  - name: backend-2")
        + "usage_flush:\n  interval: 7s\n"
    )
    outcome = _result(Deferred.fromCoroutine(reloader.apply(new)))
    registry = parts["front_door"].registry
    assert registry is not registry_before
    assert registry.secret_for("newphotoskey") == "newphotossecret" and registry.secret_for("photoskey") is None
    assert registry_before.secret_for("photoskey") == "photossecret"  # a request holding it is unchanged
    assert parts["multipart"].bucket_limits == {"photos": 0, "documents": 3}
    assert parts["store"].synced == [{"backend-1": 4096, "backend-2": 1048576}]
    assert parts["fleet"].configs[0].quota_bytes == 4096
    assert parts["levels"] == ["warn"] and parts["usage_flush"].intervals == [7.0]
    assert outcome["status"] == "ok" and outcome["error"] is None and outcome["restart_required"] == []
    assert outcome["changed"] == [
        "server.log_level",
        "buckets[0].credentials[0].access_key_id",
        "buckets[0].credentials[0].secret_access_key",
        "buckets[1].max_multipart_uploads",
        "backends[0].quota_bytes",
        "usage_flush.interval",
    ]
    assert records == [outcome] and outcome["at"].endswith("Z")
    assert reloader.current == merge_reloadable(old, new)
    messages = [e.get("log_format") for e in logged]
    assert "Reloaded bucket credentials" in messages and "Configuration reload complete" in messages
    text = repr(logged)
    assert "newphotossecret" not in text and "photossecret" not in text


def test_restart_only_changes_are_logged_by_name_and_stay_pending(logged: list[dict[str, Any]]) -> None:
    old = _config()
    reloader, parts, _ = _reloader(old)
    new = _config(BASE.replace('listen_addr: "127.0.0.1:9000"', 'listen_addr: "127.0.0.1:9100"'))
    first = _result(Deferred.fromCoroutine(reloader.apply(new)))
    assert first["status"] == "ok" and first["changed"] == []
    assert first["restart_required"] == ["server.listen_addr"]
    warnings = [e for e in logged if e["log_level"] == LogLevel.warn]
    assert [(w["log_format"], w["field"]) for w in warnings] == [
        ("{field} changed; takes effect at restart", "server.listen_addr")
    ]
    # Still not in effect: the next reload names it again; nothing else was touched.
    again = _result(Deferred.fromCoroutine(reloader.apply(new)))
    assert again["restart_required"] == ["server.listen_addr"]
    assert parts["store"].synced == [] and parts["levels"] == [] and parts["usage_flush"].intervals == []


def test_a_database_that_refuses_the_new_quotas_fails_the_reload_and_changes_nothing() -> None:
    old = _config()
    reloader, parts, records = _reloader(old, _Store(fail=True))
    before = parts["front_door"].registry
    new = _config(NEW_CREDENTIALS.replace("quota_bytes: 1048576\n  - name: backend-2", "quota_bytes: 1\n  - name: backend-2"))
    outcome = _result(Deferred.fromCoroutine(reloader.apply(new)))
    assert outcome["status"] == "failed" and "database is down" in outcome["error"]
    assert parts["front_door"].registry is before and reloader.current is old
    assert records == [outcome]


def test_an_invalid_file_changes_nothing_and_logs_each_problem(tmp_path: Path, logged: list[dict[str, Any]]) -> None:
    old = _config()
    reloader, parts, records = _reloader(old)
    before = parts["front_door"].registry
    path = tmp_path / "config.yaml"
    path.write_text(NEW_CREDENTIALS + "routing_strategy: random\nencryption: {enabled: true, master_key: x}\n")
    outcome = _result(Deferred.fromCoroutine(reloader.reload(str(path))))
    assert outcome["status"] == "failed" and outcome["changed"] == []
    assert "routing_strategy" in outcome["error"]
    assert parts["front_door"].registry is before and reloader.current is old
    errors = [e for e in logged if e["log_level"] == LogLevel.error]
    assert errors[0]["log_format"] == "Config reload failed, keeping current config"
    problems = [e["problem"] for e in errors[1:]]
    assert len(problems) == 2 and any(p.startswith("routing_strategy") for p in problems)
    # Valid, but asks for what this build refuses at start: refused on reload too.
    path.write_text(NEW_CREDENTIALS + "write_path: {pending_pattern: {enabled: false}}\n")
    refused = _result(Deferred.fromCoroutine(reloader.reload(str(path))))
    assert refused["status"] == "failed"
    assert refused["error"].startswith("write_path.pending_pattern.enabled: not supported")
    assert parts["front_door"].registry is before
    assert len(records) == 2
    # The loader's warnings are logged, as a start prints them, and do not stop the reload.
    path.write_text(NEW_CREDENTIALS.replace("name: photos", "name: Photos_2024"))
    warned = _result(Deferred.fromCoroutine(reloader.reload(str(path))))
    assert warned["status"] == "ok"
    assert any(e.get("log_format") == "config warning: {warning}" and "Photos_2024" in e["warning"] for e in logged)


def test_sighups_during_a_reload_collapse_into_one_more() -> None:
    old = _config()
    reloader, _, records = _reloader(old)
    gate: Deferred[None] = Deferred()
    seen: list[str] = []

    async def slow_reload(path: str) -> dict[str, Any]:
        seen.append(path)
        if len(seen) == 1:
            await gate
        return {}

    reloader.reload = slow_reload  # type: ignore[method-assign]
    reloader.request("a")
    reloader.request("b")
    reloader.request("c")
    assert seen == ["a"]
    gate.callback(None)
    assert seen == ["a", "c"]
    reloader.request("d")
    assert seen == ["a", "c", "d"]
    reloader.close()  # shutting down
    reloader.request("e")
    assert seen == ["a", "c", "d"]


# --- in a whole gateway ----------------------------------------------------------------------


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path).start()
    yield harness
    harness.stop()


def _reload(gateway: GatewayHarness, tmp_path: Path, text: str) -> dict[str, Any]:
    path = tmp_path / "reloaded.yaml"
    path.write_text(text.replace("{workdir}", str(gateway.workdir)))
    done = Deferred.fromCoroutine(gateway.service.reloader.reload(str(path)))
    gateway.settle()
    outcome: dict[str, Any] = _result(done)
    assert gateway.service.last_reload == outcome
    return outcome


def test_in_a_gateway_the_new_key_works_the_old_gets_403_and_a_put_in_flight_completes(
    gateway: GatewayHarness, tmp_path: Path
) -> None:
    assert gateway.service.last_reload == {"status": "never"}
    old_key = ("photoskey", "photossecret")
    new_key = ("newphotoskey", "newphotossecret")
    # A PUT whose headers (and signature) arrived before the reload, its body after.
    body = b"x" * 2000
    headers = sign_headers(
        "PUT", f"http://{gateway.host}/photos/in-flight", {}, hashlib.sha256(body).hexdigest(),
        *old_key, "us-east-1", gateway.clock.seconds(),
    )
    head = ["PUT /photos/in-flight HTTP/1.1", f"Host: {gateway.host}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    connection = gateway.connect()
    connection.send(("\r\n".join(head) + "\r\n\r\n").encode() + body[:1000])

    outcome = _reload(gateway, tmp_path, DEFAULT_CONFIG.replace(
        "access_key_id: photoskey\n        secret_access_key: photossecret",
        "access_key_id: newphotoskey\n        secret_access_key: newphotossecret",
    ))
    assert outcome["status"] == "ok"

    connection.send(body[1000:])
    assert connection.response("PUT").status == 200
    assert gateway.get("photos", "in-flight", credentials=new_key).body == body
    denied = gateway.get("photos", "in-flight", credentials=old_key)
    assert denied.status == 403 and b"InvalidAccessKeyId" in denied.body


def test_in_a_gateway_a_new_quota_reaches_the_database_and_limits_writes(
    gateway: GatewayHarness, tmp_path: Path
) -> None:
    import sqlite3

    outcome = _reload(gateway, tmp_path, DEFAULT_CONFIG.replace("quota_bytes: 1048576", "quota_bytes: 100"))
    assert outcome["changed"] == ["backends[0].quota_bytes", "backends[1].quota_bytes"]
    conn = sqlite3.connect(gateway.config.database.path)
    try:
        limits = dict(conn.execute("SELECT backend_name, bytes_limit FROM backend_quotas").fetchall())
    finally:
        conn.close()
    assert limits == {"backend-1": 100, "backend-2": 100}
    assert gateway.put("photos", "big", b"y" * 101).status == 507


def test_the_sighup_handler_schedules_a_reload_on_the_reactor_and_can_be_removed() -> None:
    import os
    import signal

    from s3orch.reload import reload_on_sighup

    class _Reactor:
        def __init__(self) -> None:
            self.calls: list[tuple[Any, tuple[Any, ...]]] = []

        def callFromThread(self, function: Any, *args: Any) -> None:
            self.calls.append((function, args))

    reactor = _Reactor()
    reloader, _, _ = _reloader(_config())
    before = signal.getsignal(signal.SIGHUP)
    remove = reload_on_sighup(reactor, reloader, "/etc/s3orch/config.yaml")
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        assert reactor.calls == [(reloader.request, ("/etc/s3orch/config.yaml",))]
    finally:
        remove()
    assert signal.getsignal(signal.SIGHUP) == before


def test_a_failed_reload_is_announced_as_config_reload_failed(tmp_path: Path) -> None:
    """With webhooks on, a reload that keeps the old config writes ``config.reload_failed`` to the outbox."""
    text = DEFAULT_CONFIG + 'notifications: {endpoints: [{url: "http://127.0.0.1:9/hook", events: ["config.*"]}]}\n'
    harness = GatewayHarness(tmp_path, text).start()
    try:
        outcome = _reload(harness, tmp_path, "buckets: [not: a: valid: file\n")
        assert outcome["status"] == "failed"
        harness.settle()
        rows = _result(Deferred.fromCoroutine(harness.store.due_events(harness.clock.seconds() + 3600, 10)))
        reload_rows = [row for row in rows if row.event_type == "config.reload_failed"]
        assert len(reload_rows) == 1
        body = json.loads(reload_rows[0].payload)
        assert body["type"] == "config.reload_failed" and body["data"]["error"] == outcome["error"]
        # A good reload says nothing.
        assert _reload(harness, tmp_path, text)["status"] == "ok"
        harness.settle()
        rows = _result(Deferred.fromCoroutine(harness.store.due_events(harness.clock.seconds() + 3600, 10)))
        assert [row.event_type for row in rows].count("config.reload_failed") == 1
    finally:
        harness.stop()


def test_replication_settings_reload_but_switching_it_on_waits_for_a_restart(logged: list[dict[str, Any]]) -> None:
    two = BASE + "replication:\n  factor: 2\n"
    old = _config(two)
    reloader, _, _ = _reloader(old)
    replicator = _Replicator()
    reloader.targets.replicator = replicator
    new = _config(two + "  worker_interval: 1m\n  batch_size: 10\n")
    outcome = _result(Deferred.fromCoroutine(reloader.apply(new)))
    assert outcome["status"] == "ok" and outcome["restart_required"] == []
    assert outcome["changed"] == ["replication.worker_interval", "replication.batch_size"]
    assert [(c.worker_interval, c.batch_size) for c in replicator.configs] == [(60.0, 10)]
    # From 2 copies to 1 (the worker exists only when started with more than one): at restart.
    off = _result(Deferred.fromCoroutine(reloader.apply(_config(BASE))))
    assert off["changed"] == [] and "replication.factor" in off["restart_required"]
    assert reloader.current.replication.factor == 2 and len(replicator.configs) == 1


class _Replicator:
    def __init__(self) -> None:
        self.configs: list[ReplicationConfig] = []

    def reconfigure(self, config: ReplicationConfig) -> None:
        self.configs.append(config)

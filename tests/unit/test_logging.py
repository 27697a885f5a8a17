"""Log lines: JSON or text, both with every field of the event, never a secret; the level filter."""

from __future__ import annotations

import io
import json
import re

from twisted.logger import Logger, LogLevel, LogPublisher

from s3orch.observe.logging import (
    JSONLineObserver,
    LogSettings,
    TextLineObserver,
    event_to_dict,
    event_to_text,
)


def _emit(observer: object, **fields: object) -> None:
    publisher = LogPublisher(observer)  # type: ignore[arg-type]
    Logger(namespace="audit", observer=publisher).info("audit", **fields)


AUDIT = {
    "audit": True,
    "event": "s3.PutObject",
    "component": "audit",
    "bucket": "photos",
    "key": "holiday pics/a=b.jpg",
    "status": 200,
    "duration": 0.25,
    "access_key": "photoskey",
    "secret_access_key": "photossecret",
    "authorization": "AWS4-HMAC-SHA256 Signature=abc",
}


def test_a_text_audit_line_carries_its_fields_but_no_secret() -> None:
    out = io.StringIO()
    _emit(TextLineObserver(out), **AUDIT)
    (line,) = out.getvalue().splitlines()
    head, _, fields = line.partition(" [audit] audit ")
    assert head.endswith("Z INFO ")
    assert fields == (
        'event=s3.PutObject bucket=photos key="holiday pics/a=b.jpg" status=200 duration=0.25 access_key=photoskey'
    )
    assert "photossecret" not in line and "Signature" not in line


def test_json_and_text_lines_carry_the_same_fields() -> None:
    out = io.StringIO()
    _emit(JSONLineObserver(out), **AUDIT)
    record = json.loads(out.getvalue())
    assert {k: record[k] for k in ("event", "bucket", "key", "status", "access_key")} == {
        "event": "s3.PutObject", "bucket": "photos", "key": "holiday pics/a=b.jpg", "status": 200,
        "access_key": "photoskey",
    }
    assert "secret_access_key" not in record and "authorization" not in record


def test_text_does_not_repeat_what_the_message_shows_and_indents_tracebacks() -> None:
    out = io.StringIO()
    log = Logger(namespace="s3orch.x", observer=LogPublisher(TextLineObserver(out)))
    log.warn("backend {backend} is slow", backend="b1", component="backend", attempt=2)
    try:
        raise ValueError("boom")
    except ValueError:
        log.failure("tick failed", component="worker")
    lines = out.getvalue().splitlines()
    assert lines[0].endswith(" WARN  [backend] backend b1 is slow attempt=2")
    assert " ERROR [worker] tick failed error=boom" in lines[1]
    assert lines[2].startswith("    Traceback") and lines[-1] == "    builtins.ValueError: boom"


def test_an_event_without_a_format_still_gets_a_line() -> None:
    line = event_to_text({"log_level": LogLevel.info, "log_time": 0.0, "component": "x", "n": None})
    assert line == "1970-01-01T00:00:00.000Z INFO  [x] n=null"


def test_log_level_filters_what_is_written() -> None:
    out = io.StringIO()
    log = Logger(namespace="s3orch.x", observer=LogPublisher(LogSettings("warn", "text", out).observer()))
    log.info("hidden", component="x")
    log.warn("shown", component="x")
    log.error("also shown", component="x")
    assert [line.split("] ")[1] for line in out.getvalue().splitlines()] == ["shown", "also shown"]


def test_lines_within_one_second_share_its_text_but_keep_their_milliseconds() -> None:
    """The cached seconds part of ``time`` must follow the clock both ways."""
    stamps = [1_700_000_000.125, 1_700_000_000.75, 1_700_000_001.5, 1_699_999_999.25, 1_700_000_000.0]
    times = [event_to_dict({"log_time": t, "log_format": "x"})["time"] for t in stamps]
    assert times == [
        "2023-11-14T22:13:20.125Z",
        "2023-11-14T22:13:20.750Z",
        "2023-11-14T22:13:21.500Z",
        "2023-11-14T22:13:19.250Z",
        "2023-11-14T22:13:20.000Z",
    ]


def test_messages_with_and_without_fields_and_secrets_seen_again() -> None:
    """A format without fields is its own message (escapes still formatted); a secret-looking
    key is dropped every time, not only the first (the key classification is cached)."""
    plain = event_to_dict({"log_format": "audit", "log_time": 1.0})
    fields = event_to_dict({"log_format": "hi {name} {{x}}", "name": "bob", "log_time": 1.0})
    assert plain["msg"] == "audit" and fields["msg"] == "hi bob {x}"
    for _ in range(2):
        record = event_to_dict({"log_format": "x", "log_time": 1.0, "db_password": "p", "size": b"\xff"})
        assert "db_password" not in record and record["size"] == "\ufffd"


def test_lines_of_one_shape_each_carry_their_own_values() -> None:
    """The copied keys are cached per event shape: the values never are, and a new shape
    with a secret-looking key still loses it."""
    out = io.StringIO()
    for n in range(3):
        _emit(JSONLineObserver(out), **{**AUDIT, "status": 200 + n, "key": f"k{n}"})
    _emit(JSONLineObserver(out), event="s3.X", component="audit", db_password="p", size=1)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["status"], r["key"]) for r in records[:3]] == [(200, "k0"), (201, "k1"), (202, "k2")]
    assert "db_password" not in records[3] and records[3]["size"] == 1
    assert all("secret_access_key" not in r and "authorization" not in r for r in records)


def test_a_json_line_is_what_the_stock_encoder_writes() -> None:
    """The reused C encoder writes the same text as ``json.dumps`` (ASCII escapes, floats,
    nested values made JSON-able, key order)."""
    out = io.StringIO()
    fields = {"key": "caf\u00e9 \"q\" \n", "duration": 0.1 + 0.2, "n": None, "ok": False,
              "items": [1, b"\xff", ("a", 2.5)], "map": {"x": {"y": 1}}}
    _emit(JSONLineObserver(out), component="audit", **fields)
    line = out.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    record = json.loads(line)
    assert line[:-1] == json.dumps(record, separators=(",", ":"))
    assert list(record)[:3] == ["time", "level", "component"]
    assert record["items"] == [1, "\ufffd", ["a", 2.5]] and record["duration"] == 0.1 + 0.2


def test_the_level_filter_drops_unleveled_and_unnamespaced_events_and_follows_set_level() -> None:
    """As Twisted's FilteringLogObserver + LogLevelFilterPredicate did: no level or no
    namespace is no line; a level change applies to an observer already installed."""
    out = io.StringIO()
    settings = LogSettings("info", "json", out)
    observer = settings.observer()
    observer({"log_format": "no level", "log_namespace": "s3orch.x", "log_time": 0.0})
    observer({"log_format": "no namespace", "log_level": LogLevel.error, "log_time": 0.0})
    observer({"log_format": "kept", "log_level": LogLevel.info, "log_namespace": "s3orch.x", "log_time": 0.0})
    settings.set_level("error")
    observer({"log_format": "now hidden", "log_level": LogLevel.warn, "log_namespace": "a", "log_time": 0.0})
    observer({"log_format": "critical", "log_level": LogLevel.critical, "log_namespace": "a", "log_time": 0.0})
    settings.set_level("debug")
    observer({"log_format": "debug", "log_level": LogLevel.debug, "log_namespace": "a", "log_time": 0.0})
    assert [json.loads(line)["msg"] for line in out.getvalue().splitlines()] == ["kept", "critical", "debug"]


def test_request_ids_keep_their_format_and_never_repeat_within_a_process() -> None:
    from s3orch.observe.logging import new_request_id

    ids = [new_request_id() for _ in range(1000)]
    assert all(re.fullmatch(r"[0-9A-F]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_makes_request_ids_its_parent_does_not() -> None:
    # Processes share nothing but the random half keeps them apart; a fork must draw its own.
    from s3orch.observe.logging import _RequestIds, new_request_id

    parent = new_request_id()
    saved = (_RequestIds.prefix, _RequestIds.counter)
    try:
        _RequestIds.renew()  # what os.register_at_fork runs in the child
        child = new_request_id()
    finally:
        _RequestIds.prefix, _RequestIds.counter = saved
    assert child[:16] != parent[:16]

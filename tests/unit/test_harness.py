"""The in-process gateway harness: the production wiring (tap.build) over in-memory backends and
SQLite on the calling thread, requests over in-memory connections, all on one clock.  Each test
checks an S3 behaviour through it, and what the backends and the database hold afterwards."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.task import deferLater

from s3orch.config import ConfigError
from s3orch.testing.config import config_from_string
from s3orch.testing.harness import DEFAULT_CONFIG, GatewayHarness, HarnessError
from s3orch.testing.httpclient import parse_response
from tests.conftest import quota_rows
from tests.support.configs import BackendSpec, GatewayConfig

BACKEND_BUCKET = {"backend-1": "store-1", "backend-2": "store-2"}


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path).start()
    yield harness
    harness.stop()
    assert harness.problems.events == [], harness.problems.describe()


def quota(harness: GatewayHarness, backend: str) -> dict[str, int]:
    conn = sqlite3.connect(harness.config.database.path)
    try:
        row = conn.execute(
            "SELECT bytes_used, orphan_bytes, reserved_bytes, object_count FROM backend_quotas"
            " WHERE backend_name = ?",
            (backend,),
        ).fetchone()
    finally:
        conn.close()
    return dict(zip(("used", "orphan", "reserved", "objects"), row, strict=True))


def stored(harness: GatewayHarness, backend: str) -> list[bytes]:
    """The bytes of every object on ``backend``'s in-memory server."""
    objects = harness.backends[backend].objects(BACKEND_BUCKET[backend])
    return sorted(o.data for o in objects.values())


def xml_value(body: bytes, tag: str) -> str:
    found = re.search(rb"<%s>(.*?)</%s>" % (tag.encode(), tag.encode()), body)
    assert found is not None, body
    return found.group(1).decode()


def test_put_then_get_returns_the_bytes_and_stores_them_on_the_first_backend(gateway: GatewayHarness) -> None:
    put = gateway.put("photos", "cat.jpg", b"meow" * 100, {"content-type": "image/jpeg"})
    assert put.status == 200
    assert put.header("etag") == f'"{hashlib.md5(b"meow" * 100).hexdigest()}"'
    got = gateway.get("photos", "cat.jpg")
    assert (got.status, got.body) == (200, b"meow" * 100)
    assert got.header("content-type") == "image/jpeg"
    assert stored(gateway, "backend-1") == [b"meow" * 100]
    assert stored(gateway, "backend-2") == []


def test_head_and_list_see_the_object(gateway: GatewayHarness) -> None:
    gateway.put("photos", "a/1.txt", b"one")
    gateway.put("photos", "a/2.txt", b"two!")
    head = gateway.head("photos", "a/2.txt")
    assert (head.status, head.body, head.header("content-length")) == (200, b"", "4")
    listing = gateway.list("photos", "a/")
    assert listing.status == 200
    assert re.findall(rb"<Key>(.*?)</Key>", listing.body) == [b"a/1.txt", b"a/2.txt"]


def test_ranged_get_is_206_with_content_range(gateway: GatewayHarness) -> None:
    gateway.put("photos", "digits", b"0123456789")
    got = gateway.get("photos", "digits", {"range": "bytes=3-6"})
    assert (got.status, got.body) == (206, b"3456")
    assert got.header("content-range") == "bytes 3-6/10"


def test_unsatisfiable_range_is_416_invalid_range(gateway: GatewayHarness) -> None:
    gateway.put("photos", "digits", b"0123456789")
    got = gateway.get("photos", "digits", {"range": "bytes=20-30"})
    assert got.status == 416
    assert xml_value(got.body, "Code") == "InvalidRange"


def test_overwrite_and_delete_settle_quota_exactly(gateway: GatewayHarness) -> None:
    gateway.put("photos", "k", b"a" * 3000)
    assert quota(gateway, "backend-1") == {"used": 3000, "orphan": 0, "reserved": 0, "objects": 1}
    gateway.put("photos", "k", b"b" * 1200)
    gateway.advance(60)  # the cleanup queue removes the displaced copy
    assert quota(gateway, "backend-1") == {"used": 1200, "orphan": 0, "reserved": 0, "objects": 1}
    assert stored(gateway, "backend-1") == [b"b" * 1200]
    assert gateway.delete("photos", "k").status == 204
    gateway.advance(60)
    assert quota(gateway, "backend-1") == {"used": 0, "orphan": 0, "reserved": 0, "objects": 0}
    assert stored(gateway, "backend-1") == []


def test_put_over_the_first_backends_quota_goes_to_the_second(gateway: GatewayHarness) -> None:
    gateway.put("photos", "big-1", b"x" * 700_000)
    gateway.put("photos", "big-2", b"y" * 700_000)
    assert stored(gateway, "backend-1") == [b"x" * 700_000]
    assert stored(gateway, "backend-2") == [b"y" * 700_000]


def test_conditional_writes_and_reads_answer_412(gateway: GatewayHarness) -> None:
    gateway.put("photos", "k", b"v1")
    refused = gateway.put("photos", "k", b"v2", {"if-none-match": "*"})
    assert refused.status == 412
    assert xml_value(refused.body, "Code") == "PreconditionFailed"
    assert gateway.get("photos", "k", {"if-match": '"0123456789abcdef0123456789abcdef"'}).status == 412
    assert gateway.get("photos", "k").body == b"v1"
    assert stored(gateway, "backend-1") == [b"v1"]


def test_wrong_secret_is_refused_before_any_backend_or_database_work(gateway: GatewayHarness) -> None:
    refused = gateway.put("photos", "k", b"data", credentials=("photoskey", "not-the-secret"))
    assert refused.status == 403
    assert xml_value(refused.body, "Code") == "SignatureDoesNotMatch"
    assert all(not server.received for server in gateway.backends.values())
    assert quota(gateway, "backend-1")["reserved"] == 0
    assert gateway.get("photos", "k").status == 404


def test_unknown_key_and_another_buckets_key_are_refused(gateway: GatewayHarness) -> None:
    unknown = gateway.get("photos", "k", credentials=("nobody", "nothing"))
    assert (unknown.status, xml_value(unknown.body, "Code")) == (403, "InvalidAccessKeyId")
    crossed = gateway.get("photos", "k", credentials=gateway.credentials("documents"))
    assert (crossed.status, xml_value(crossed.body, "Code")) == (403, "AccessDenied")
    anonymous = gateway.get("photos", "k", signed=False)
    assert anonymous.status == 403


def test_multipart_upload_completes_into_one_object(tmp_path: Path) -> None:
    roomy = DEFAULT_CONFIG.replace("quota_bytes: 1048576", "quota_bytes: 16777216")
    with GatewayHarness(tmp_path, roomy) as gateway:
        _upload_in_two_parts(gateway)


def _upload_in_two_parts(gateway: GatewayHarness) -> None:
    created = gateway.request("POST", "photos", "movie", query=[("uploads", "")])
    assert created.status == 200
    upload_id = xml_value(created.body, "UploadId")
    first, second = b"a" * (5 * 1024 * 1024), b"tail"
    etags = []
    for number, part in ((1, first), (2, second)):
        answer = gateway.request(
            "PUT", "photos", "movie", query=[("partNumber", str(number)), ("uploadId", upload_id)], body=part
        )
        assert answer.status == 200, answer.text
        etags.append(answer.header("etag"))
    complete = (
        "<CompleteMultipartUpload>"
        + "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in enumerate(etags, 1))
        + "</CompleteMultipartUpload>"
    ).encode()
    done = gateway.request("POST", "photos", "movie", query=[("uploadId", upload_id)], body=complete)
    assert done.status == 200, done.text
    assert re.fullmatch(r'"[0-9a-f]{32}-2"', xml_value(done.body, "ETag").replace("&quot;", '"'))
    got = gateway.get("photos", "movie")
    assert got.status == 200 and got.body == first + second


def test_raw_bytes_reach_the_front_door_unchanged(gateway: GatewayHarness) -> None:
    answer = gateway.send_raw(b"GET /photos/k HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: junk\r\n\r\n")
    assert answer.status == 400
    assert xml_value(answer.body, "Code") == "AuthorizationHeaderMalformed"


def test_time_moves_only_when_the_test_advances_it(gateway: GatewayHarness) -> None:
    before = gateway.clock.seconds()
    gateway.put("photos", "k", b"data")
    assert gateway.clock.seconds() == before
    gateway.advance(3600)
    assert gateway.clock.seconds() == before + 3600


def test_a_config_this_build_refuses_does_not_make_a_harness(tmp_path: Path) -> None:
    refused = DEFAULT_CONFIG + "write_path:\n  pending_pattern:\n    enabled: false\n"
    with pytest.raises(ConfigError) as caught:
        GatewayHarness(tmp_path, refused)
    assert any(issue.path.startswith("write_path.pending_pattern") for issue in caught.value.errors)


def test_config_from_string_reads_no_environment_unless_given_one() -> None:
    text = DEFAULT_CONFIG.replace('"{workdir}/s3orch.db"', '"${DB_PATH}"')
    assert config_from_string(text, {"DB_PATH": "/tmp/x.db"}).database.path == "/tmp/x.db"
    assert config_from_string(text).database.path != "/tmp/x.db"


def test_response_parser_waits_for_the_whole_body_and_skips_100_continue() -> None:
    head = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    assert parse_response(head + b"abc", "GET", closed=False) is None
    found = parse_response(head + b"abcde", "GET", closed=False)
    assert found is not None and (found[0].status, found[0].body) == (200, b"abcde")
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    found = parse_response(chunked, "GET", closed=False)
    assert found is not None and found[0].body == b"abc" and found[1] == len(chunked)


def test_connecting_before_start_is_an_error(tmp_path: Path) -> None:
    harness = GatewayHarness(tmp_path)
    with pytest.raises(HarnessError):
        harness.connect()


def test_a_gateway_that_cannot_start_is_a_harness_error_naming_why(tmp_path: Path) -> None:
    unopenable = DEFAULT_CONFIG.replace('"{workdir}/s3orch.db"', '"{workdir}/no-such-dir/s3orch.db"')
    harness = GatewayHarness(tmp_path, unopenable)
    with pytest.raises(HarnessError, match="did not become ready: .*unable to open database"):
        harness.start()


def test_a_gateway_config_from_tests_support_runs_in_the_harness(tmp_path: Path) -> None:
    """The configs the process tests render work here too: the follow-up moves tests, not configs."""
    config = GatewayConfig(backends=[BackendSpec("b1", "http://moto.test:5000", "bucket-1", quota_bytes=1 << 20)])
    with GatewayHarness(tmp_path, config.render()) as gateway:
        assert gateway.put("photos", "k", b"data").status == 200
        assert gateway.backends["b1"].objects("bucket-1") != {}
        assert quota_rows(gateway)["b1"]["used"] == 4  # tests.conftest reads <workdir>/s3orch.db


def test_requests_sent_together_interleave_like_concurrent_clients(gateway: GatewayHarness) -> None:
    """Three creates of one key at once: all three upload (each waits on the backend while the
    others run), and the commit lets exactly one through."""
    credentials = gateway.credentials("photos")
    target = gateway.target("photos", "race")
    writes = [
        gateway.encode_request("PUT", target, headers={"If-None-Match": "*"}, body=b"w%d" % i, credentials=credentials)
        for i in range(3)
    ]
    answers = gateway.send_together(writes)
    assert sorted(a.status for a in answers) == [200, 412, 412]
    assert [r.method for r in gateway.backends["backend-1"].received].count("PUT") == 3
    winner = next(i for i, a in enumerate(answers) if a.status == 200)
    assert gateway.get("photos", "race").body == b"w%d" % winner


def test_an_encoded_request_keeps_the_framing_its_headers_give(gateway: GatewayHarness) -> None:
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    raw = gateway.encode_request(
        "PUT", gateway.target("photos", "chunked"), headers={"Transfer-Encoding": "chunked"}, body=body,
        credentials=gateway.credentials("photos"), payload_hash=hashlib.sha256(b"hello world").hexdigest(),
    )
    assert b"Content-Length" not in raw.split(b"\r\n\r\n", 1)[0]
    assert gateway.send_raw(raw).status == 200
    assert gateway.get("photos", "chunked").body == b"hello world"
    anonymous = gateway.encode_request("GET", "/photos/chunked")
    assert b"Authorization" not in anonymous and gateway.send_raw(anonymous).status == 403


def test_run_drives_the_gateways_own_coroutines_to_their_result_or_their_error(gateway: GatewayHarness) -> None:
    assert gateway.put("photos", "ran", b"abc").status == 200
    found = gateway.run(gateway.store.get_object("photos", "ran"))
    assert found is not None and found.size == 3
    assert gateway.run(gateway.store.get_object("photos", "absent")) is None

    async def refuses() -> None:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        gateway.run(refuses())


def test_run_is_a_harness_error_when_the_coroutine_waits_on_the_clock(gateway: GatewayHarness) -> None:
    started = gateway.clock.seconds()
    with pytest.raises(HarnessError, match="did not finish"):
        gateway.run(deferLater(gateway.clock, 5, lambda: None))
    assert gateway.clock.seconds() == started  # run never moves time

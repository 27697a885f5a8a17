"""Object-level S3 fidelity (issue 12 item 2), in-process over an in-memory backend (the tests of
what a real provider is handed, and of listed keys' Owner, run over SeaweedFS in
tests/integration/test_s3_fidelity.py).

Each behaviour as AWS S3 answers it, with its status and error code:

* ListObjects v1/v2 ``encoding-type=url`` (space is ``%20``), control characters in
  prefixes, ``max-keys=0`` (empty, not truncated);
* user metadata with non-ASCII values (RFC 2047 words as sent; raw UTF-8 returned as
  one encoded word; undecodable bytes refused);
* keys that are not UTF-8 -> 400 InvalidURI;
* 304 and 412 carry ETag and Last-Modified;
* x-amz-checksum-*: a wrong value -> 400 BadDigest, a malformed one -> 400 InvalidRequest;
* ``Content-Encoding: aws-chunked`` with a plain body is stored as sent;
* the six ``response-*`` overrides on GET and HEAD (an undecodable one -> 400 InvalidArgument).
"""

from __future__ import annotations

import base64
import email.header
import hashlib
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from s3orch.s3.checksums import new_checksum
from s3orch.testing import GatewayHarness
from tests.inproc.conftest import boto as boto_client
from tests.inproc.conftest import make_backends
from tests.inproc.rawclient import NS, Client, Reply
from tests.support.configs import GatewayConfig


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    """One gateway for the module: every test writes under a prefix of its own."""
    workdir: Path = tmp_path_factory.mktemp("fidelity")
    with GatewayHarness(workdir, GatewayConfig(backends=make_backends(1)).render()) as harness:
        yield harness


@pytest.fixture(scope="module")
def client(gateway: GatewayHarness) -> Client:
    return Client(gateway)


@pytest.fixture(scope="module")
def boto(gateway: GatewayHarness) -> Any:
    return boto_client(gateway)


def _prefix() -> str:
    return f"fid-{uuid.uuid4().hex[:8]}/"


def _put(client: Client, key: str, data: bytes = b"x", headers: dict[str, str] | None = None) -> Reply:
    reply = client.request("PUT", "/photos/" + quote(key, safe="/"), headers=headers, body=data)
    assert reply.status == 200, reply.body
    return reply


def _send_undecodable(client: Client, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
    """Like Client.send_raw: header values may carry raw bytes (surrogateescape)."""
    return client.send_raw(method, path, "", headers, body)


# -- ListObjects encoding-type=url --------------------------------------------------------


def test_url_encoded_listing_v2_encodes_keys_prefixes_and_start_after(client: Client, boto: Any) -> None:
    base = _prefix()
    keys = [base + k for k in ("a b/one", "a+b/two", "c%d", "ctl\x01x", "z\u00fc\u4e2d")]
    for key in keys:
        _put(client, key)
    query = f"list-type=2&encoding-type=url&delimiter=%2F&prefix={quote(base, safe='')}&start-after={quote(base + 'a', safe='')}"
    reply = client.request("GET", "/photos", query)
    assert reply.status == 200, reply.body
    root = reply.xml()
    assert root.findtext(f"{NS}EncodingType") == "url"
    assert root.findtext(f"{NS}Prefix") == quote(base, safe="/")
    assert root.findtext(f"{NS}StartAfter") == quote(base + "a", safe="/")
    assert root.findtext(f"{NS}Delimiter") == "/"
    prefixes = [p.findtext(f"{NS}Prefix") for p in root.findall(f"{NS}CommonPrefixes")]
    assert prefixes == [base + "a%20b/", base + "a%2Bb/"]  # space is %20, plus is %2B
    listed = [c.findtext(f"{NS}Key") for c in root.findall(f"{NS}Contents")]
    assert listed == [base + "c%25d", base + "ctl%01x", base + "z%C3%BC%E4%B8%AD"]
    # botocore asks for url encoding itself and decodes: every key comes back exact.
    out = boto.list_objects_v2(Bucket="photos", Prefix=base)
    assert sorted(o["Key"] for o in out["Contents"]) == sorted(keys)


def test_url_encoded_listing_v1_encodes_marker_and_next_marker(client: Client, boto: Any) -> None:
    base = _prefix()
    for key in ("a b", "b c", "c d"):
        _put(client, base + key)
    query = f"encoding-type=url&prefix={quote(base, safe='')}&marker={quote(base + 'a b', safe='')}&max-keys=1&delimiter=%2F"
    reply = client.request("GET", "/photos", query)
    assert reply.status == 200, reply.body
    root = reply.xml()
    assert root.findtext(f"{NS}Marker") == base + "a%20b"
    assert [c.findtext(f"{NS}Key") for c in root.findall(f"{NS}Contents")] == [base + "b%20c"]
    assert root.findtext(f"{NS}IsTruncated") == "true"
    assert root.findtext(f"{NS}NextMarker") == base + "b%20c"
    out = boto.list_objects(Bucket="photos", Prefix=base, Marker=base + "a b")
    assert [o["Key"] for o in out["Contents"]] == [base + "b c", base + "c d"]


@pytest.mark.parametrize("control", ["\x0a", "\x01", "\x1f", "\x0d"])
def test_control_characters_in_a_prefix_round_trip(client: Client, boto: Any, control: str) -> None:
    # s3-tests test_bucket_list_prefix_unreadable: the prefix comes back, the listing is empty.
    base = _prefix()
    _put(client, base + "other")
    reply = client.request("GET", "/photos", f"list-type=2&encoding-type=url&prefix={quote(base + control, safe='')}")
    assert reply.status == 200, reply.body
    assert reply.xml().findtext(f"{NS}Prefix") == quote(base + control, safe="/")
    for listing in (boto.list_objects_v2, boto.list_objects):
        out = listing(Bucket="photos", Prefix=base + control)
        assert "Contents" not in out and "CommonPrefixes" not in out
    assert boto.list_objects_v2(Bucket="photos", Prefix=base + control)["Prefix"] == base + control


def test_a_key_with_a_control_character_lists_and_reads_back(client: Client, boto: Any) -> None:
    base = _prefix()
    key = base + "ctl\x01\x1fkey"
    _put(client, key, b"control")
    out = boto.list_objects_v2(Bucket="photos", Prefix=base + "ctl\x01")
    assert [o["Key"] for o in out["Contents"]] == [key]
    assert boto.get_object(Bucket="photos", Key=key)["Body"].read() == b"control"


@pytest.mark.parametrize("listing", ["list-type=2&", ""])
def test_max_keys_zero_is_an_empty_listing_that_is_not_truncated(client: Client, listing: str) -> None:
    base = _prefix()
    _put(client, base + "a")
    reply = client.request("GET", "/photos", f"{listing}max-keys=0&prefix={quote(base, safe='')}")
    assert reply.status == 200, reply.body
    root = reply.xml()
    assert root.findtext(f"{NS}MaxKeys") == "0"
    assert root.findtext(f"{NS}IsTruncated") == "false"
    assert root.findall(f"{NS}Contents") == []
    assert root.find(f"{NS}NextContinuationToken") is None


# -- user metadata with non-ASCII values ------------------------------------------------


def test_rfc2047_metadata_from_boto3_is_stored_and_returned_as_sent(boto: Any) -> None:
    key = _prefix() + "meta"
    word = "=?UTF-8?B?" + base64.b64encode("Z\u00fcrich \u4e2d".encode()).decode() + "?="
    boto.put_object(Bucket="photos", Key=key, Body=b"x", Metadata={"city": word, "plain": "ascii only"})
    got = boto.head_object(Bucket="photos", Key=key)["Metadata"]
    assert got == {"city": word, "plain": "ascii only"}
    decoded = email.header.decode_header(got["city"])
    assert decoded == [("Z\u00fcrich \u4e2d".encode(), "utf-8")]
    with pytest.raises(Exception, match="Non ascii characters"):
        boto.put_object(Bucket="photos", Key=key, Body=b"x", Metadata={"city": "Z\u00fcrich"})  # botocore refuses


def test_raw_utf8_metadata_comes_back_as_an_encoded_word_not_latin1_mojibake(client: Client, boto: Any) -> None:
    key = _prefix() + "raw-utf8"
    path = "/photos/" + key
    headers = client.sign("PUT", path, headers={"x-amz-meta-city": "Z\u00fcrich"})  # UTF-8 on the wire
    headers["content-length"] = "1"
    reply = client.send_raw("PUT", path, "", headers, b"x")
    assert reply.status == 200, reply.body
    head = client.request("HEAD", path)
    assert head.headers["x-amz-meta-city"] == "=?UTF-8?B?" + base64.b64encode("Z\u00fcrich".encode()).decode() + "?="
    assert boto.head_object(Bucket="photos", Key=key)["Metadata"]["city"].startswith("=?UTF-8?B?")


def test_metadata_that_is_not_utf8_is_refused_before_the_body(client: Client) -> None:
    path = "/photos/" + _prefix() + "latin1"
    headers = client.sign("PUT", path, headers={"x-amz-meta-city": "Z\udcfcrich"})
    headers["content-length"] = "1"
    reply = _send_undecodable(client, "PUT", path, headers, b"x")
    assert (reply.status, reply.code) == (400, "InvalidArgument"), reply.body
    assert client.request("HEAD", path).status == 404  # nothing was stored


# -- keys that are not UTF-8 -------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
@pytest.mark.parametrize("raw_key", ["%FF", "a%C3", "%C3%28", "%ED%A0%80"])
def test_a_key_that_is_not_utf8_is_400_invalid_uri(client: Client, method: str, raw_key: str) -> None:
    path = "/photos/" + raw_key
    reply = client.send_raw(method, path, "", {"content-length": "0"} if method == "PUT" else {}, b"")
    assert reply.status == 400, reply
    if method != "HEAD":
        assert reply.code == "InvalidURI"


# -- 304 and 412 ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_not_modified_and_precondition_failed_carry_etag_and_last_modified(client: Client, method: str) -> None:
    path = "/photos/" + _prefix() + "cond"
    put = _put(client, path.removeprefix("/photos/"), b"conditional", {"x-amz-meta-colour": "blue"})
    etag = put.headers["etag"]
    last_modified = client.request("HEAD", path).headers["last-modified"]
    for headers, status in (
        ({"if-none-match": etag}, 304),
        ({"if-modified-since": last_modified}, 304),
        ({"if-match": '"0000"'}, 412),
        ({"if-unmodified-since": "Thu, 01 Jan 2015 00:00:00 GMT"}, 412),
    ):
        reply = client.request(method, path, headers=headers)
        assert reply.status == status, (headers, reply)
        assert reply.headers.get("etag") == etag
        assert reply.headers.get("last-modified") == last_modified
        assert "x-amz-meta-colour" not in reply.headers
        if status == 412 and method == "GET":
            assert reply.code == "PreconditionFailed"


# -- flexible checksums -----------------------------------------------------------------


ALGORITHMS = ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"]


def _checksum(algorithm: str, data: bytes) -> str:
    running = new_checksum(algorithm)
    running.update(data)
    return running.b64digest()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_right_checksum_is_stored_and_a_wrong_one_is_bad_digest(client: Client, algorithm: str) -> None:
    data = b"checksummed " * 100
    path = "/photos/" + _prefix() + algorithm
    good = _checksum(algorithm, data)
    reply = client.request("PUT", path, headers={f"x-amz-checksum-{algorithm}": good}, body=data)
    assert reply.status == 200, reply.body
    assert reply.headers.get(f"x-amz-checksum-{algorithm}") == good
    wrong = _checksum(algorithm, data + b"!")
    reply = client.request("PUT", path + ".bad", headers={f"x-amz-checksum-{algorithm}": wrong}, body=data)
    assert (reply.status, reply.code) == (400, "BadDigest"), reply.body
    assert client.request("HEAD", path + ".bad").status == 404


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("value", ["not base64!", "AAAA", "QUJD" * 30, ""])
def test_a_malformed_checksum_is_invalid_request(client: Client, algorithm: str, value: str) -> None:
    path = "/photos/" + _prefix() + "malformed"
    reply = client.request("PUT", path, headers={f"x-amz-checksum-{algorithm}": value}, body=b"data")
    assert (reply.status, reply.code) == (400, "InvalidRequest"), reply.body


def test_upload_part_checks_its_checksum(client: Client) -> None:
    path = "/photos/" + _prefix() + "mpu"
    created = client.request("POST", path, "uploads", headers={"x-amz-checksum-algorithm": "CRC32"})
    assert created.status == 200, created.body
    upload_id = created.xml().findtext(f"{NS}UploadId")
    assert upload_id
    data = b"p" * 1024
    query = f"partNumber=1&uploadId={quote(upload_id, safe='')}"
    wrong = base64.b64encode(zlib.crc32(data + b"!").to_bytes(4, "big")).decode()
    reply = client.request("PUT", path, query, headers={"x-amz-checksum-crc32": wrong}, body=data)
    assert (reply.status, reply.code) == (400, "BadDigest"), reply.body
    reply = client.request("PUT", path, query, headers={"x-amz-checksum-crc32": "@@@@"}, body=data)
    assert (reply.status, reply.code) == (400, "InvalidRequest"), reply.body
    right = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    reply = client.request("PUT", path, query, headers={"x-amz-checksum-crc32": right}, body=data)
    assert reply.status == 200, reply.body
    client.request("DELETE", path, f"uploadId={quote(upload_id, safe='')}")


# -- aws-chunked without framing --------------------------------------------------------


def test_aws_chunked_content_encoding_with_a_plain_body_is_stored_as_sent(client: Client) -> None:
    path = "/photos/" + _prefix() + "plain-aws-chunked"
    data = b"5\r\nhello\r\n0\r\n\r\n plain bytes that only look framed"
    reply = client.request("PUT", path, headers={"content-encoding": "aws-chunked"}, body=data,
                           sign_body=True)
    assert reply.status == 200, reply.body
    assert reply.headers.get("etag") == '"' + hashlib.md5(data).hexdigest() + '"'
    got = client.request("GET", path)
    assert got.body == data
    assert "content-encoding" not in got.headers  # aws-chunked is a wire detail, never stored


def test_boto3_put_with_aws_chunked_content_encoding_reads_back(boto: Any) -> None:
    key = _prefix() + "boto-aws-chunked"
    data = b"botocore body " * 1000
    boto.put_object(Bucket="photos", Key=key, Body=data, ContentEncoding="aws-chunked")
    got = boto.get_object(Bucket="photos", Key=key)
    assert got["Body"].read() == data
    assert "ContentEncoding" not in got


# -- response-* overrides ---------------------------------------------------------------


def test_an_undecodable_response_override_is_400_invalid_argument(client: Client) -> None:
    path = "/photos/" + _prefix() + "override"
    _put(client, path.removeprefix("/photos/"))
    reply = client.request("GET", path, "response-content-type=%FF")
    assert (reply.status, reply.code) == (400, "InvalidArgument"), reply.body
    assert client.request("GET", path).status == 200  # the object is untouched and readable


def test_every_response_override_from_boto3_replaces_its_header_on_get_and_head(boto: Any) -> None:
    # s3-tests test_object_response_headers: the six response-* parameters, as boto3 sends them.
    key = _prefix() + "overrides"
    boto.put_object(Bucket="photos", Key=key, Body=b"data", ContentType="text/plain")
    overrides = {
        "ResponseContentType": "foo/bar", "ResponseContentDisposition": "bla",
        "ResponseContentLanguage": "esperanto", "ResponseContentEncoding": "aaa",
        "ResponseCacheControl": "no-cache", "ResponseExpires": "Thu, 01 Dec 1994 16:00:00 GMT",
    }
    headers = {
        "content-type": "foo/bar", "content-disposition": "bla", "content-language": "esperanto",
        "content-encoding": "aaa", "cache-control": "no-cache", "expires": "Thu, 01 Dec 1994 16:00:00 GMT",
    }
    for call in (boto.get_object, boto.head_object):
        got = call(Bucket="photos", Key=key, **overrides)["ResponseMetadata"]["HTTPHeaders"]
        assert {name: got.get(name) for name in headers} == headers
    assert boto.head_object(Bucket="photos", Key=key)["ContentType"] == "text/plain"  # nothing stored

"""What real S3 clients send, as raw HTTP to an in-process gateway: the regression net under
tests/e2e/test_client_matrix.py (which runs the real clients against a process).

* bucket-level calls answered as AWS answers for a bucket with nothing configured, and
  configuration or ACL changes refused with 501 NotImplemented (never a 500, never a silent
  success that changes nothing);
* request body framings: Content-Length, ``Transfer-Encoding: chunked``, aws-chunked inside
  chunked, ``Expect: 100-continue``, ``Content-Encoding: aws-chunked,gzip``;
* full-object checksums out (GET/HEAD with ``x-amz-checksum-mode``, GetObjectAttributes);
* directory markers (zero-byte keys ending in ``/``).

Every request is signed here with SigV4 (``UNSIGNED-PAYLOAD`` or the body's SHA-256) at the
harness clock's time, so the bytes the gateway reads are exactly the ones a test writes.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
import zlib
from collections.abc import Iterator
from urllib.parse import quote
from xml.etree import ElementTree

import pytest

from s3orch.s3 import sigv4
from s3orch.testing import GatewayHarness
from tests.conftest import DOCS, PHOTOS
from tests.inproc.conftest import make_backends
from tests.inproc.rawclient import NS, Client, Reply
from tests.support.awschunked import streaming_put
from tests.support.configs import GatewayConfig


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    """One gateway for the module: every test writes under keys of its own."""
    config = GatewayConfig(backends=make_backends(1))
    with GatewayHarness(tmp_path_factory.mktemp("compat-gw"), config.render()) as harness:
        yield harness


@pytest.fixture(scope="module")
def client(gateway: GatewayHarness) -> Client:
    return Client(gateway)


def _key(name: str) -> str:
    return f"/photos/compat-{uuid.uuid4().hex[:8]}/{name}"


def _put(client: Client, path: str, data: bytes = b"x", headers: dict[str, str] | None = None) -> Reply:
    reply = client.request("PUT", path, headers=headers, body=data)
    assert reply.status == 200, reply.body
    return reply


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


# -- 2. bucket-level calls ------------------------------------------------------------------


def test_create_bucket_on_own_virtual_bucket_answers_200(client: Client) -> None:
    reply = client.request("PUT", "/photos")
    assert reply.status == 200, reply.body
    assert reply.headers.get("location") == "/photos"


def test_create_bucket_with_other_region_is_already_owned_by_you(client: Client) -> None:
    body = (b'<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            b"<LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>")
    reply = client.request("PUT", "/photos", body=body, sign_body=True)
    assert (reply.status, reply.code) == (409, "BucketAlreadyOwnedByYou")


def test_create_other_bucket_is_access_denied(client: Client) -> None:
    reply = client.request("PUT", "/someone-elses-bucket")
    assert (reply.status, reply.code) == (403, "AccessDenied")


def test_delete_bucket_never_deletes_a_virtual_bucket(gateway: GatewayHarness, client: Client) -> None:
    _put(client, _key("keep.txt"))
    reply = client.request("DELETE", "/photos")
    assert (reply.status, reply.code) == (409, "BucketNotEmpty")
    docs = Client(gateway, DOCS.access_key, DOCS.secret_key)
    listing = docs.request("GET", "/documents", "list-type=2")
    assert listing.status == 200 and listing.xml().findtext(f"{NS}KeyCount") == "0"
    reply = docs.request("DELETE", "/documents")
    assert (reply.status, reply.code) == (403, "AccessDenied")
    assert docs.request("HEAD", "/documents").status == 200  # still there


def test_bucket_versioning_is_an_empty_configuration(client: Client) -> None:
    reply = client.request("GET", "/photos", "versioning")
    assert reply.status == 200
    root = reply.xml()
    assert root.tag == f"{NS}VersioningConfiguration" and list(root) == []


@pytest.mark.parametrize("target", ["bucket", "object"])
def test_acl_reads_show_the_owner_with_full_control(client: Client, target: str) -> None:
    path = "/photos" if target == "bucket" else _key("acl.txt")
    if target == "object":
        _put(client, path)
    reply = client.request("GET", path, "acl")
    assert reply.status == 200, reply.body
    root = reply.xml()
    assert root.tag == f"{NS}AccessControlPolicy"
    owner_id = root.findtext(f"{NS}Owner/{NS}ID")
    grants = root.findall(f"{NS}AccessControlList/{NS}Grant")
    assert [(g.findtext(f"{NS}Grantee/{NS}ID"), g.findtext(f"{NS}Permission")) for g in grants] == [
        (owner_id, "FULL_CONTROL")
    ]


def test_object_acl_of_a_missing_key_is_no_such_key(client: Client) -> None:
    reply = client.request("GET", _key("missing"), "acl")
    assert (reply.status, reply.code) == (404, "NoSuchKey")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("policy", "NoSuchBucketPolicy"),
        ("policyStatus", "NoSuchBucketPolicy"),
        ("cors", "NoSuchCORSConfiguration"),
        ("lifecycle", "NoSuchLifecycleConfiguration"),
        ("tagging", "NoSuchTagSet"),
        ("encryption", "ServerSideEncryptionConfigurationNotFoundError"),
        ("ownershipControls", "OwnershipControlsNotFoundError"),
        ("publicAccessBlock", "NoSuchPublicAccessBlockConfiguration"),
        ("website", "NoSuchWebsiteConfiguration"),
        ("object-lock", "ObjectLockConfigurationNotFoundError"),
        ("replication", "ReplicationConfigurationNotFoundError"),
    ],
)
def test_unconfigured_bucket_reads_answer_aws_not_found_codes(client: Client, query: str, code: str) -> None:
    reply = client.request("GET", "/photos", query)
    assert (reply.status, reply.code) == (404, code), reply.body
    assert ElementTree.fromstring(reply.body).findtext("BucketName") == "photos"


@pytest.mark.parametrize(
    ("query", "root", "children"),
    [
        ("requestPayment", "RequestPaymentConfiguration", [("Payer", "BucketOwner")]),
        ("logging", "BucketLoggingStatus", []),
        ("notification", "NotificationConfiguration", []),
        ("accelerate", "AccelerateConfiguration", []),
    ],
)
def test_unconfigured_bucket_reads_answer_aws_defaults(
    client: Client, query: str, root: str, children: list[tuple[str, str]]
) -> None:
    reply = client.request("GET", "/photos", query)
    assert reply.status == 200, reply.body
    doc = reply.xml()
    assert doc.tag == NS + root
    assert [(child.tag.removeprefix(NS), child.text) for child in doc] == children


@pytest.mark.parametrize("query", ["retention", "legal-hold"])
def test_object_lock_reads_say_the_bucket_has_no_object_lock(client: Client, query: str) -> None:
    path = _key("locked.txt")
    _put(client, path)
    reply = client.request("GET", path, query)
    assert (reply.status, reply.code) == (400, "InvalidRequest")
    assert b"Bucket is missing Object Lock Configuration" in reply.body


def test_object_tagging_is_an_empty_tag_set(client: Client) -> None:
    path = _key("tagged.txt")
    _put(client, path)
    reply = client.request("GET", path, "tagging")
    assert reply.status == 200
    root = reply.xml()
    assert root.tag == f"{NS}Tagging"
    assert [child.tag for child in root] == [f"{NS}TagSet"] and list(root[0]) == []
    missing = client.request("GET", _key("missing"), "tagging")
    assert (missing.status, missing.code) == (404, "NoSuchKey")


CONFIG_BODY = b"<Configuration/>"


@pytest.mark.parametrize(
    ("method", "query"),
    [
        ("PUT", "policy"),
        ("DELETE", "policy"),
        ("PUT", "cors"),
        ("DELETE", "cors"),
        ("PUT", "lifecycle"),
        ("DELETE", "lifecycle"),
        ("PUT", "tagging"),
        ("DELETE", "tagging"),
        ("PUT", "versioning"),
        ("PUT", "encryption"),
        ("PUT", "website"),
        ("PUT", "ownershipControls"),
        ("PUT", "publicAccessBlock"),
        ("PUT", "notification"),
        ("PUT", "logging"),
        ("PUT", "requestPayment"),
    ],
)
def test_bucket_configuration_changes_are_not_implemented(client: Client, method: str, query: str) -> None:
    body = CONFIG_BODY if method == "PUT" else b""
    reply = client.request(method, "/photos", query, body=body, sign_body=True)
    assert (reply.status, reply.code) == (501, "NotImplemented"), reply.body


def test_object_tagging_is_metadata_only_and_never_overwrites_the_object(client: Client) -> None:
    """s3-orchestrator ran PutObject for ``PUT ?tagging`` (the body became the object) and
    DeleteObject for ``DELETE ?tagging``: here they change the tag set and nothing else."""
    path = _key("t.txt")
    _put(client, path, b"payload")
    body = b"<Tagging><TagSet><Tag><Key>a</Key><Value>b</Value></Tag></TagSet></Tagging>"
    reply = client.request("PUT", path, "tagging", body=body, sign_body=True)
    assert reply.status == 200, reply.body
    assert client.request("HEAD", path).headers["x-amz-tagging-count"] == "1"
    assert client.request("DELETE", path, "tagging").status == 204
    got = client.request("GET", path)
    assert (got.status, got.body) == (200, b"payload")
    assert "x-amz-tagging-count" not in got.headers


@pytest.mark.parametrize("target", ["bucket", "object"])
def test_canned_private_acl_is_what_there_is_and_is_accepted(client: Client, target: str) -> None:
    path = "/photos" if target == "bucket" else _key("acl-private.txt")
    if target == "object":
        _put(client, path)
    reply = client.request("PUT", path, "acl", headers={"x-amz-acl": "private"})
    assert reply.status == 200, reply.body
    assert client.request("GET", path, "acl").status == 200


def test_owner_full_control_acl_document_is_accepted(client: Client) -> None:
    path = _key("acl-doc.txt")
    _put(client, path)
    current = client.request("GET", path, "acl").body
    reply = client.request("PUT", path, "acl", body=current, sign_body=True)
    assert reply.status == 200, reply.body


@pytest.mark.parametrize(
    "headers",
    [{"x-amz-acl": "public-read"}, {"x-amz-grant-read": 'uri="http://acs.amazonaws.com/groups/global/AllUsers"'}],
)
def test_acl_changes_are_not_implemented(client: Client, headers: dict[str, str]) -> None:
    path = _key("acl-public.txt")
    _put(client, path)
    for target in (path, "/photos"):
        reply = client.request("PUT", target, "acl", headers=headers)
        assert (reply.status, reply.code) == (501, "NotImplemented"), reply.body


def test_acl_document_granting_others_is_not_implemented(client: Client) -> None:
    path = _key("acl-grant.txt")
    _put(client, path)
    doc = client.request("GET", path, "acl").body.replace(
        b"</AccessControlList>",
        b'<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="Group">'
        b"<URI>http://acs.amazonaws.com/groups/global/AllUsers</URI></Grantee>"
        b"<Permission>READ</Permission></Grant></AccessControlList>",
    )
    reply = client.request("PUT", path, "acl", body=doc, sign_body=True)
    assert (reply.status, reply.code) == (501, "NotImplemented"), reply.body


def test_put_object_with_a_public_acl_is_refused_and_stores_nothing(client: Client) -> None:
    path = _key("public.txt")
    reply = client.request("PUT", path, headers={"x-amz-acl": "public-read"}, body=b"data")
    assert (reply.status, reply.code) == (501, "NotImplemented")
    assert client.request("HEAD", path).status == 404
    # The ACLs a private object already has are fine.
    for acl in ("private", "bucket-owner-full-control"):
        assert client.request("PUT", path, headers={"x-amz-acl": acl}, body=b"data").status == 200


# -- 3. request body framings ------------------------------------------------------------------


def _chunked(data: bytes, size: int = 7000) -> bytes:
    """HTTP/1.1 chunked transfer coding of ``data``."""
    out = [b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size]) for i in range(0, len(data), size)]
    return b"".join(out) + b"0\r\n\r\n"


def test_content_length_body(client: Client) -> None:
    path = _key("plain.bin")
    data = bytes(range(256)) * 100
    reply = client.request("PUT", path, body=data, sign_body=True)
    assert reply.status == 200
    assert reply.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert client.request("GET", path).body == data


def test_transfer_encoding_chunked_body(client: Client) -> None:
    path = _key("chunked.bin")
    data = bytes(range(256)) * 300
    headers = client.sign("PUT", path, headers={}, payload_hash=hashlib.sha256(data).hexdigest())
    headers["transfer-encoding"] = "chunked"
    reply = client.send_raw("PUT", path, "", headers, _chunked(data))
    assert reply.status == 200, reply.body
    assert client.request("GET", path).body == data


def test_aws_chunked_inside_transfer_encoding_chunked(client: Client) -> None:
    """What the AWS SDK for JavaScript v3 sends for a stream: no Content-Length at all."""
    path = _key("sdk-js.bin")
    data = bytes(range(256)) * 400
    req = streaming_put(client.url(path), data, access_key=client.access_key, secret_key=client.secret_key,
                        now=client.harness.clock.seconds(), variant=sigv4.STREAMING_UNSIGNED_TRAILER)
    headers = {k: v for k, v in req.headers.items() if k.lower() != "content-length"}
    headers["transfer-encoding"] = "chunked"
    reply = client.send_raw("PUT", path, "", headers, _chunked(req.body, 1000))
    assert reply.status == 200, reply.body
    crc = _b64(zlib.crc32(data).to_bytes(4, "big"))
    assert reply.headers.get("x-amz-checksum-crc32") == crc
    got = client.request("GET", path, headers={"x-amz-checksum-mode": "ENABLED"})
    assert got.body == data and got.headers.get("x-amz-checksum-crc32") == crc


def test_aws_chunked_without_decoded_length_is_refused(client: Client) -> None:
    path = _key("no-decoded-length.bin")
    req = streaming_put(client.url(path), b"abc", access_key=client.access_key, secret_key=client.secret_key,
                        now=client.harness.clock.seconds(), variant=sigv4.STREAMING_UNSIGNED_TRAILER)
    headers = client.sign("PUT", path, headers={"content-encoding": "aws-chunked",
                                                 "x-amz-trailer": "x-amz-checksum-crc32"},
                          payload_hash=sigv4.STREAMING_UNSIGNED_TRAILER)
    headers["content-length"] = str(len(req.body))
    reply = client.send_raw("PUT", path, "", headers, req.body)
    assert (reply.status, reply.code) == (411, "MissingContentLength")


def _expect_continue(client: Client, path: str, headers: dict[str, str], body: bytes) -> tuple[Reply, Reply | None]:
    """Send headers with Expect: 100-continue; send the body only after ``100 Continue``."""
    head = f"PUT {path} HTTP/1.1\r\nHost: {client.harness.host}\r\nExpect: 100-continue\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    connection = client.harness.connect()
    try:
        connection.send(head.encode())
        if not connection.received.startswith(b"HTTP/1.1 100 "):
            answer = connection.response("PUT")
            return Reply(answer.status, dict(answer.headers), answer.body), None
        connection.send(body)
        answer = connection.response("PUT")  # the interim response is skipped
        return Reply(100, {}, b""), Reply(answer.status, dict(answer.headers), answer.body)
    finally:
        connection.close()


def test_expect_100_continue_only_after_the_header_checks_pass(client: Client) -> None:
    path = _key("expect.bin")
    data = b"e" * 5000
    headers = client.sign("PUT", path, payload_hash=hashlib.sha256(data).hexdigest())
    headers["content-length"] = str(len(data))
    first, final = _expect_continue(client, path, headers, data)
    assert first.status == 100 and final is not None and final.status == 200, (first, final)
    assert client.request("GET", path).body == data


@pytest.mark.parametrize("problem", ["signature", "unknown-key", "too-large", "other-bucket"])
def test_expect_100_continue_refusals_come_before_the_body(gateway: GatewayHarness, problem: str) -> None:
    path = _key("refused.bin")
    client = Client(gateway)
    if problem == "signature":
        client = Client(gateway, PHOTOS.access_key, "wrong-secret")
    elif problem == "unknown-key":
        client = Client(gateway, "nosuchkey", "whatever")
    elif problem == "other-bucket":
        path = "/documents/refused.bin"
    headers = client.sign("PUT", path)
    headers["content-length"] = str(6 * 1024**4 if problem == "too-large" else 10)
    first, final = _expect_continue(client, path, headers, b"0123456789")
    assert final is None, "the gateway asked for a body it was going to refuse"
    expected = {"signature": "SignatureDoesNotMatch", "unknown-key": "InvalidAccessKeyId",
                "too-large": "EntityTooLarge", "other-bucket": "AccessDenied"}[problem]
    assert first.code == expected and first.status in (400, 403), first


@pytest.mark.parametrize("encoding", ["aws-chunked,gzip", "gzip,aws-chunked", "aws-chunked, gzip"])
def test_aws_chunked_gzip_keeps_gzip_as_the_stored_content_encoding(client: Client, encoding: str) -> None:
    path = _key("zipped.gz")
    data = zlib.compress(b"hello " * 1000)
    req = streaming_put(client.url(path), data, access_key=client.access_key, secret_key=client.secret_key,
                        now=client.harness.clock.seconds(), variant=sigv4.STREAMING_UNSIGNED_TRAILER)
    # Re-sign with the combined Content-Encoding (it is a signed header).
    headers = {"x-amz-decoded-content-length": str(len(data)), "content-encoding": encoding,
               "x-amz-trailer": "x-amz-checksum-crc32"}
    headers = client.sign("PUT", path, headers=headers, payload_hash=sigv4.STREAMING_UNSIGNED_TRAILER)
    headers["content-length"] = str(len(req.body))
    reply = client.send_raw("PUT", path, "", headers, req.body)
    assert reply.status == 200, reply.body
    got = client.request("GET", path)
    assert got.body == data and got.headers.get("content-encoding") == "gzip"
    assert client.request("HEAD", path).headers.get("content-encoding") == "gzip"


# -- 4. checksums out --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def summed(client: Client) -> tuple[str, bytes, str]:
    """An object stored with a full-object SHA-256 checksum header."""
    path = _key("summed.bin")
    data = bytes(range(256)) * 64
    value = _b64(hashlib.sha256(data).digest())
    _put(client, path, data, {"x-amz-checksum-sha256": value, "x-amz-sdk-checksum-algorithm": "SHA256"})
    return path, data, value


def test_checksum_returned_on_get_and_head_only_when_asked(client: Client, summed: tuple[str, bytes, str]) -> None:
    path, data, value = summed
    for method in ("GET", "HEAD"):
        plain = client.request(method, path)
        assert plain.status == 200 and "x-amz-checksum-sha256" not in plain.headers
        asked = client.request(method, path, headers={"x-amz-checksum-mode": "ENABLED"})
        assert asked.status == 200 and asked.headers.get("x-amz-checksum-sha256") == value
        assert asked.headers.get("x-amz-checksum-type") == "FULL_OBJECT"
    assert client.request("GET", path, headers={"x-amz-checksum-mode": "ENABLED"}).body == data


def test_checksum_never_on_a_ranged_get(client: Client, summed: tuple[str, bytes, str]) -> None:
    path, data, _ = summed
    for method in ("GET", "HEAD"):
        reply = client.request(method, path, headers={"x-amz-checksum-mode": "ENABLED", "range": "bytes=10-99"})
        assert reply.status == 206
        assert not any(name.startswith("x-amz-checksum-") for name in reply.headers)
    assert client.request("GET", path, headers={"range": "bytes=10-99"}).body == data[10:100]


def test_trailer_checksum_is_returned(client: Client) -> None:
    path = _key("trailer.bin")
    data = b"t" * 70000
    req = streaming_put(client.url(path), data, access_key=client.access_key, secret_key=client.secret_key,
                        now=client.harness.clock.seconds(), variant=sigv4.STREAMING_PAYLOAD_TRAILER, checksum="crc32c")
    reply = client.send_raw("PUT", path, "", req.headers, req.body)
    assert reply.status == 200, reply.body
    trailer = req.body.split(b"x-amz-checksum-crc32c:")[1].split(b"\r\n")[0].decode()
    head = client.request("HEAD", path, headers={"x-amz-checksum-mode": "ENABLED"})
    assert head.headers.get("x-amz-checksum-crc32c") == trailer


def _attributes(client: Client, path: str, wanted: str, query: str = "attributes") -> Reply:
    headers = {"x-amz-object-attributes": wanted} if wanted else {}
    return client.request("GET", path, query, headers=headers)


def test_get_object_attributes(client: Client, summed: tuple[str, bytes, str]) -> None:
    path, data, value = summed
    reply = _attributes(client, path, "ETag,Checksum,ObjectParts,StorageClass,ObjectSize")
    assert reply.status == 200, reply.body
    assert "last-modified" in reply.headers
    root = reply.xml()
    assert root.tag == f"{NS}GetObjectAttributesResponse"
    assert root.findtext(f"{NS}ETag") == hashlib.md5(data).hexdigest()  # unquoted, as AWS sends it
    assert root.findtext(f"{NS}Checksum/{NS}ChecksumSHA256") == value
    assert root.findtext(f"{NS}Checksum/{NS}ChecksumType") == "FULL_OBJECT"
    assert root.findtext(f"{NS}StorageClass") == "STANDARD"
    assert root.findtext(f"{NS}ObjectSize") == str(len(data))
    assert root.find(f"{NS}ObjectParts") is None  # not a multipart object


def test_get_object_attributes_returns_only_what_was_asked(client: Client, summed: tuple[str, bytes, str]) -> None:
    path, data, _ = summed
    root = _attributes(client, path, "ObjectSize").xml()
    assert [child.tag for child in root] == [f"{NS}ObjectSize"]
    plain = _key("nosum.txt")
    _put(client, plain, b"abc")
    root = _attributes(client, plain, "Checksum,ETag").xml()
    assert [child.tag for child in root] == [f"{NS}ETag"]


@pytest.mark.parametrize(("wanted", "code"), [("", "InvalidArgument"), ("ETag,Colour", "InvalidArgument")])
def test_get_object_attributes_argument_errors(
    client: Client, summed: tuple[str, bytes, str], wanted: str, code: str
) -> None:
    reply = _attributes(client, summed[0], wanted)
    assert (reply.status, reply.code) == (400, code)


def test_get_object_attributes_of_a_missing_key(client: Client) -> None:
    reply = _attributes(client, _key("absent"), "ETag")
    assert (reply.status, reply.code) == (404, "NoSuchKey")


# -- 5. directory markers -----------------------------------------------------------------------


def _list(client: Client, prefix: str, delimiter: str = "") -> tuple[list[tuple[str, str]], list[str]]:
    query = "list-type=2&prefix=" + quote(prefix, safe="")
    if delimiter:
        query += "&delimiter=" + quote(delimiter, safe="")
    root = client.request("GET", "/photos", query).xml()
    contents = [(c.findtext(f"{NS}Key") or "", c.findtext(f"{NS}Size") or "") for c in root.findall(f"{NS}Contents")]
    prefixes = [p.findtext(f"{NS}Prefix") or "" for p in root.findall(f"{NS}CommonPrefixes")]
    return contents, prefixes


def test_directory_markers_behave_as_on_aws(client: Client) -> None:
    top = f"markers-{uuid.uuid4().hex[:8]}/"
    marker = f"/photos/{top}dir/"
    reply = client.request("PUT", marker, body=b"")
    assert reply.status == 200 and reply.headers["etag"] == f'"{hashlib.md5(b"").hexdigest()}"'
    head = client.request("HEAD", marker)
    assert head.status == 200 and head.headers["content-length"] == "0"
    get = client.request("GET", marker)
    assert (get.status, get.body) == (200, b"")

    assert _list(client, top) == ([(f"{top}dir/", "0")], [])
    assert _list(client, top, "/") == ([], [f"{top}dir/"])
    assert _list(client, f"{top}dir/", "/") == ([(f"{top}dir/", "0")], [])

    _put(client, f"/photos/{top}dir/file.txt", b"f")
    assert _list(client, f"{top}dir/", "/") == ([(f"{top}dir/", "0"), (f"{top}dir/file.txt", "1")], [])
    assert client.request("DELETE", f"/photos/{top}dir/file.txt").status == 204
    assert _list(client, top, "/") == ([], [f"{top}dir/"])  # the marker still holds the prefix

    assert client.request("DELETE", marker).status == 204
    assert client.request("HEAD", marker).status == 404
    assert _list(client, top, "/") == ([], [])  # no phantom prefix left behind
    assert _list(client, top) == ([], [])


def test_directory_markers_in_batch_delete(client: Client) -> None:
    top = f"bmarkers-{uuid.uuid4().hex[:8]}/"
    keys = [f"{top}a/", f"{top}a/b/", f"{top}a/b/c.txt"]
    for key in keys:
        _put(client, "/photos/" + key, b"" if key.endswith("/") else b"c")
    body = ("<Delete>" + "".join(f"<Object><Key>{k}</Key></Object>" for k in keys) + "</Delete>").encode()
    md5 = _b64(hashlib.md5(body).digest())
    reply = client.request("POST", "/photos", "delete", headers={"content-md5": md5}, body=body, sign_body=True)
    assert reply.status == 200, reply.body
    assert sorted(d.findtext(f"{NS}Key") or "" for d in reply.xml().findall(f"{NS}Deleted")) == sorted(keys)
    assert _list(client, top, "/") == ([], [])
    assert _list(client, top) == ([], [])



# -- every operation name: never a 500, never a silent success ---------------------------------

#: Writes that really do what they say when they answer 2xx.
IMPLEMENTED_WRITES = frozenset({
    "PutObject", "DeleteObject", "DeleteObjects", "CreateBucket", "PutObjectAcl", "PutBucketAcl",
    "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "AbortMultipartUpload",
    "PutObjectTagging", "DeleteObjectTagging",  # tests/inproc/test_object_tagging.py
})


def _every_operation() -> list[tuple[str, str, str, bool]]:
    from s3orch.s3 import operations

    out = []
    for level, table in (("bucket", operations._BUCKET), ("object", operations._OBJECT)):
        for sub, methods in table.items():
            for method, (name, is_write) in methods.items():
                if name not in ("CreateBucket", "DeleteBucket"):  # they have their own tests
                    out.append((level, sub, method, is_write))
    return out


@pytest.mark.parametrize(("level", "sub", "method", "is_write"), _every_operation(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_no_operation_answers_500_or_succeeds_silently(
    client: Client, level: str, sub: str, method: str, is_write: bool
) -> None:
    from s3orch.s3 import operations

    path = "/photos" if level == "bucket" else _key("op-sweep.bin")
    if level == "object" and sub:
        _put(client, path, b"sweep")
    query = sub
    if sub == "uploadId":
        query = "uploadId=no-such-upload" + ("&partNumber=1" if method == "PUT" else "")
    elif sub in ("analytics", "inventory", "metrics", "intelligent-tiering"):
        query = f"{sub}&id=x"
    body = b"<Configuration/>" if method in ("PUT", "POST") and sub else b""
    reply = client.request(method, path, query, body=body, sign_body=True)
    name = operations._BUCKET[sub][method][0] if level == "bucket" else operations._OBJECT[sub][method][0]
    assert reply.status < 500 or reply.status == 501, (name, reply.status, reply.body[:300])
    if reply.status >= 400 and method != "HEAD":
        assert reply.code is not None, (name, reply.body[:300])  # an S3 XML error, with its code
    if is_write and 200 <= reply.status < 300:
        assert name in IMPLEMENTED_WRITES, f"{name} answered {reply.status} without doing anything"

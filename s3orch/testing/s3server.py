"""An in-memory S3 server that is a ``twisted.web`` resource, for tests without a server process.

Serve it through ``treq.testing.RequestTraversalAgent`` (or any ``Site``) and point an S3 client
at it: a test of code that talks S3 then runs in memory, on a ``task.Clock``, with no port,
process or thread.  It is strict where a real provider is, so a client bug shows up here as it
would against AWS:

* every request must be SigV4-signed by a known key for the server's region (header-signed or
  presigned; checked by :mod:`s3orch.s3.sigv4`, the code s3orch verifies its own clients with),
  within 15 minutes of the server's clock;
* ``x-amz-content-sha256`` (when it is a hash) and ``Content-MD5`` must match the body;
* errors are S3's ``<Error>`` XML documents with AWS's codes and statuses.

Operations: PutObject, GetObject (one byte range), HeadObject, DeleteObject, CopyObject
(server-side, same server), ListObjectsV2 (prefix, delimiter, start-after, continuation tokens,
``encoding-type=url``), HeadBucket, CreateBucket, CreateMultipartUpload, ListMultipartUploads
and AbortMultipartUpload.  Anything else -- UploadPart, CompleteMultipartUpload, aws-chunked
bodies, ListBuckets, versioning -- answers ``501 NotImplemented``.  Objects live in memory
whole: keep them small.

Test hooks: :meth:`InMemoryS3.put` seeds an object directly (any stored headers, e.g.
``Content-Encoding: gzip``), :meth:`InMemoryS3.create_upload` opens a multipart upload,
:meth:`InMemoryS3.redirect` makes a bucket answer with a redirect, and
:attr:`InMemoryS3.received` records every request (method, path, headers) as it arrived.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import itertools
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote_plus, unquote, unquote_to_bytes

from twisted.web.resource import Resource

from s3orch.s3 import sigv4
from s3orch.s3.errors import (
    BadDigest,
    InvalidDigest,
    InvalidRequest,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NotImplementedError_,
    S3Error,
    XAmzContentSHA256Mismatch,
)
from s3orch.s3.ranges import content_range, parse_range, unsatisfied_content_range

__all__ = ["InMemoryS3", "ReceivedRequest", "StoredObject", "Upload"]

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"

#: Stored with an object and sent back on GET/HEAD, as S3 keeps them.
_STORED_HEADERS = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-type",
    "expires",
)


class SecondsClock(Protocol):
    """What the server needs of a clock: ``IReactorTime.seconds`` (a ``task.Clock`` will do)."""

    def seconds(self) -> float: ...


class _WallClock:
    def seconds(self) -> float:
        return time.time()


@dataclass
class StoredObject:
    """One object: its bytes, its MD5 ETag (hex, unquoted) and the headers stored with it."""

    data: bytes
    etag: str
    last_modified: float
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "binary/octet-stream")


@dataclass(frozen=True)
class Upload:
    """An open multipart upload (only created, listed and aborted here)."""

    key: str
    upload_id: str
    initiated: float


@dataclass(frozen=True)
class ReceivedRequest:
    """A request as it arrived: header names lower-case, values as sent."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, Sequence[str]]
    body_length: int

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def signed_headers(self) -> tuple[str, ...]:
        """The SignedHeaders list of a header-signed request (empty otherwise)."""
        auth = self.header("authorization")
        if auth is None:
            return ()
        return sigv4.parse_authorization_header(auth).signed_headers


def _http_date(seconds: float) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


def _iso_date(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))


def _xml(root: ET.Element) -> bytes:
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + document


def _element(tag: str, children: Iterable[tuple[str, str]] = ()) -> ET.Element:
    element = ET.Element(tag, xmlns=S3_NAMESPACE)
    for name, text in children:
        ET.SubElement(element, name).text = text
    return element


class _Answer(Exception):
    """A non-error answer decided deep in a handler (a redirect)."""

    def __init__(self, status: int, headers: Sequence[tuple[str, str]], body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers
        self.body = body


class InMemoryS3(Resource):
    """An S3 endpoint over dicts (see the module docstring for what it answers).

    ``credentials`` maps access key id -> secret key; ``clock`` gives "now" for signature
    skew and Last-Modified (default: the wall clock).
    """

    isLeaf = True

    def __init__(
        self,
        credentials: Mapping[str, str],
        *,
        region: str = "us-east-1",
        clock: SecondsClock | None = None,
        buckets: Iterable[str] = (),
        max_skew: float = 900.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # twisted.web is unannotated
        self.credentials = dict(credentials)
        self.region = region
        self.clock: SecondsClock = clock if clock is not None else _WallClock()
        self.max_skew = max_skew
        self.buckets: dict[str, dict[str, StoredObject]] = {}
        self.uploads: dict[str, dict[str, Upload]] = {}
        self.received: list[ReceivedRequest] = []
        self._redirects: dict[str, tuple[int, str]] = {}
        self._ids = itertools.count(1)
        for name in buckets:
            self.create_bucket(name)

    # --- test hooks -------------------------------------------------------------------------

    def create_bucket(self, name: str) -> None:
        self.buckets.setdefault(name, {})
        self.uploads.setdefault(name, {})

    def put(self, bucket: str, key: str, data: bytes, headers: Mapping[str, str] | None = None) -> StoredObject:
        """Store an object directly (no request), with ``headers`` sent back on GET and HEAD."""
        stored = StoredObject(
            data,
            hashlib.md5(data).hexdigest(),
            self.clock.seconds(),
            {k.lower(): v for k, v in (headers or {}).items()},
        )
        self.buckets[bucket][key] = stored
        return stored

    def create_upload(self, bucket: str, key: str) -> Upload:
        """Open a multipart upload directly (what CreateMultipartUpload does)."""
        upload = Upload(key, f"upload-{next(self._ids):08d}", self.clock.seconds())
        self.uploads[bucket][upload.upload_id] = upload
        return upload

    def objects(self, bucket: str) -> dict[str, StoredObject]:
        """The objects of ``bucket`` by key (the live dict)."""
        return self.buckets[bucket]

    def redirect(self, bucket: str, location: str, status: int = 307) -> None:
        """Answer every request for ``bucket`` with ``status`` and ``Location: location``
        (S3 sends 301 PermanentRedirect or 307 TemporaryRedirect for a bucket elsewhere)."""
        self._redirects[bucket] = (status, location)

    # --- twisted.web --------------------------------------------------------------------------

    def render(self, request: Any) -> bytes:
        """Answer one request (``request`` is a ``twisted.web.server.Request``, unannotated: Any)."""
        request_id = f"mem{next(self._ids):08d}"
        request.setHeader(b"x-amz-request-id", request_id.encode())
        request.setHeader(b"server", b"s3orch-inmemory")
        method = request.method.decode("ascii", "replace")
        raw_path, _, raw_query = request.uri.partition(b"?")
        try:
            status, headers, body = self._handle(request, method, raw_path, raw_query)
        except _Answer as answer:
            status, headers, body = answer.status, list(answer.headers), answer.body
        except S3Error as exc:
            status = exc.status
            headers = [("content-type", "application/xml"), *exc.headers]
            body = exc.to_xml(request_id, raw_path.decode("utf-8", "replace"))
        request.setResponseCode(status)
        for name, value in headers:
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        if method == "HEAD":
            request.setHeader(b"content-length", str(len(body)).encode())
            return b""
        return body

    # --- dispatch -----------------------------------------------------------------------------

    def _handle(
        self, request: Any, method: str, raw_path: bytes, raw_query: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        query = sigv4.parse_query(raw_query)
        headers: dict[str, list[str]] = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            headers.setdefault(name.decode("latin-1").lower(), []).extend(
                v.decode("latin-1") for v in values
            )
        content = request.content
        body = content.read() if content is not None else b""
        path = raw_path.decode("utf-8", "replace")
        self.received.append(ReceivedRequest(method, path, tuple(query), headers, len(body)))
        auth = sigv4.authenticate(
            sigv4.SignedRequest(method, raw_path, query, headers),
            self.credentials.get,
            self.clock.seconds(),
            self.max_skew,
            regions=(self.region,),
        )
        self._check_payload(auth.payload_hash, headers, body)
        bucket, key = self._address(raw_path, headers)
        if bucket is None:
            raise NotImplementedError_("ListBuckets is not implemented by this in-memory server.")
        if method == "PUT" and key is None and not query:
            self.create_bucket(bucket)
            return 200, [("location", f"/{bucket}")], b""
        if bucket not in self.buckets:
            raise NoSuchBucket(BucketName=bucket)
        if bucket in self._redirects:
            status, location = self._redirects[bucket]
            code = "PermanentRedirect" if status == 301 else "TemporaryRedirect"
            document = _xml(
                _element(
                    "Error",
                    [("Code", code), ("Message", "Please re-send this request to the specified endpoint."),
                     ("Endpoint", location)],
                )
            )
            raise _Answer(status, [("location", location), ("content-type", "application/xml")], document)
        params = dict(query)
        if key is None:
            return self._bucket_operation(method, bucket, params)
        return self._object_operation(method, bucket, key, params, headers, body)

    def _address(self, raw_path: bytes, headers: Mapping[str, Sequence[str]]) -> tuple[str | None, str | None]:
        """(bucket, key) from a virtual-hosted Host (``bucket.host``) or else the path."""
        host = (headers.get("host") or [""])[0].lower()
        first = host.split(".", 1)[0]
        if "." in host and first in self.buckets:
            key = unquote_to_bytes(raw_path[1:]).decode("utf-8", "surrogateescape")
            return first, key or None
        parts = raw_path.split(b"/", 2)
        if len(parts) < 2 or not parts[1]:
            return None, None
        bucket = unquote(parts[1].decode("utf-8", "replace"))
        if len(parts) < 3 or not parts[2]:
            return bucket, None
        return bucket, unquote_to_bytes(parts[2]).decode("utf-8", "surrogateescape")

    @staticmethod
    def _check_payload(claim: str, headers: Mapping[str, Sequence[str]], body: bytes) -> None:
        if claim.startswith("STREAMING-"):
            raise NotImplementedError_("aws-chunked bodies are not implemented by this in-memory server.")
        if claim != sigv4.UNSIGNED_PAYLOAD and claim != hashlib.sha256(body).hexdigest():
            raise XAmzContentSHA256Mismatch(
                ClientComputedContentSHA256=claim,
                S3ComputedContentSHA256=hashlib.sha256(body).hexdigest(),
            )
        md5 = headers.get("content-md5")
        if md5:
            try:
                digest = base64.b64decode(md5[0].strip(), validate=True)
            except (binascii.Error, ValueError):
                raise InvalidDigest(**{"Content-MD5": md5[0]}) from None
            if len(digest) != 16:
                raise InvalidDigest(**{"Content-MD5": md5[0]})
            if digest != hashlib.md5(body).digest():
                raise BadDigest(
                    ExpectedDigest=digest.hex(), CalculatedDigest=hashlib.md5(body).hexdigest()
                )

    # --- buckets -----------------------------------------------------------------------------

    def _bucket_operation(
        self, method: str, bucket: str, params: Mapping[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if method == "HEAD" and not params:
            return 200, [], b""
        if method == "GET" and "uploads" in params:
            return self._list_uploads(bucket, params.get("prefix", ""))
        if method == "GET" and params.get("list-type") == "2":
            return self._list_v2(bucket, params)
        raise NotImplementedError_(
            f"{method} on a bucket with {sorted(params)} is not implemented by this in-memory server."
        )

    def _list_v2(self, bucket: str, params: Mapping[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        prefix = params.get("prefix", "")
        delimiter = params.get("delimiter", "")
        url = params.get("encoding-type", "").lower() == "url"
        try:
            max_keys = min(int(params.get("max-keys", "1000")), 1000)
        except ValueError:
            raise InvalidRequest("max-keys must be an integer") from None
        token = params.get("continuation-token")
        after = params.get("start-after", "")
        if token is not None:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode("utf-8", "surrogateescape")
            except (binascii.Error, ValueError):
                raise InvalidRequest("The continuation token provided is incorrect") from None
        entries: list[tuple[str, StoredObject | None]] = []  # None: a common prefix
        rolled_up: set[str] = set()
        truncated = False
        for key in sorted(k for k in self.buckets[bucket] if k.startswith(prefix) and k > after):
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            rolled = key[: cut + len(delimiter)] if cut >= 0 else None
            if rolled is not None and rolled in rolled_up:
                continue
            if len(entries) >= max_keys:
                truncated = True
                break
            if rolled is not None:
                rolled_up.add(rolled)
                entries.append((rolled, None))
            else:
                entries.append((key, self.buckets[bucket][key]))
        # The next page starts after the last entry; after a common prefix, after every key under it.
        last = entries[-1][0] + ("\U0010ffff" if entries and entries[-1][1] is None else "") if entries else ""

        def encode(value: str) -> str:
            return quote_plus(value, safe="/") if url else value

        root = _element("ListBucketResult", [("Name", bucket), ("Prefix", encode(prefix))])
        if delimiter:
            ET.SubElement(root, "Delimiter").text = encode(delimiter)
        for name, text in (("MaxKeys", str(max_keys)), ("KeyCount", str(len(entries))),
                           ("IsTruncated", "true" if truncated else "false")):
            ET.SubElement(root, name).text = text
        if url:
            ET.SubElement(root, "EncodingType").text = "url"
        if token is not None:
            ET.SubElement(root, "ContinuationToken").text = token
        if truncated:
            next_token = base64.urlsafe_b64encode(last.encode("utf-8", "surrogateescape")).decode()
            ET.SubElement(root, "NextContinuationToken").text = next_token
        for name, stored in entries:
            if stored is None:
                common = ET.SubElement(root, "CommonPrefixes")
                ET.SubElement(common, "Prefix").text = encode(name)
                continue
            item = ET.SubElement(root, "Contents")
            for tag, text in (
                ("Key", encode(name)),
                ("LastModified", _iso_date(stored.last_modified)),
                ("ETag", f'"{stored.etag}"'),
                ("Size", str(len(stored.data))),
                ("StorageClass", "STANDARD"),
            ):
                ET.SubElement(item, tag).text = text
        return 200, [("content-type", "application/xml")], _xml(root)

    def _list_uploads(self, bucket: str, prefix: str) -> tuple[int, list[tuple[str, str]], bytes]:
        root = _element("ListMultipartUploadsResult", [("Bucket", bucket), ("Prefix", prefix)])
        ET.SubElement(root, "IsTruncated").text = "false"
        for upload in sorted(self.uploads[bucket].values(), key=lambda u: (u.key, u.initiated)):
            if not upload.key.startswith(prefix):
                continue
            item = ET.SubElement(root, "Upload")
            for tag, text in (
                ("Key", upload.key),
                ("UploadId", upload.upload_id),
                ("Initiated", _iso_date(upload.initiated)),
                ("StorageClass", "STANDARD"),
            ):
                ET.SubElement(item, tag).text = text
        return 200, [("content-type", "application/xml")], _xml(root)

    # --- objects -----------------------------------------------------------------------------

    def _object_operation(
        self,
        method: str,
        bucket: str,
        key: str,
        params: Mapping[str, str],
        headers: Mapping[str, Sequence[str]],
        body: bytes,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        objects = self.buckets[bucket]
        if method == "POST" and "uploads" in params:
            return self._create_upload(bucket, key)
        if method == "DELETE" and "uploadId" in params:
            if self.uploads[bucket].pop(params["uploadId"], None) is None:
                raise NoSuchUpload(UploadId=params["uploadId"])
            return 204, [], b""
        if params:
            raise NotImplementedError_(
                f"{method} on an object with {sorted(params)} is not implemented by this in-memory server."
            )
        if method == "PUT" and "x-amz-copy-source" in headers:
            return self._copy(bucket, key, headers["x-amz-copy-source"][0])
        if method == "PUT":
            stored_headers = {
                n: v[0] for n, v in headers.items() if n in _STORED_HEADERS or n.startswith("x-amz-meta-")
            }
            stored = self.put(bucket, key, body, stored_headers)
            return 200, [("etag", f'"{stored.etag}"')], b""
        if method == "DELETE":
            objects.pop(key, None)
            return 204, [], b""
        if method in ("GET", "HEAD"):
            found = objects.get(key)
            if found is None:
                raise NoSuchKey(Key=key)
            ranges = headers.get("range")
            return self._serve(method, found, ranges[0] if ranges else None)
        raise NotImplementedError_(f"{method} on an object is not implemented by this in-memory server.")

    def _serve(self, method: str, stored: StoredObject, range_header: str | None) -> tuple[int, list[tuple[str, str]], bytes]:
        size = len(stored.data)
        out = [
            ("etag", f'"{stored.etag}"'),
            ("last-modified", _http_date(stored.last_modified)),
            ("accept-ranges", "bytes"),
            ("content-type", stored.content_type),
            *((n, v) for n, v in stored.headers.items() if n != "content-type"),
        ]
        try:
            byte_range = parse_range(range_header, size) if method == "GET" else None
        except S3Error as exc:
            exc.with_headers([("content-range", unsatisfied_content_range(size))])
            raise
        if byte_range is None:
            return 200, out, stored.data
        start, end = byte_range
        return 206, [*out, ("content-range", content_range(start, end, size))], stored.data[start : end + 1]

    def _copy(self, bucket: str, key: str, source: str) -> tuple[int, list[tuple[str, str]], bytes]:
        source_bucket, _, source_key = unquote(source.partition("?")[0]).lstrip("/").partition("/")
        if source_bucket not in self.buckets:
            raise NoSuchBucket(BucketName=source_bucket)
        original = self.buckets[source_bucket].get(source_key)
        if original is None:
            raise NoSuchKey(Key=source_key)
        stored = self.put(bucket, key, original.data, original.headers)
        result = _element(
            "CopyObjectResult", [("LastModified", _iso_date(stored.last_modified)), ("ETag", f'"{stored.etag}"')]
        )
        return 200, [("content-type", "application/xml")], _xml(result)

    def _create_upload(self, bucket: str, key: str) -> tuple[int, list[tuple[str, str]], bytes]:
        upload = self.create_upload(bucket, key)
        result = _element(
            "InitiateMultipartUploadResult", [("Bucket", bucket), ("Key", key), ("UploadId", upload.upload_id)]
        )
        return 200, [("content-type", "application/xml")], _xml(result)

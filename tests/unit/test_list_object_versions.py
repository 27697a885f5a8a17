"""ListObjectVersions and version ids through the front door, over an in-memory listing.

The buckets are never versioned, so every current object is one version, ``null``: a walk
of the pages by their NextKeyMarker/NextVersionIdMarker lists each key once, and a version id
other than ``null`` is refused at header time (nothing read, nothing deleted).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import quote

import pytest

from s3orch.core.objects import DeleteOutcome
from s3orch.s3.xml import NS
from s3orch.store.interface import ListPage, ObjectRecord
from s3orch.store.records import ListEntry
from tests.unit.frontdoor_fakes import FrontDoor, signed_request, status_of

ETAG = "0123456789abcdef0123456789abcdef"
KEYS = ["a", "b/1", "b/2", "c", "d/x/1", "e", "f&g"]
_NS = "{" + NS + "}"


def listing_over(keys: list[str]) -> FrontDoor:
    """A front door whose store lists ``keys`` with the store's semantics (start after a key
    or a common prefix, prefix, delimiter, max-keys, truncation)."""
    door = FrontDoor()

    async def list_keys(bucket: str, prefix: str, delimiter: str, start: str, max_keys: int) -> ListPage:
        entries: list[ListEntry] = []
        prefixes: list[str] = []
        last = None
        for key in sorted(keys):
            if not key.startswith(prefix) or key <= start or (start.endswith(delimiter or "\0") and key.startswith(start)):
                continue
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            item = key[: cut + len(delimiter)] if cut >= 0 else key
            if item == last:
                continue
            if len(entries) + len(prefixes) == max_keys:
                return ListPage(tuple(entries), tuple(prefixes), True, last)
            if cut >= 0:
                prefixes.append(item)
            else:
                entries.append(ListEntry(key, len(key), ETAG, 1_700_000_000.0))
            last = item
        return ListPage(tuple(entries), tuple(prefixes), False, None)

    door.objects.list = list_keys  # type: ignore[method-assign]
    return door


def get(door: FrontDoor, query: str) -> tuple[int | None, bytes]:
    _, transport = door.send(signed_request("GET", "/photos?versions" + query))
    body = transport.value()
    return status_of(transport), body.split(b"\r\n\r\n", 1)[1]


def walk(door: FrontDoor, query: str) -> tuple[list[str], list[str], int]:
    """Follow the pages as botocore's paginator does: (keys, common prefixes, pages)."""
    keys: list[str] = []
    prefixes: list[str] = []
    markers = ""
    for pages in range(1, 20):
        status, body = get(door, query + markers)
        assert status == 200, body
        root = ET.fromstring(body)
        assert root.tag == _NS + "ListVersionsResult"
        for version in root.iter(_NS + "Version"):
            assert version.findtext(_NS + "VersionId") == "null"
            assert version.findtext(_NS + "IsLatest") == "true"
            keys.append(version.findtext(_NS + "Key") or "")
        prefixes.extend(p.findtext(_NS + "Prefix") or "" for p in root.iter(_NS + "CommonPrefixes"))
        if root.findtext(_NS + "IsTruncated") != "true":
            return keys, prefixes, pages
        markers = "&key-marker=" + quote(root.findtext(_NS + "NextKeyMarker") or "", safe="")
        next_version = root.findtext(_NS + "NextVersionIdMarker")
        if next_version is not None:
            markers += "&version-id-marker=" + next_version
    raise AssertionError("the pages never ended")


def test_pages_of_three_list_every_key_once_as_its_null_version() -> None:
    keys, prefixes, pages = walk(listing_over(KEYS), "&max-keys=3")
    assert keys == sorted(KEYS) and prefixes == [] and pages == 3


def test_a_truncated_page_names_the_next_key_and_the_null_version() -> None:
    status, body = get(listing_over(KEYS), "&max-keys=2&key-marker=a&version-id-marker=null")
    assert status == 200
    assert (
        b"<Name>photos</Name><Prefix></Prefix><KeyMarker>a</KeyMarker><VersionIdMarker>null</VersionIdMarker>"
        b"<NextKeyMarker>b/2</NextKeyMarker><NextVersionIdMarker>null</NextVersionIdMarker>"
        b"<MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated><Version><Key>b/1</Key>"
    ) in body


def test_delimiter_pages_roll_keys_into_common_prefixes_and_resume_after_them() -> None:
    door = listing_over(KEYS)
    keys, prefixes, _ = walk(door, "&delimiter=/&max-keys=2")
    assert keys == ["a", "c", "e", "f&g"] and prefixes == ["b/", "d/"]
    status, body = get(door, "&delimiter=/&max-keys=2")
    # The page ends on a common prefix: it resumes after it by key alone.
    assert b"<NextKeyMarker>b/</NextKeyMarker><MaxKeys>2</MaxKeys><Delimiter>/</Delimiter>" in body
    assert b"NextVersionIdMarker" not in body


def test_url_encoding_covers_keys_markers_and_prefixes() -> None:
    status, body = get(listing_over(KEYS), "&encoding-type=url&prefix=f%26&key-marker=e%20")
    assert status == 200
    assert b"<Prefix>f%26</Prefix><KeyMarker>e%20</KeyMarker>" in body
    assert b"<EncodingType>url</EncodingType>" in body and b"<Key>f%26g</Key>" in body


def test_max_keys_zero_reads_nothing() -> None:
    door = FrontDoor()
    door.objects.list = None  # type: ignore[assignment,method-assign]
    status, body = get(door, "&max-keys=0")
    assert status == 200 and b"<IsTruncated>false</IsTruncated>" in body and b"<Version>" not in body


@pytest.mark.parametrize(("query", "message"), [
    ("&version-id-marker=null", b"A version-id marker cannot be specified without a key marker."),
    ("&key-marker=a&version-id-marker=", b"A version-id marker cannot be empty."),
    ("&key-marker=a&version-id-marker=3HL4kqtJlcpXroDTDmJ", b"Invalid version id specified"),
    ("&max-keys=-1", b"Argument maxKeys must be an integer between 0 and 2147483647"),
])
def test_bad_markers_are_400_invalid_argument_before_any_listing(query: str, message: bytes) -> None:
    door = FrontDoor()
    door.objects.list = None  # type: ignore[assignment,method-assign]  # refused before the store
    status, body = get(door, query)
    assert status == 400
    assert b"<Code>InvalidArgument</Code>" in body and b"<Message>" + message + b"</Message>" in body


def stored(door: FrontDoor) -> None:
    door.objects.store(ObjectRecord("photos", "k", "w1", 5, ETAG, 1_700_000_000.0), b"hello")


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
@pytest.mark.parametrize(("version_id", "message"), [
    ("", b"Version id cannot be the empty string"),
    ("NULL", b"Invalid version id specified"),
    ("3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY", b"Invalid version id specified"),
])
def test_a_version_id_other_than_null_is_400_and_touches_nothing(method: str, version_id: str, message: bytes) -> None:
    door = FrontDoor()
    stored(door)
    door.objects.head = None  # type: ignore[assignment,method-assign]  # refused before any read
    door.objects.delete = None  # type: ignore[attr-defined]  # ... or delete
    _, transport = door.send(signed_request(method, "/photos/k?versionId=" + quote(version_id, safe="")))
    assert status_of(transport) == 400
    if method != "HEAD":
        assert b"<Code>InvalidArgument</Code>" in transport.value() and message in transport.value()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_null_version_id_reads_the_current_object(method: str) -> None:
    door = FrontDoor()
    stored(door)
    _, transport = door.send(signed_request(method, "/photos/k?versionId=null"))
    assert status_of(transport) == 200
    assert transport.value().endswith(b"hello" if method == "GET" else b"\r\n\r\n")


def test_delete_objects_deletes_null_versions_and_refuses_any_other() -> None:
    door = FrontDoor()
    deleted: list[str] = []

    async def delete_many(bucket: str, keys: list[str], request_id: str = "") -> list[DeleteOutcome]:
        deleted.extend(keys)
        return [DeleteOutcome(key, None) for key in keys]

    door.objects.delete_many = delete_many  # type: ignore[attr-defined]
    body = (
        b"<Delete><Object><Key>a</Key><VersionId>null</VersionId></Object><Object><Key>b</Key></Object>"
        b"<Object><Key>c</Key><VersionId>v2</VersionId></Object></Delete>"
    )
    _, transport = door.send(signed_request("POST", "/photos?delete", body))
    assert status_of(transport) == 200
    assert deleted == ["a", "b"]
    answer = transport.value()
    assert b"<Deleted><Key>a</Key><VersionId>null</VersionId></Deleted><Deleted><Key>b</Key></Deleted>" in answer
    assert (
        b"<Error><Key>c</Key><VersionId>v2</VersionId><Code>InvalidArgument</Code>"
        b"<Message>Invalid version id specified</Message></Error>"
    ) in answer


@pytest.mark.parametrize(("method", "subresource"), [
    ("GET", "acl&"), ("GET", "tagging&"), ("DELETE", "tagging&"), ("GET", "attributes&"),
])
def test_object_subresources_refuse_a_version_id_other_than_null(method: str, subresource: str) -> None:
    door = FrontDoor()
    stored(door)
    door.objects.head = None  # type: ignore[assignment,method-assign]  # refused before any read
    door.objects.set_tags = None  # type: ignore[attr-defined]  # ... or write
    _, transport = door.send(signed_request(method, f"/photos/k?{subresource}versionId=v1",
                                            headers={"x-amz-object-attributes": "ETag"}))
    assert status_of(transport) == 400
    assert b"<Message>Invalid version id specified</Message>" in transport.value()


def test_the_null_version_id_addresses_the_current_object_of_a_subresource() -> None:
    door = FrontDoor()
    stored(door)
    _, transport = door.send(signed_request("GET", "/photos/k?acl&versionId=null"))
    assert status_of(transport) == 200 and b"<AccessControlPolicy" in transport.value()


def test_a_copy_source_version_other_than_null_is_refused_before_the_source_is_read() -> None:
    door = FrontDoor()
    stored(door)
    door.objects.head = None  # type: ignore[assignment,method-assign]  # refused before any read
    _, transport = door.send(signed_request("PUT", "/photos/copy",
                                            headers={"x-amz-copy-source": "/photos/k?versionId=v1"}))
    assert status_of(transport) == 400
    assert b"<Code>InvalidRequest</Code>" in transport.value()

"""S3 XML: what we emit is what botocore parses; what we parse refuses junk and attacks.

The round-trip tests run a real botocore S3 client whose HTTP send is replaced
by our document, so the whole client pipeline (parser, encoding-type=url
decoding, GetBucketLocation's special handler, error parsing) judges our XML.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import botocore.session
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3orch.s3 import errors
from s3orch.s3 import xml as s3xml
from s3orch.s3.errors import MalformedXML

T = 1255369830.0  # 2009-10-12T17:50:30Z
T_DT = datetime.datetime(2009, 10, 12, 17, 50, 30, tzinfo=datetime.UTC)
OWNER = ("75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a", "owner")


@dataclass(frozen=True)
class Obj:
    key: str
    size: int = 3
    etag: str = '"acbd18db4cc2f85cedef654fccc4a4d8"'
    last_modified: float = T


@dataclass(frozen=True)
class Part:
    part_number: int
    etag: str
    size: int
    last_modified: float = T


@dataclass(frozen=True)
class Upload:
    key: str
    upload_id: str
    initiated: float = T


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


class FakeS3:
    """A botocore S3 client whose every request is answered with a canned response."""

    def __init__(self) -> None:
        session = botocore.session.get_session()
        self.client = session.create_client(
            "s3",
            region_name="us-east-1",
            endpoint_url="http://gateway.test:9000",
            aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key="secret",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"total_max_attempts": 1},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        self.client.meta.events.register("before-send.s3", self._send)
        self.status = 200
        self.body = b""
        self.headers: dict[str, str] = {}
        self.requests: list[AWSPreparedRequest] = []

    def respond(self, body: bytes, status: int = 200, **headers: str) -> FakeS3:
        self.body, self.status, self.headers = body, status, headers
        return self

    def _send(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        self.requests.append(request)
        headers = {"Content-Type": "application/xml", **self.headers}
        return AWSResponse(request.url, self.status, headers, _Raw(self.body))

    @property
    def last_query(self) -> dict[str, str]:
        return dict(
            parse_qsl(urlsplit(self.requests[-1].url).query, keep_blank_values=True)
        )


@pytest.fixture(scope="module")
def s3() -> FakeS3:
    return FakeS3()


# ---------------------------------------------------------------------------
# round trips through botocore


NASTY_KEYS = [
    "plain.txt",
    "with space/and+plus",
    "amp&lt<gt>\"quote'apos",
    "unicode/\u00e9\u20ac\U0001f600",
    "ctrl\x01\x02\x1f\x7f",
    "cr\rlf\ntab\t",
    "percent%20literal",
    "/leading//double/",
    "trailing ",
]


def test_list_objects_v2_round_trips_through_botocore_with_url_encoding(
    s3: FakeS3,
) -> None:
    entries = [Obj(k, size=i) for i, k in enumerate(NASTY_KEYS)]
    s3.respond(
        s3xml.list_objects_v2(
            "bkt",
            "p re+fix",
            "/",
            1000,
            len(entries) + 1,
            True,
            "opaque-token",
            "next+token",
            "start after+",
            entries,
            ["com mon+/"],
            "url",
            True,
            OWNER,
        )
    )
    out = s3.client.list_objects_v2(
        Bucket="bkt",
        Prefix="p re+fix",
        Delimiter="/",
        ContinuationToken="opaque-token",
        StartAfter="start after+",
        FetchOwner=True,
    )
    assert s3.last_query["encoding-type"] == "url"  # botocore asked for it itself
    assert [c["Key"] for c in out["Contents"]] == NASTY_KEYS
    assert [c["Size"] for c in out["Contents"]] == list(range(len(NASTY_KEYS)))
    first = out["Contents"][0]
    assert first["ETag"] == '"acbd18db4cc2f85cedef654fccc4a4d8"'
    assert first["LastModified"] == T_DT
    assert first["StorageClass"] == "STANDARD"
    assert first["Owner"] == {"ID": OWNER[0], "DisplayName": OWNER[1]}
    assert out["CommonPrefixes"] == [{"Prefix": "com mon+/"}]
    assert out["Prefix"] == "p re+fix"
    assert out["Delimiter"] == "/"
    assert out["StartAfter"] == "start after+"
    assert out["ContinuationToken"] == "opaque-token"
    assert out["NextContinuationToken"] == "next+token"
    assert out["KeyCount"] == len(NASTY_KEYS) + 1
    assert out["MaxKeys"] == 1000
    assert out["IsTruncated"] is True
    assert out["Name"] == "bkt"


def test_list_objects_v2_without_fetch_owner_has_no_owner_and_no_next_token(
    s3: FakeS3,
) -> None:
    body = s3xml.list_objects_v2(
        "bkt",
        "",
        None,
        2,
        1,
        False,
        None,
        "ignored",
        None,
        [Obj("k")],
        [],
        None,
        False,
        OWNER,
    )
    assert b"<Owner>" not in body
    assert b"NextContinuationToken" not in body
    assert b"<Delimiter>" not in body
    out = s3.respond(body).client.list_objects_v2(Bucket="bkt", EncodingType="url")
    assert out["Contents"][0]["Key"] == "k"
    assert "Owner" not in out["Contents"][0]
    assert out["IsTruncated"] is False


def test_list_objects_v2_element_order_matches_aws() -> None:
    body = s3xml.list_objects_v2(
        "b", "p", "/", 5, 1, True, "c", "n", "s", [Obj("k")], ["p/"], "url", True, OWNER
    ).decode()
    order = [
        "<Name>", "<Prefix>", "<StartAfter>", "<ContinuationToken>", "<NextContinuationToken>",
        "<KeyCount>", "<MaxKeys>", "<Delimiter>", "<EncodingType>", "<IsTruncated>",
        "<Contents>", "<CommonPrefixes>",
    ]  # fmt: skip
    positions = [body.index(tag) for tag in order]
    assert positions == sorted(positions)
    contents = body[body.index("<Contents>") :]
    inner = ["<Key>", "<LastModified>", "<ETag>", "<Size>", "<Owner>", "<StorageClass>"]
    positions = [contents.index(tag) for tag in inner]
    assert positions == sorted(positions)
    assert body.startswith(
        '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns='
    )


def test_list_objects_v1_round_trips_through_botocore(s3: FakeS3) -> None:
    s3.respond(
        s3xml.list_objects_v1(
            "bkt",
            "a b",
            "mark er",
            "/",
            100,
            True,
            "next mark+",
            [Obj(k) for k in NASTY_KEYS],
            ["a b/c+/"],
            "url",
            owner=OWNER,
        )
    )
    out = s3.client.list_objects(
        Bucket="bkt", Prefix="a b", Marker="mark er", Delimiter="/"
    )
    assert s3.last_query["encoding-type"] == "url"
    assert [c["Key"] for c in out["Contents"]] == NASTY_KEYS
    assert out["Contents"][0]["Owner"]["ID"] == OWNER[0]
    assert out["Marker"] == "mark er"
    assert out["NextMarker"] == "next mark+"
    assert out["CommonPrefixes"] == [{"Prefix": "a b/c+/"}]
    # AWS url-encodes Prefix in v1 too, and botocore does not decode it.
    assert out["Prefix"] == "a%20b"
    assert out["IsTruncated"] is True
    assert out["MaxKeys"] == 100


def test_listing_without_url_encoding_escapes_xml(s3: FakeS3) -> None:
    keys = ["a&b", "<tag>", 'q"uote', "cr\rin"]
    body = s3xml.list_objects_v1(
        "b", "", "", None, 1000, False, None, map(Obj, keys), [], None
    )
    out = s3.respond(body).client.list_objects(Bucket="b", EncodingType="url")
    assert [c["Key"] for c in out["Contents"]] == keys


def test_invalid_encoding_type_is_invalid_argument() -> None:
    with pytest.raises(errors.InvalidArgument):
        s3xml.list_objects_v2(
            "b", "", None, 1, 0, False, None, None, None, [], [], "gzip"
        )


xml_key = st.text(st.characters(codec="utf-8"), min_size=1, max_size=60)


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(xml_key, min_size=1, max_size=5), xml_key)
def test_any_keys_survive_a_botocore_listing(
    s3: FakeS3, keys: list[str], prefix: str
) -> None:
    body = s3xml.list_objects_v2(
        "b", prefix, None, 1000, len(keys), False, None, None, None,
        [Obj(k) for k in keys], [prefix], "url", False, None,
    )  # fmt: skip
    out = s3.respond(body).client.list_objects_v2(Bucket="b")
    assert [c["Key"] for c in out["Contents"]] == keys
    assert out["Prefix"] == prefix
    assert out["CommonPrefixes"] == [{"Prefix": prefix}]


def test_list_buckets_round_trip(s3: FakeS3) -> None:
    s3.respond(s3xml.list_buckets(OWNER[0], OWNER[1], [("one", T), ("two", T_DT)]))
    out = s3.client.list_buckets()
    assert out["Owner"] == {"ID": OWNER[0], "DisplayName": OWNER[1]}
    assert out["Buckets"] == [
        {"Name": "one", "CreationDate": T_DT},
        {"Name": "two", "CreationDate": T_DT},
    ]


def test_delete_result_round_trip(s3: FakeS3) -> None:
    s3.respond(
        s3xml.delete_result(
            ["a", "b&c"], [("x<y", "InternalError", "boom & bust")], False
        )
    )
    out = s3.client.delete_objects(
        Bucket="b", Delete={"Objects": [{"Key": k} for k in ("a", "b&c", "x<y")]}
    )
    assert out["Deleted"] == [{"Key": "a"}, {"Key": "b&c"}]
    assert out["Errors"] == [
        {"Key": "x<y", "Code": "InternalError", "Message": "boom & bust"}
    ]


def test_quiet_delete_result_lists_only_errors(s3: FakeS3) -> None:
    body = s3xml.delete_result(["a"], [("b", "AccessDenied", "Access Denied")], True)
    assert b"<Deleted>" not in body
    out = s3.respond(body).client.delete_objects(
        Bucket="b", Delete={"Objects": [{"Key": "a"}, {"Key": "b"}], "Quiet": True}
    )
    assert "Deleted" not in out
    assert out["Errors"][0]["Code"] == "AccessDenied"


def test_copy_results_round_trip(s3: FakeS3) -> None:
    s3.respond(s3xml.copy_object_result("abc", T + 0.9))
    out = s3.client.copy_object(Bucket="b", Key="k", CopySource="b/src")
    assert out["CopyObjectResult"] == {"ETag": '"abc"', "LastModified": T_DT}
    s3.respond(s3xml.copy_part_result('"def"', T))
    out = s3.client.upload_part_copy(
        Bucket="b", Key="k", CopySource="b/src", UploadId="u", PartNumber=1
    )
    assert out["CopyPartResult"] == {"ETag": '"def"', "LastModified": T_DT}


@pytest.mark.parametrize(
    ("region", "expected"), [("us-east-1", None), ("eu-west-1", "eu-west-1")]
)
def test_location_constraint_round_trip(
    s3: FakeS3, region: str, expected: str | None
) -> None:
    out = s3.respond(s3xml.location_constraint(region)).client.get_bucket_location(
        Bucket="b"
    )
    assert out.get("LocationConstraint") == expected


def test_versioning_round_trip(s3: FakeS3) -> None:
    out = s3.respond(s3xml.versioning_configuration()).client.get_bucket_versioning(
        Bucket="b"
    )
    assert "Status" not in out
    body = s3xml.versioning_configuration("Enabled")
    out = s3.respond(body).client.get_bucket_versioning(Bucket="b")
    assert out["Status"] == "Enabled"


def test_acl_round_trip(s3: FakeS3) -> None:
    s3.respond(s3xml.access_control_policy(*OWNER))
    for out in (
        s3.client.get_bucket_acl(Bucket="b"),
        s3.client.get_object_acl(Bucket="b", Key="k"),
    ):
        assert out["Owner"] == {"ID": OWNER[0], "DisplayName": OWNER[1]}
        assert out["Grants"] == [
            {
                "Grantee": {
                    "ID": OWNER[0],
                    "DisplayName": OWNER[1],
                    "Type": "CanonicalUser",
                },
                "Permission": "FULL_CONTROL",
            }
        ]


def test_tagging_round_trip(s3: FakeS3) -> None:
    tags = [("a", "1"), ("k&<", 'v"'), ("empty", "")]
    out = s3.respond(s3xml.tagging(tags)).client.get_object_tagging(Bucket="b", Key="k")
    assert [(t["Key"], t["Value"]) for t in out["TagSet"]] == tags
    out = s3.respond(s3xml.tagging([])).client.get_object_tagging(Bucket="b", Key="k")
    assert out["TagSet"] == []


def test_put_tagging_body_from_botocore_parses(s3: FakeS3) -> None:
    s3.respond(b"")
    s3.client.put_object_tagging(
        Bucket="b", Key="k", Tagging={"TagSet": [{"Key": "a b", "Value": "&"}]}
    )
    sent = s3.requests[-1].body
    assert isinstance(sent, bytes)
    assert s3xml.parse_tagging(sent) == [("a b", "&")]


def test_multipart_documents_round_trip(s3: FakeS3) -> None:
    body = s3xml.initiate_multipart_upload("b", "k &", "up-1")
    out = s3.respond(body).client.create_multipart_upload(Bucket="b", Key="k &")
    assert (out["Bucket"], out["Key"], out["UploadId"]) == ("b", "k &", "up-1")

    body = s3xml.complete_multipart_upload(
        "http://gw/b/k", "b", "k", "abc-2", [("ChecksumCRC32", "AAAAAA==")]
    )
    out = s3.respond(body).client.complete_multipart_upload(
        Bucket="b", Key="k", UploadId="up-1", MultipartUpload={"Parts": []}
    )
    assert out["ETag"] == '"abc-2"'
    assert out["Location"] == "http://gw/b/k"
    assert out["ChecksumCRC32"] == "AAAAAA=="

    body = s3xml.list_parts(
        "b",
        "k",
        "up-1",
        0,
        2,
        2,
        True,
        [Part(1, "e1", 5 << 20), Part(2, '"e2"', 7)],
        OWNER,
    )
    out = s3.respond(body).client.list_parts(Bucket="b", Key="k", UploadId="up-1")
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in out["Parts"]] == [
        (1, '"e1"', 5 << 20),
        (2, '"e2"', 7),
    ]
    assert out["Parts"][0]["LastModified"] == T_DT
    assert (out["NextPartNumberMarker"], out["MaxParts"], out["IsTruncated"]) == (
        2,
        2,
        True,
    )
    assert out["Initiator"]["ID"] == out["Owner"]["ID"] == OWNER[0]
    assert out["StorageClass"] == "STANDARD"

    body = s3xml.list_multipart_uploads(
        "b",
        [Upload("a b", "u1"), Upload("c+d", "u2")],
        owner=OWNER,
        prefix="",
        next_key_marker="c+d",
        next_upload_id_marker="u2",
        max_uploads=2,
        is_truncated=True,
        common_prefixes=["dir/"],
        delimiter="/",
    )
    out = s3.respond(body).client.list_multipart_uploads(Bucket="b", Delimiter="/")
    assert [(u["Key"], u["UploadId"], u["Initiated"]) for u in out["Uploads"]] == [
        ("a b", "u1", T_DT),
        ("c+d", "u2", T_DT),
    ]
    assert out["NextKeyMarker"] == "c+d"
    assert out["NextUploadIdMarker"] == "u2"
    assert out["IsTruncated"] is True
    assert out["MaxUploads"] == 2
    assert out["CommonPrefixes"] == [{"Prefix": "dir/"}]


def test_list_multipart_uploads_url_encoding() -> None:
    body = s3xml.list_multipart_uploads(
        "b", [Upload("a b+", "u")], owner=OWNER, encoding_type="url", key_marker="m n"
    )
    assert b"<Key>a%20b%2B</Key>" in body
    assert b"<KeyMarker>m%20n</KeyMarker>" in body
    assert b"<EncodingType>url</EncodingType>" in body


def test_object_attributes_round_trip(s3: FakeS3) -> None:
    body = s3xml.object_attributes(
        etag='"abc-2"',
        checksums=[("ChecksumSHA256", "c2hh"), ("ChecksumType", "COMPOSITE")],
        object_parts=s3xml.ObjectPartsInfo(
            total_parts_count=2,
            max_parts=1,
            next_part_number_marker=1,
            is_truncated=True,
            parts=[s3xml.ObjectPartInfo(1, 5 << 20, [("ChecksumSHA256", "cDE=")])],
        ),
        storage_class="STANDARD",
        object_size=(5 << 20) + 1,
    )
    assert b"<ETag>abc-2</ETag>" in body  # AWS: unquoted here
    out = s3.respond(body).client.get_object_attributes(
        Bucket="b",
        Key="k",
        ObjectAttributes=[
            "ETag",
            "Checksum",
            "ObjectParts",
            "StorageClass",
            "ObjectSize",
        ],
    )
    assert out["ETag"] == "abc-2"
    assert out["Checksum"] == {"ChecksumSHA256": "c2hh", "ChecksumType": "COMPOSITE"}
    assert out["ObjectParts"]["TotalPartsCount"] == 2
    assert out["ObjectParts"]["IsTruncated"] is True
    assert out["ObjectParts"]["Parts"] == [
        {"PartNumber": 1, "Size": 5 << 20, "ChecksumSHA256": "cDE="}
    ]
    assert out["StorageClass"] == "STANDARD"
    assert out["ObjectSize"] == (5 << 20) + 1


def test_object_attributes_only_what_was_asked() -> None:
    body = s3xml.object_attributes(object_size=3)
    assert body.endswith(b"<ObjectSize>3</ObjectSize></GetObjectAttributesResponse>")
    assert b"<ETag>" not in body and b"<StorageClass>" not in body


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.NoSuchKey(Key="a&b"), 404),
        (errors.InvalidRange(RangeRequested="bytes=9-", ActualObjectSize="1"), 416),
        (errors.MalformedXML(), 400),
        (errors.PreconditionFailed(Condition="If-Match"), 412),
        (errors.NotImplementedError_(), 501),
    ],
)
def test_error_documents_round_trip(
    s3: FakeS3, error: errors.S3Error, status: int
) -> None:
    s3.respond(error.to_xml("REQ123", "/b/k"), status=status)
    with pytest.raises(ClientError) as info:
        s3.client.get_object(Bucket="b", Key="k")
    response = info.value.response
    assert response["Error"]["Code"] == error.code
    assert response["Error"]["Message"] == error.message
    assert response["ResponseMetadata"]["HTTPStatusCode"] == status
    for name, value in error.fields.items():
        assert response["Error"][name] == value


# ---------------------------------------------------------------------------
# escaping and formatting


def test_escape_text() -> None:
    assert s3xml.escape_text("a&b<c>d\"e'f") == "a&amp;b&lt;c&gt;d&quot;e'f"
    assert s3xml.escape_text("\r\x01\x1f\ufffe") == "&#xD;&#x1;&#x1F;&#xFFFE;"
    assert s3xml.escape_text("\t\n\u20ac") == "\t\n\u20ac"


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0xFFFF, exclude_categories=["Cs"])))
def test_escape_text_fast_path_matches_the_full_table(value: str) -> None:
    """Skipping translate when nothing needs escaping gives the same text as always translating."""
    from s3orch.s3.xml.common import _ESCAPES

    assert s3xml.escape_text(value) == value.translate(_ESCAPES)


def test_listing_repeats_no_owner_and_formats_each_entry() -> None:
    """Two entries in the same second, one with characters to escape: each <Contents> is complete."""
    entries = [Obj("a&b", 3, '"e1"', 1_700_000_000.5), Obj("plain", 4, "e2", 1_700_000_000)]
    body = s3xml.list_objects_v2(
        "bk", "", None, 1000, 2, False, None, None, None, entries, [], None
    ).decode()
    assert (
        "<Contents><Key>a&amp;b</Key><LastModified>2023-11-14T22:13:20.000Z</LastModified>"
        "<ETag>&quot;e1&quot;</ETag><Size>3</Size><StorageClass>STANDARD</StorageClass></Contents>"
        "<Contents><Key>plain</Key><LastModified>2023-11-14T22:13:20.000Z</LastModified>"
        "<ETag>&quot;e2&quot;</ETag><Size>4</Size><StorageClass>STANDARD</StorageClass></Contents>"
    ) in body
    assert "<Owner>" not in body


def test_iso8601_truncates_to_seconds() -> None:
    assert s3xml.iso8601(T + 0.999) == "2009-10-12T17:50:30.000Z"
    assert s3xml.iso8601(T_DT) == "2009-10-12T17:50:30.000Z"
    naive = datetime.datetime(2009, 10, 12, 17, 50, 30)
    assert s3xml.iso8601(naive) == "2009-10-12T17:50:30.000Z"


def test_url_encode_writes_space_as_percent_20_and_keeps_slash() -> None:
    # s3-tests test_bucket_listv2_encoding_basic: "foo+1/" -> "foo%2B1/", "quux ab/" -> "quux%20ab/"
    assert s3xml.url_encode("foo+1/") == "foo%2B1/"
    assert s3xml.url_encode("quux ab/") == "quux%20ab/"
    assert s3xml.url_encode("\x01\n\u20ac") == "%01%0A%E2%82%AC"
    assert s3xml.url_encode("100%") == "100%25"


@given(st.text(st.characters(codec="utf-8"), max_size=40))
def test_url_encoded_values_decode_back_under_both_decoders(value: str) -> None:
    from urllib.parse import unquote, unquote_plus

    encoded = s3xml.url_encode(value)
    assert encoded.isascii() and " " not in encoded and "+" not in encoded
    assert unquote_plus(encoded) == value == unquote(encoded)


# ---------------------------------------------------------------------------
# parsers

NS_ATTR = f'xmlns="{s3xml.NS}"'


def delete_body(*keys: str, quiet: str | None = None, ns: bool = True) -> bytes:
    objects = "".join(
        f"<Object><Key>{s3xml.escape_text(k)}</Key></Object>" for k in keys
    )
    quiet_el = f"<Quiet>{quiet}</Quiet>" if quiet is not None else ""
    return f"<Delete {NS_ATTR if ns else ''}>{quiet_el}{objects}</Delete>".encode()


def test_parse_delete_objects() -> None:
    assert s3xml.parse_delete_objects(delete_body("a", " b ", "a")) == (
        ["a", " b ", "a"],
        False,
    )
    assert s3xml.parse_delete_objects(delete_body("x", quiet="true", ns=False)) == (
        ["x"],
        True,
    )
    assert s3xml.parse_delete_objects(delete_body("x", quiet=" TRUE ")) == (["x"], True)
    assert s3xml.parse_delete_objects(delete_body("x", quiet="false")) == (["x"], False)
    with_version = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Delete><Object><Key>k</Key>'
        b"<VersionId>null</VersionId></Object></Delete>"
    )
    assert s3xml.parse_delete_objects(with_version) == (["k"], False)


def test_botocore_delete_body_parses(s3: FakeS3) -> None:
    keys = ["a", "b c", "&amp;", "\u20ac", "cr\rx"]
    s3.respond(s3xml.delete_result(keys, [], False))
    s3.client.delete_objects(
        Bucket="b", Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
    )
    sent = s3.requests[-1].body
    assert isinstance(sent, bytes)
    assert s3xml.parse_delete_objects(sent) == (keys, True)


def test_delete_objects_limits() -> None:
    keys = [f"k{i}" for i in range(1000)]
    assert s3xml.parse_delete_objects(delete_body(*keys))[0] == keys
    with pytest.raises(MalformedXML):
        s3xml.parse_delete_objects(delete_body(*keys, "one-too-many"))
    with pytest.raises(MalformedXML):
        s3xml.parse_delete_objects(delete_body())
    longest = ["k" * 1024] * 1000
    assert len(delete_body(*longest)) > 1024 * 1024  # needs more than 1 MiB
    assert len(s3xml.parse_delete_objects(delete_body(*longest))[0]) == 1000


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Delete><Object><Key>&lol2;</Key></Object></Delete>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Delete><Object><Key>&x;</Key></Object></Delete>"""
DTD_ONLY = b"""<?xml version="1.0"?><!DOCTYPE Delete><Delete><Object><Key>k</Key></Object></Delete>"""


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<Delete>",
        b"<Delete><Object><Key>a</Key></Object>",
        b"<Other><Object><Key>a</Key></Object></Other>",
        b"<Delete><Object></Object></Delete>",
        b"<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>",
        b"<Delete><Object><Key>a<b/></Key></Object></Delete>",
        b"<Delete><Quiet>yes</Quiet><Object><Key>a</Key></Object></Delete>",
        b"<Delete><Quiet>true</Quiet><Quiet>true</Quiet><Object><Key>a</Key></Object></Delete>",
        BILLION_LAUGHS,
        EXTERNAL,
        DTD_ONLY,
        b"\xff\xfe<",
    ],
)
def test_malformed_delete_bodies(body: bytes) -> None:
    with pytest.raises(MalformedXML) as info:
        s3xml.parse_delete_objects(body)
    assert info.value.status == 400


def test_oversized_bodies_are_refused_before_parsing() -> None:
    body = delete_body("a")
    with pytest.raises(MalformedXML):
        s3xml.parse_delete_objects(body, max_bytes=len(body) - 1)
    assert s3xml.parse_delete_objects(body, max_bytes=len(body)) == (["a"], False)


@given(
    st.lists(
        xml_key.filter(lambda k: all(_xml_char(c) for c in k)), min_size=1, max_size=20
    )
)
def test_delete_keys_round_trip(keys: list[str]) -> None:
    assert s3xml.parse_delete_objects(delete_body(*keys)) == (keys, False)


def _xml_char(c: str) -> bool:
    o = ord(c)
    return (
        o in (0x9, 0xA, 0xD)
        or 0x20 <= o <= 0xD7FF
        or 0xE000 <= o <= 0xFFFD
        or o >= 0x10000
    )


def complete_body(parts: list[tuple[str, str]], extra: str = "") -> bytes:
    inner = "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{s3xml.escape_text(e)}</ETag>{extra}</Part>"
        for n, e in parts
    )
    return (
        f"<CompleteMultipartUpload {NS_ATTR}>{inner}</CompleteMultipartUpload>".encode()
    )


def test_parse_complete_multipart_keeps_order_and_strips_quotes() -> None:
    body = complete_body([("2", '"b"'), (" 1 ", "a"), ("3", '"c-1"')])
    assert s3xml.parse_complete_multipart(body) == [(2, "b"), (1, "a"), (3, "c-1")]


def test_parse_complete_multipart_checksums() -> None:
    body = complete_body([("1", '"a"')], "<ChecksumCRC32>AAAAAA==</ChecksumCRC32>")
    (part,) = s3xml.parse_complete_multipart_parts(body)
    assert part == s3xml.CompletedPart(1, "a", {"ChecksumCRC32": "AAAAAA=="})


def test_botocore_complete_body_parses(s3: FakeS3) -> None:
    s3.respond(s3xml.complete_multipart_upload("l", "b", "k", "e-2"))
    s3.client.complete_multipart_upload(
        Bucket="b",
        Key="k",
        UploadId="u",
        MultipartUpload={
            "Parts": [
                {"PartNumber": 1, "ETag": '"e1"', "ChecksumSHA256": "c2hh"},
                {"PartNumber": 2, "ETag": '"e2"'},
            ]
        },
    )
    sent = s3.requests[-1].body
    assert isinstance(sent, bytes)
    parts = s3xml.parse_complete_multipart_parts(sent)
    assert [(p.part_number, p.etag, p.checksums) for p in parts] == [
        (1, "e1", {"ChecksumSHA256": "c2hh"}),
        (2, "e2", {}),
    ]


def test_ten_thousand_parts_fit_the_default_limit() -> None:
    etag = '"0123456789abcdef0123456789abcdef"'
    body = complete_body(
        [(str(n), etag) for n in range(1, 10001)],
        "<ChecksumSHA256>" + "A" * 44 + "</ChecksumSHA256>",
    )
    assert len(s3xml.parse_complete_multipart(body)) == 10000


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<CompleteMultipartUpload/>",
        b"<CompleteMultipartUpload></CompleteMultipartUpload>",
        complete_body([("x", "a")]),
        complete_body([("-1", "a")]),
        complete_body([("1.5", "a")]),
        complete_body([("", "a")]),
        complete_body([("\u0661", "a")]),
        complete_body([("9999999999", "a")]),
        b"<CompleteMultipartUpload><Part><ETag>a</ETag></Part></CompleteMultipartUpload>",
        (
            b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part>"
            b"</CompleteMultipartUpload>"
        ),
        b"<Delete><Part><PartNumber>1</PartNumber><ETag>a</ETag></Part></Delete>",
        BILLION_LAUGHS.replace(b"Delete", b"CompleteMultipartUpload"),
    ],
)
def test_malformed_complete_bodies(body: bytes) -> None:
    with pytest.raises(MalformedXML):
        s3xml.parse_complete_multipart(body)


@given(
    st.lists(
        st.tuples(st.integers(1, 10000), st.text("0123456789abcdef-", max_size=40))
    )
)
def test_complete_parts_round_trip(parts: list[tuple[int, str]]) -> None:
    body = complete_body([(str(n), f'"{e}"') for n, e in parts])
    if not parts:
        with pytest.raises(MalformedXML):
            s3xml.parse_complete_multipart(body)
    else:
        assert s3xml.parse_complete_multipart(body) == parts


@given(st.binary(max_size=300))
def test_parsers_only_raise_s3_errors_on_junk(body: bytes) -> None:
    parser: Callable[[bytes], object]
    for parser in (
        s3xml.parse_delete_objects,
        s3xml.parse_complete_multipart,
        s3xml.parse_tagging,
    ):
        try:
            parser(body)
        except errors.S3Error as exc:
            assert exc.status == 400


def tagging_body(tags: list[tuple[str, str]]) -> bytes:
    inner = "".join(
        f"<Tag><Key>{s3xml.escape_text(k)}</Key><Value>{s3xml.escape_text(v)}</Value></Tag>"
        for k, v in tags
    )
    return f"<Tagging {NS_ATTR}><TagSet>{inner}</TagSet></Tagging>".encode()


def test_parse_tagging() -> None:
    assert s3xml.parse_tagging(tagging_body([("a", "1"), ("b", "")])) == [
        ("a", "1"),
        ("b", ""),
    ]
    assert s3xml.parse_tagging(tagging_body([])) == []
    empty_value = b"<Tagging><TagSet><Tag><Key>a</Key><Value/></Tag></TagSet></Tagging>"
    assert s3xml.parse_tagging(empty_value) == [("a", "")]


@pytest.mark.parametrize(
    "body",
    [
        b"<Tagging/>",
        b"<Tagging><TagSet/><TagSet/></Tagging>",
        b"<Tagging><TagSet><Tag><Key>a</Key></Tag></TagSet></Tagging>",
        b"<Tagging><TagSet><Tag><Value>a</Value></Tag></TagSet></Tagging>",
        b"<Tags><TagSet/></Tags>",
    ],
)
def test_malformed_tagging(body: bytes) -> None:
    with pytest.raises(MalformedXML):
        s3xml.parse_tagging(body)


@pytest.mark.parametrize(
    "tags",
    [
        [("a", "1"), ("a", "2")],
        [("k" * 129, "v")],
        [("k", "v" * 257)],
        [("", "v")],
    ],
)
def test_invalid_tags(tags: list[tuple[str, str]]) -> None:
    with pytest.raises(errors.InvalidTag) as info:
        s3xml.parse_tagging(tagging_body(tags))
    assert info.value.status == 400


def test_more_than_ten_object_tags_is_bad_request() -> None:
    with pytest.raises(errors.BadRequest) as info:
        s3xml.parse_tagging(tagging_body([(f"k{i}", "v") for i in range(11)]))
    assert info.value.status == 400
    assert "cannot be greater than 10" in info.value.message


def test_tag_limits_are_inclusive_and_bucket_allows_50() -> None:
    s3xml.parse_tagging(tagging_body([("k" * 128, "v" * 256)]))
    s3xml.parse_tagging(tagging_body([(f"k{i}", "v") for i in range(10)]))
    fifty = [(f"k{i}", "v") for i in range(50)]
    assert (
        len(s3xml.parse_tagging(tagging_body(fifty), max_tags=s3xml.MAX_BUCKET_TAGS))
        == 50
    )

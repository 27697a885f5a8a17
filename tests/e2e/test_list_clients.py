"""Real clients paging through listings: boto3's paginators over ListObjectsV2 and ListObjects
(v1), with keys XML cannot carry bare (botocore asks for encoding-type=url), small pages,
delimiters, StartAfter and FetchOwner; and the AWS CLI's ``s3api list-objects-v2`` paging
on its own.  Both the no-delimiter page (a point
read on SQLite) and the delimiter scan answer through the same serialiser."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.conftest import s3_client
from tests.e2e.conftest import venv_tool
from tests.support.gateway import GatewayProcess

pytestmark = pytest.mark.e2e

PREFIX = "lst/"
#: XML-hostile names (escaped in the XML, or only carried by encoding-type=url), sorted as S3 sorts.
NAMES = sorted(
    [
        "a&b", "a<b>", 'q"uote', "apos'", "cr\rlf\n", "tab\tx", "ctl\x01\x1f", "sp ace+plus%",
        "dir/one", "dir/two", "dir/sub/three", "ünï/名前", "z" * 200,
    ],
    key=lambda name: name.encode("utf-8"),
)
KEYS = [PREFIX + name for name in NAMES]


@pytest.fixture(scope="module")
def s3(gateway: GatewayProcess) -> Any:
    client: Any = s3_client(gateway.endpoint, "photoskey", "photossecret")
    for i, key in enumerate(KEYS):
        client.put_object(Bucket="photos", Key=key, Body=b"x" * i)
    return client


def test_boto3_pages_through_hostile_keys_with_v2_and_v1(s3: Any) -> None:
    pages = list(
        s3.get_paginator("list_objects_v2").paginate(Bucket="photos", Prefix=PREFIX, PaginationConfig={"PageSize": 3})
    )
    assert [o["Key"] for p in pages for o in p["Contents"]] == KEYS
    assert [o["Size"] for p in pages for o in p["Contents"]] == list(range(len(KEYS)))
    assert [p["KeyCount"] for p in pages] == [3, 3, 3, 3, 1] and pages[-1]["IsTruncated"] is False
    assert all(p["IsTruncated"] and p["NextContinuationToken"] for p in pages[:-1])

    v1 = list(s3.get_paginator("list_objects").paginate(Bucket="photos", Prefix=PREFIX, PaginationConfig={"PageSize": 4}))
    assert [o["Key"] for p in v1 for o in p["Contents"]] == KEYS

    after = s3.list_objects_v2(Bucket="photos", Prefix=PREFIX, StartAfter=KEYS[5], MaxKeys=2, FetchOwner=True)
    assert [o["Key"] for o in after["Contents"]] == KEYS[6:8] and after["StartAfter"] == KEYS[5]
    assert all(o["Owner"]["ID"] for o in after["Contents"]) and after["IsTruncated"]


def test_boto3_delimiter_listing_rolls_up_directories(s3: Any) -> None:
    pages = list(
        s3.get_paginator("list_objects_v2").paginate(
            Bucket="photos", Prefix=PREFIX, Delimiter="/", PaginationConfig={"PageSize": 2}
        )
    )
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    prefixes = [c["Prefix"] for p in pages for c in p.get("CommonPrefixes", [])]
    assert prefixes == [PREFIX + "dir/", PREFIX + "ünï/"]
    assert keys == [k for k in KEYS if "/" not in k[len(PREFIX):]]
    rolled = sorted({k if "/" not in k[len(PREFIX):] else k[: k.index("/", len(PREFIX)) + 1] for k in KEYS},
                    key=lambda item: item.encode("utf-8"))
    v1 = s3.list_objects(Bucket="photos", Prefix=PREFIX, Delimiter="/", MaxKeys=3)
    shown = sorted([o["Key"] for o in v1.get("Contents", [])] + [c["Prefix"] for c in v1.get("CommonPrefixes", [])],
                   key=lambda item: item.encode("utf-8"))
    assert shown == rolled[:3] and v1["IsTruncated"] and v1["NextMarker"] == rolled[2]


def test_aws_cli_lists_hostile_keys(gateway: GatewayProcess, client_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [
            venv_tool("aws"), "--endpoint-url", gateway.endpoint, "s3api", "list-objects-v2", "--bucket", "photos",
            "--prefix", PREFIX, "--page-size", "5", "--output", "json",
        ],
        env=client_env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [o["Key"] for o in json.loads(proc.stdout)["Contents"]] == KEYS

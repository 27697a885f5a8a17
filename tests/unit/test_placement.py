"""Backend keys are opaque: no client key can put a segment into them that a backend
or proxy would rewrite (``..``, ``.``, ``//``), and each bucket keeps its own prefix."""

from __future__ import annotations

import re
import uuid

from hypothesis import given
from hypothesis import strategies as st

from s3orch.core.placement import (
    bucket_prefix,
    new_upload_id,
    part_storage_key,
    storage_key,
    write_candidates,
)

#: Lower-case letters, digits, '-' and '.', segments separated by single '/', no segment
#: that is '.' or '..'.
SAFE = re.compile(r"(?!.*(^|/)\.\.?(/|$))[a-z0-9.-]+(/[a-z0-9.-]+)*")

HOSTILE = ["../x", "a/./b", "a//b", "x.", "..", ".", "a/../b", "dir/", "/lead", "k" * 1024,
           "ünïcödé/日本", "a b+c%2F", "\x00\x1f", "a\\b", "?q=1#f", "\udcff"]


@given(st.text(max_size=300))
def test_a_write_key_is_safe_whatever_the_client_key(key: str) -> None:
    skey = storage_key("photos", key, uuid.uuid4().hex)
    assert SAFE.fullmatch(skey) and skey.startswith("photos/")
    assert len(skey.encode()) <= 1024


@given(st.text(max_size=300), st.integers(1, 10000))
def test_a_part_key_is_safe_whatever_the_client_key(key: str, number: int) -> None:
    skey = part_storage_key("photos", key, new_upload_id(1.7e9), number, uuid.uuid4().hex)
    assert SAFE.fullmatch(skey) and skey.startswith("photos/")


def test_keys_normalising_servers_would_rewrite_become_plain_hex() -> None:
    write_id = "0" * 32
    keys = {storage_key("photos", key, write_id) for key in HOSTILE}
    assert len(keys) == len(HOSTILE)  # one key each: the digest tells them apart
    for skey in keys:
        prefix, digest, tail = skey.split("/")
        assert prefix == "photos" and re.fullmatch(r"[0-9a-f]{64}", digest) and tail == write_id


def test_each_write_and_each_part_attempt_has_its_own_key() -> None:
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    assert storage_key("b", "k", first) != storage_key("b", "k", second)
    upload = new_upload_id(1.7e9)
    a = part_storage_key("b", "k", upload, 3, first)
    assert a != part_storage_key("b", "k", upload, 3, second)
    assert a.startswith(storage_key("b", "k", upload) + "/00003-")


def test_valid_bucket_names_are_kept_and_others_become_a_prefix_no_valid_name_can_have() -> None:
    for name in ("photos", "my.bucket-1", "a1b"):
        assert bucket_prefix(name) == name
    odd = [bucket_prefix(name) for name in ("..", ".", "My_Bucket", "a/b", "UPPER", "-x")]
    assert len(set(odd)) == len(odd)
    for prefix in odd:
        assert re.fullmatch(r"-[0-9a-f]{40}", prefix)  # a valid name never starts with '-'


def test_write_candidates_skip_failed_unavailable_and_too_small_backends() -> None:
    configs = [type("C", (), {"name": n, "max_object_size": limit})() for n, limit in (("a", 0), ("b", 10), ("c", 0))]
    assert write_candidates(configs, 11) == ["a", "c"]
    assert write_candidates(configs, 5, exclude={"a"}) == ["b", "c"]
    assert write_candidates(configs, 5, is_available=lambda n: n != "c") == ["a", "b"]

"""The MetadataStore contract, listing: every engine lists as a Python model of S3 does."""

from __future__ import annotations

import itertools

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3orch.store.interface import ListPage, MetadataStore
from s3orch.store.txn import listing
from tests.store.conftest import StoreFactory
from tests.store.test_contract import BUCKET, NOW, put
from tests.store.test_postgres import stores

# --- listing ----------------------------------------------------------------------------


async def seed(store: MetadataStore, keys: list[str], bucket: str = BUCKET) -> None:
    for key in keys:
        await put(store, key, len(key.encode()), ("b1",), bucket=bucket)


def names(page: ListPage) -> list[str]:
    """Entries and common prefixes merged in listing order (they never collide)."""
    return sorted([e.key for e in page.entries] + list(page.common_prefixes))


@pytest_twisted.ensureDeferred
async def test_list_prefix_and_delimiter(store: MetadataStore) -> None:
    await seed(store, ["a.txt", "dir/x", "dir/y", "dir/sub/z", "dirt", "e/f", "z"])
    await seed(store, ["dir/elsewhere"], bucket="other")
    page = await store.list_objects(BUCKET, "", "/", "", 1000)
    assert [e.key for e in page.entries] == ["a.txt", "dirt", "z"]
    assert page.common_prefixes == ("dir/", "e/")
    assert (page.is_truncated, page.next_marker) == (False, None)
    page = await store.list_objects(BUCKET, "dir/", "/", "", 1000)
    assert [e.key for e in page.entries] == ["dir/x", "dir/y"]
    assert page.common_prefixes == ("dir/sub/",)
    page = await store.list_objects(BUCKET, "dir", "", "", 1000)
    assert [e.key for e in page.entries] == ["dir/sub/z", "dir/x", "dir/y", "dirt"]
    assert page.entries[0].size == len("dir/sub/z") and page.entries[0].last_modified == NOW


@pytest_twisted.ensureDeferred
async def test_list_start_after_a_common_prefix_skips_its_group(store: MetadataStore) -> None:
    await seed(store, ["a/1", "a/2", "a/3", "b", "c/1"])
    page = await store.list_objects(BUCKET, "", "/", "", 1)
    assert (page.common_prefixes, page.is_truncated, page.next_marker) == (("a/",), True, "a/")
    page = await store.list_objects(BUCKET, "", "/", "a/", 1)
    assert ([e.key for e in page.entries], page.next_marker) == (["b"], "b")
    page = await store.list_objects(BUCKET, "", "/", "b", 5)
    assert (page.common_prefixes, page.is_truncated) == (("c/",), False)
    # without a delimiter "a/" is only a marker between keys
    page = await store.list_objects(BUCKET, "", "", "a/", 2)
    assert [e.key for e in page.entries] == ["a/1", "a/2"]


@pytest_twisted.ensureDeferred
async def test_list_max_keys_edges(store: MetadataStore) -> None:
    await seed(store, ["a", "b", "c"])
    page = await store.list_objects(BUCKET, "", "", "", 0)
    assert (page.entries, page.common_prefixes, page.is_truncated) == ((), (), True)
    page = await store.list_objects(BUCKET, "", "", "c", 0)
    assert page.is_truncated is False
    page = await store.list_objects(BUCKET, "", "", "", 3)
    assert (len(page.entries), page.is_truncated, page.next_marker) == (3, False, None)
    page = await store.list_objects(BUCKET, "", "", "", 2)
    assert (len(page.entries), page.is_truncated, page.next_marker) == (2, True, "b")
    page = await store.list_objects("empty", "", "/", "", 1000)
    assert page == ListPage((), (), False, None)


@pytest_twisted.ensureDeferred
async def test_list_orders_by_utf8_bytes(store: MetadataStore) -> None:
    keys = ["中", "é", "b", "a", "\U0001f600", "\uffff", "Z", "a b"]
    await seed(store, keys)
    page = await store.list_objects(BUCKET, "", "", "", 100)
    assert [e.key for e in page.entries] == ["Z", "a", "a b", "b", "é", "中", "\uffff", "\U0001f600"]
    assert [e.key for e in page.entries] == sorted(keys, key=lambda k: k.encode())


@pytest_twisted.ensureDeferred
async def test_list_has_no_like_pitfalls(store: MetadataStore) -> None:
    await seed(store, ["a%b", "a_b", "axb", "a\\b", "%", "_"])
    page = await store.list_objects(BUCKET, "a%", "", "", 100)
    assert [e.key for e in page.entries] == ["a%b"]
    page = await store.list_objects(BUCKET, "a_", "", "", 100)
    assert [e.key for e in page.entries] == ["a_b"]
    page = await store.list_objects(BUCKET, "a\\", "", "", 100)
    assert [e.key for e in page.entries] == ["a\\b"]
    page = await store.list_objects(BUCKET, "", "_", "", 100)
    assert page.common_prefixes == ("_", "a_")


@pytest_twisted.ensureDeferred
async def test_list_prefix_ending_in_the_highest_code_points(store: MetadataStore) -> None:
    await seed(store, ["\U0010ffff", "\U0010ffffa", "\ud7ffx", "\ue000", "a\U0010ffff/b"])
    page = await store.list_objects(BUCKET, "\U0010ffff", "", "", 100)
    assert [e.key for e in page.entries] == ["\U0010ffff", "\U0010ffffa"]
    page = await store.list_objects(BUCKET, "\ud7ff", "", "", 100)
    assert [e.key for e in page.entries] == ["\ud7ffx"]
    page = await store.list_objects(BUCKET, "a", "\U0010ffff", "", 100)
    assert page.common_prefixes == ("a\U0010ffff",)


def model_listing(keys: set[str], prefix: str, delimiter: str, start_after: str) -> list[tuple[str, bool]]:
    """The whole listing as (name, is_common_prefix), straight from the definition."""

    def rolled(key: str) -> str | None:
        if not delimiter:
            return None
        at = key.find(delimiter, len(prefix))
        return None if at < 0 else key[: at + len(delimiter)]

    skip = start_after if start_after.startswith(prefix) and rolled(start_after) == start_after else None
    out: list[tuple[str, bool]] = []
    for key in sorted(keys, key=lambda k: k.encode()):
        if not key.startswith(prefix) or key <= start_after:
            continue
        if skip is not None and key.startswith(skip):
            continue
        common = rolled(key)
        if common is None:
            out.append((key, False))
        elif not out or out[-1] != (common, True):
            out.append((common, True))
    return out


ALPHABET = ["a", "b", "/", "-", "%", "_", "é", "中", "\ud7ff", "\ue000", "\U0010ffff"]
key_text = st.text(st.sampled_from(ALPHABET), min_size=1, max_size=5)
_buckets = itertools.count()


@given(
    keys=st.sets(key_text, max_size=20),
    prefix=st.one_of(st.just(""), st.text(st.sampled_from(ALPHABET), max_size=2)),
    delimiter=st.sampled_from(["", "/", "-", "//", "é"]),
    start_after=st.one_of(st.just(""), key_text),
    max_keys=st.integers(min_value=1, max_value=6),
)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@pytest_twisted.ensureDeferred
async def test_list_matches_a_python_model(
    store: MetadataStore,
    keys: set[str],
    prefix: str,
    delimiter: str,
    start_after: str,
    max_keys: int,
) -> None:
    bucket = f"h{next(_buckets)}"  # one store for all examples: a fresh bucket each
    await seed(store, sorted(keys), bucket=bucket)
    expected = model_listing(keys, prefix, delimiter, start_after)

    zero = await store.list_objects(bucket, prefix, delimiter, start_after, 0)
    assert (zero.entries, zero.common_prefixes, zero.is_truncated) == ((), (), bool(expected))

    walked: list[tuple[str, bool]] = []
    marker = start_after
    for _ in range(len(keys) + 2):
        page = await store.list_objects(bucket, prefix, delimiter, marker, max_keys)
        got = sorted([(e.key, False) for e in page.entries] + [(c, True) for c in page.common_prefixes])
        assert len(got) <= max_keys
        for entry in page.entries:
            assert entry.size == len(entry.key.encode())
        if not walked:
            assert got == expected[:max_keys]
            assert page.is_truncated == (len(expected) > max_keys)
        walked += got
        if not page.is_truncated:
            assert page.next_marker is None
            break
        assert len(got) == max_keys and page.next_marker == got[-1][0]
        marker = page.next_marker
    assert walked == expected


# --- listing in batches ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_listing_batches_match_the_model(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batching is shared by both engines; many small batches exercise each continuation.
    monkeypatch.setattr(listing, "LIST_BATCH_MIN", 2)
    keys = {f"k{i:03d}" for i in range(70)} | {f"d{i % 3}/x{i}" for i in range(20)} | {"z/1", "z/2/3"}
    async with stores(store_factory, 1) as (store,):
        for key in sorted(keys):
            await put(store, key, 1, ("b1",))
        for prefix, delimiter, start_after, max_keys in [
            ("", "/", "", 1000),
            ("", "/", "", 7),
            ("", "/", "d1/", 50),
            ("k", "/", "k010", 33),
            ("", "", "", 80),
            ("z/", "/", "", 10),
        ]:
            page = await store.list_objects(BUCKET, prefix, delimiter, start_after, max_keys)
            got = sorted([(e.key, False) for e in page.entries] + [(c, True) for c in page.common_prefixes])
            expected = model_listing(keys, prefix, delimiter, start_after)
            assert got == expected[:max_keys]
            assert page.is_truncated == (len(expected) > max_keys)

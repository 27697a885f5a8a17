"""The chunked zstd stored form: round trips, ranges across chunk boundaries, fail-closed reads."""

from __future__ import annotations

import os
import struct

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from s3orch.codec import zstd as z

CHUNK = z.MIN_CHUNK_SIZE
TEXT = b"".join(b"line %d: the quick brown fox jumps over the lazy dog\n" % i for i in range(4000))


def split_feed(feeder: z.ChunkCompressor | z.ChunkDecompressor, data: bytes, cuts: list[int]) -> bytes:
    """Feed ``data`` in pieces cut at ``cuts`` (the streaming path sees arbitrary deliveries)."""
    out, last = [], 0
    for cut in sorted({c % (len(data) + 1) for c in cuts} | {len(data)}):
        out.append(feeder.feed(data[last:cut]))
        last = cut
    return b"".join(out)


def test_levels_and_chunk_sizes_are_checked() -> None:
    assert [z.zstd_level(n) for n in ("fastest", "default", "better", "best")] == [1, 3, 7, 11]
    with pytest.raises(ValueError):
        z.zstd_level("max")
    with pytest.raises(ValueError):
        z.ChunkCompressor(chunk_size=z.MIN_CHUNK_SIZE - 1)
    with pytest.raises(ValueError):
        z.ChunkCompressor(chunk_size=z.MAX_CHUNK_SIZE + 1)
    assert z.DEFAULT_CHUNK_SIZE == 1024 * 1024


def test_text_compresses_and_random_data_does_not() -> None:
    stored = z.compress(TEXT, chunk_size=CHUNK)
    assert len(stored) < len(TEXT) / 4
    noise = os.urandom(100_000)
    assert len(z.compress(noise, chunk_size=CHUNK)) > len(noise)


def test_stored_form_is_independent_frames_and_a_seekable_table() -> None:
    """Each chunk is a standard zstd frame with content size and checksum; the tail is the
    seekable format's skippable frame, so stock zstd can read the whole stream."""
    stored = z.compress(TEXT, chunk_size=CHUNK)
    frames = z.frames_in_footer(stored[-z.FOOTER_SIZE :])
    assert frames == -(-len(TEXT) // CHUNK)
    table = z.SeekTable.parse(stored[-z.table_size(frames) :])
    assert table.logical_size == len(TEXT) and table.stored_size == len(stored)
    assert all(d == CHUNK for _, d in table.entries[:-1])
    offset = 0
    for csize, dsize in table.entries:
        params = zstandard.get_frame_parameters(stored[offset : offset + csize])
        assert params.content_size == dsize and params.has_checksum
        offset += csize
    magic, _ = struct.unpack_from("<II", stored, offset)
    assert magic == z.SKIPPABLE_MAGIC
    # Stock zstd skips the skippable frame and concatenates the frames.
    assert zstandard.ZstdDecompressor().decompressobj().decompress(stored[: offset]) != b""
    reader = zstandard.ZstdDecompressor().stream_reader(stored, read_across_frames=True)
    assert reader.read() == TEXT


def test_empty_extent_is_only_a_table() -> None:
    stored = z.compress(b"")
    assert stored == z.encode_table([]) and len(stored) == z.table_size(0)
    assert z.decompress(stored) == b""


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=70_000) | st.builds(lambda n: TEXT[:n], st.integers(0, len(TEXT))),
    level=st.sampled_from(sorted(z.LEVELS)),
    cuts=st.lists(st.integers(0, 200_000), max_size=8),
    read_cuts=st.lists(st.integers(0, 200_000), max_size=8),
)
def test_streaming_round_trip(data: bytes, level: str, cuts: list[int], read_cuts: list[int]) -> None:
    comp = z.ChunkCompressor(level, CHUNK)
    stored = split_feed(comp, data, cuts) + comp.finish()
    assert stored == z.compress(data, level, CHUNK)
    dec = z.ChunkDecompressor()
    assert split_feed(dec, stored, read_cuts) == data
    dec.finish()


@settings(max_examples=80, deadline=None)
@given(size=st.integers(1, 5 * CHUNK + 77), a=st.integers(0, 10**9), b=st.integers(0, 10**9))
def test_ranges_are_exact_and_fetch_only_covering_frames(size: int, a: int, b: int) -> None:
    data = TEXT[:size] if size <= len(TEXT) else os.urandom(size)
    stored = z.compress(data, chunk_size=CHUNK)
    start, end = sorted((a % size, b % size))
    assert z.read_range(stored, start, end) == data[start : end + 1]
    table = z.SeekTable.parse(stored[-z.table_size(z.frames_in_footer(stored[-9:])) :])
    plan = table.plan(start, end)
    assert (plan.first, plan.last) == (start // CHUNK, end // CHUNK)
    assert len(plan.entries) == plan.last - plan.first + 1
    assert plan.fetched == sum(c for c, _ in plan.entries)


def test_range_plan_across_a_boundary() -> None:
    stored = z.compress(TEXT, chunk_size=CHUNK)
    table = z.SeekTable.parse(stored[-z.table_size(z.frames_in_footer(stored[-9:])) :])
    plan = table.plan(CHUNK - 10, CHUNK + 9)
    assert (plan.first, plan.last, plan.skip, plan.length) == (0, 1, CHUNK - 10, 20)
    assert plan.stored_start == 0
    assert plan.stored_end == table.entries[0][0] + table.entries[1][0] - 1
    with pytest.raises(ValueError):
        table.plan(0, len(TEXT))


def _corruptions(stored: bytes, other: bytes) -> dict[str, bytes]:
    frames = z.frames_in_footer(stored[-9:])
    entries = z.SeekTable.parse(stored[-z.table_size(frames) :]).entries
    c0, c1 = entries[0][0], entries[1][0]
    flipped = bytearray(stored)
    flipped[c0 // 2] ^= 0x40
    table_flip = bytearray(stored)
    table_flip[-z.table_size(frames) + 9] ^= 0x01
    other_c0 = z.SeekTable.parse(other[-z.table_size(z.frames_in_footer(other[-9:])) :]).entries[0][0]
    return {
        "byte flipped in a frame": bytes(flipped),
        "byte flipped in the table": bytes(table_flip),
        "truncated mid frame": stored[: c0 + c1 // 2],
        "truncated at a frame boundary": stored[: c0 + c1],
        "table dropped": stored[: -z.table_size(frames)],
        "two frames swapped": stored[c0 : c0 + c1] + stored[:c0] + stored[c0 + c1 :],
        "frame from another object": other[:other_c0] + stored[c0:],
        "trailing bytes": stored + b"x",
        "a frame dropped": stored[c0:],
        "not zstd": b"plain text that is not zstd at all" + stored,
    }


@pytest.mark.parametrize("case", list(_corruptions(z.compress(TEXT, chunk_size=CHUNK), z.compress(TEXT[::-1], chunk_size=CHUNK))))
def test_corrupt_streams_fail_closed(case: str) -> None:
    """Every case raises, by the end of the stream at the latest; what was released before is
    whole verified frames.  A full read without the table learns of a moved frame only at the
    seek table (like a plain object's moved bytes, which only integrity.verify_on_read sees);
    reads that know the table beforehand (:func:`test_ranged_read_rejects...`) check each frame
    against its entry, and encryption binds each chunk to its position."""
    stored = z.compress(TEXT, chunk_size=CHUNK)
    bad = _corruptions(stored, z.compress(TEXT[::-1], chunk_size=CHUNK))[case]
    dec = z.ChunkDecompressor()
    released = bytearray()
    with pytest.raises(z.CorruptStream):
        for offset in range(0, len(bad), 4096):
            released += dec.feed(bad[offset : offset + 4096])
        dec.finish()
    if case not in ("two frames swapped", "frame from another object", "a frame dropped"):
        assert TEXT.startswith(bytes(released))


def test_ranged_read_rejects_frames_that_do_not_match_the_plan() -> None:
    stored = z.compress(TEXT, chunk_size=CHUNK)
    table = z.SeekTable.parse(stored[-z.table_size(z.frames_in_footer(stored[-9:])) :])
    plan = table.plan(CHUNK, 2 * CHUNK + 5)
    window = stored[plan.stored_start : plan.stored_end + 1]
    flipped = bytearray(window)
    flipped[-3] ^= 0x10
    for bad in (window[:-1], window + b"\0", bytes(flipped), stored[: plan.fetched]):
        dec = z.ChunkDecompressor(expect=plan.entries)
        with pytest.raises(z.CorruptStream):
            dec.feed(bad)
            dec.finish()
    dec = z.ChunkDecompressor(expect=plan.entries)
    assert dec.feed(window)[plan.skip : plan.skip + plan.length] == TEXT[CHUNK : 2 * CHUNK + 6]
    dec.finish()


def test_oversized_frames_are_refused_from_their_header() -> None:
    """A frame declaring more than a chunk, or no size, or no checksum is refused before a byte
    of it is decompressed (a damaged frame cannot make the reader allocate past one chunk)."""
    big = zstandard.ZstdCompressor(write_checksum=True).compress(b"\0" * (4 * CHUNK))
    dec = z.ChunkDecompressor(max_chunk=CHUNK)
    with pytest.raises(z.CorruptStream, match="header"):
        dec.feed(big[:18])
    unsized = zstandard.ZstdCompressor(write_checksum=True, write_content_size=False).compress(b"a" * 100)
    unchecked = zstandard.ZstdCompressor(write_checksum=False).compress(b"a" * 100)
    for frame in (unsized, unchecked):
        with pytest.raises(z.CorruptStream, match="header"):
            z.decompress(frame + z.encode_table([(len(frame), 100)]))
    good = z.compress(b"b" * 100)
    with pytest.raises(z.CorruptStream, match="header"):
        z.ChunkDecompressor(expect=((len(good) - z.table_size(1), 99),)).feed(good)


def test_a_short_frame_waits_for_its_header() -> None:
    stored = z.compress(b"tiny")
    dec = z.ChunkDecompressor()
    out = b"".join(dec.feed(stored[i : i + 1]) for i in range(len(stored)))
    dec.finish()
    assert out == b"tiny"


def test_bad_footers() -> None:
    with pytest.raises(z.CorruptStream):
        z.frames_in_footer(b"\0" * 9)
    with pytest.raises(z.CorruptStream):
        z.frames_in_footer(b"short")
    with pytest.raises(z.CorruptStream):
        z.SeekTable.parse(z.encode_table([(10, 20)])[:-10] + z.encode_table([])[-9:])

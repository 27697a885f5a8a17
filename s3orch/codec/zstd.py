"""The stored form of a compressed extent: chunked zstd with a seek table (BEHAVIOURS §1.20).

One extent (a whole PUT object, or one part of a multipart object) is stored as::

    frame 0 | frame 1 | ... | frame n-1 | seek table (a skippable frame)

* **frame i** is an independent zstd frame of ``chunk_size`` input bytes (fewer in the last),
  written with its content size and zstd's content checksum (XXH64 of the chunk), so each chunk
  decompresses on its own and a flipped byte fails that frame's check.
* **the seek table** follows the Zstandard *seekable format* (contrib/seekable_format in the
  zstd sources, so ``zstd`` tools can read our objects): a skippable frame (magic 0x184D2A5E, its
  length), one entry per frame (compressed size, decompressed size: u32 little-endian each, no
  per-entry checksum since the frames carry their own), then the footer: the number of frames
  (u32), a descriptor byte (0) and the seekable magic 0x8F92EAB1.  An extent with no data has
  no frame, only the table.

Why chunks: a ranged GET fetches and decompresses only the frames covering the range
(:meth:`SeekTable.plan`), and both directions hold at most one chunk in memory.  Why a
trailer rather than a header: the compressor streams and only knows the sizes at the end.

A chunk's bytes leave :class:`ChunkDecompressor` only after its frame ended and zstd verified
the frame's checksum (and, when the reader knows the table, its sizes matched the entry), so a
reader never sees a byte of a damaged frame; truncated, reordered or extended streams raise
:class:`CorruptStream` by the end of the stream (at the seek table on a full read, which is
when a frame moved within the object shows; encryption, when on, binds chunks to positions).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import accumulate

import zstandard

SKIPPABLE_MAGIC = 0x184D2A5E
SEEKABLE_MAGIC = 0x8F92EAB1
_ZSTD_MAGIC = 0xFD2FB528
_MAX_FRAME_HEADER = 18  # ZSTD_FRAMEHEADERSIZE_MAX
FOOTER_SIZE = 9
ENTRY_SIZE = 8
_SKIP_HEADER = struct.Struct("<II")
_ENTRY = struct.Struct("<II")
_FOOTER = struct.Struct("<IBI")
assert _FOOTER.size == FOOTER_SIZE

MIN_CHUNK_SIZE = 16 * 1024
MAX_CHUNK_SIZE = 64 * 1024 * 1024
DEFAULT_CHUNK_SIZE = 1024 * 1024

#: ``compression.level`` names → zstd levels.  The original (Go, klauspost/compress) documents
#: its levels as roughly zstd 1, 3, 7 and 11; the same numbers keep ratio and speed comparable.
LEVELS: dict[str, int] = {"fastest": 1, "default": 3, "better": 7, "best": 11}


class CorruptStream(Exception):
    """The stored bytes are not a chunked zstd stream as written: no output of them is released."""


def zstd_level(name: str) -> int:
    """The zstd level for a ``compression.level`` name (ValueError for another name)."""
    try:
        return LEVELS[name]
    except KeyError:
        raise ValueError(f"unknown compression level {name!r}") from None


def check_chunk_size(chunk_size: int) -> int:
    """``chunk_size`` when it is in 16 KiB..64 MiB (ValueError otherwise)."""
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
    return chunk_size


def table_size(frames: int) -> int:
    """Bytes of the trailing seek table of a stream of ``frames`` frames."""
    return _SKIP_HEADER.size + ENTRY_SIZE * frames + FOOTER_SIZE


def encode_table(entries: list[tuple[int, int]]) -> bytes:
    """The seek table (skippable frame) for ``(compressed, decompressed)`` sizes per frame."""
    body = b"".join(_ENTRY.pack(c, d) for c, d in entries)
    body += _FOOTER.pack(len(entries), 0, SEEKABLE_MAGIC)
    return _SKIP_HEADER.pack(SKIPPABLE_MAGIC, len(body)) + body


def frames_in_footer(footer: bytes) -> int:
    """The frame count a stream's last :data:`FOOTER_SIZE` bytes announce: with
    :func:`table_size` it tells a reader how long a suffix to fetch for the whole table."""
    if len(footer) != FOOTER_SIZE:
        raise CorruptStream("seek table footer has the wrong length")
    frames, descriptor, magic = _FOOTER.unpack(footer)
    if magic != SEEKABLE_MAGIC or descriptor != 0:
        raise CorruptStream("not a seekable zstd stream (footer)")
    return int(frames)


@dataclass(frozen=True)
class RangePlan:
    """What a read of logical bytes ``start..end`` (inclusive) fetches and keeps.

    ``first``..``last`` are the frames covering it; ``stored_start``..``stored_end`` (inclusive)
    the stored bytes holding them (one backend range request); after decompressing those
    frames, ``skip`` bytes are dropped and ``length`` bytes served.
    """

    first: int
    last: int
    stored_start: int
    stored_end: int
    skip: int
    length: int
    entries: tuple[tuple[int, int], ...]

    @property
    def fetched(self) -> int:
        """Stored bytes fetched (for the read amplification metric)."""
        return self.stored_end - self.stored_start + 1


@dataclass(frozen=True)
class SeekTable:
    """The parsed seek table: per frame, its compressed and decompressed size."""

    entries: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, data: bytes) -> SeekTable:
        """Parse a whole seek table (the skippable frame, header to footer), strictly."""
        if len(data) < table_size(0):
            raise CorruptStream("seek table too short")
        frames = frames_in_footer(data[-FOOTER_SIZE:])
        if len(data) != table_size(frames):
            raise CorruptStream("seek table length does not match its frame count")
        magic, body_len = _SKIP_HEADER.unpack_from(data)
        if magic != SKIPPABLE_MAGIC or body_len != len(data) - _SKIP_HEADER.size:
            raise CorruptStream("seek table is not a skippable frame of its length")
        entries = tuple(
            (int(c), int(d)) for c, d in _ENTRY.iter_unpack(data[_SKIP_HEADER.size : -FOOTER_SIZE])
        )
        return cls(entries)

    @property
    def logical_size(self) -> int:
        return sum(d for _, d in self.entries)

    @property
    def stored_size(self) -> int:
        """Bytes of the whole stored stream, seek table included."""
        return sum(c for c, _ in self.entries) + table_size(len(self.entries))

    def plan(self, start: int, end: int) -> RangePlan:
        """The frames and stored bytes covering logical bytes ``start..end`` (inclusive,
        already clamped by the caller to the object: 0 <= start <= end < logical_size)."""
        if not 0 <= start <= end < self.logical_size:
            raise ValueError(f"range {start}-{end} outside 0..{self.logical_size - 1}")
        d_ends = list(accumulate(d for _, d in self.entries))
        c_ends = list(accumulate(c for c, _ in self.entries))
        first = next(i for i, e in enumerate(d_ends) if e > start)
        last = next(i for i in range(first, len(d_ends)) if d_ends[i] > end)
        d_first = d_ends[first] - self.entries[first][1]
        c_first = c_ends[first] - self.entries[first][0]
        return RangePlan(
            first=first,
            last=last,
            stored_start=c_first,
            stored_end=c_ends[last] - 1,
            skip=start - d_first,
            length=end - start + 1,
            entries=self.entries[first : last + 1],
        )


class ChunkCompressor:
    """Streaming compressor: ``feed`` input, get finished frames; ``finish`` flushes the last
    chunk and appends the seek table.  Holds at most one chunk of input."""

    def __init__(self, level: str = "default", chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self._chunk_size = check_chunk_size(chunk_size)
        self._zstd = zstandard.ZstdCompressor(
            level=zstd_level(level), write_checksum=True, write_content_size=True
        )
        self._pending = bytearray()
        self._entries: list[tuple[int, int]] = []
        self._finished = False

    @property
    def entries(self) -> tuple[tuple[int, int], ...]:
        return tuple(self._entries)

    def _frame(self, chunk: bytes) -> bytes:
        frame = self._zstd.compress(chunk)
        self._entries.append((len(frame), len(chunk)))
        return frame

    def feed(self, data: bytes) -> bytes:
        """Compress whatever whole chunks ``data`` completes; returns their frames (maybe b"")."""
        if self._finished:
            raise ValueError("compressor already finished")
        self._pending += data
        out = []
        size = self._chunk_size
        whole = len(self._pending) - len(self._pending) % size
        for offset in range(0, whole, size):
            out.append(self._frame(bytes(self._pending[offset : offset + size])))
        del self._pending[:whole]
        return b"".join(out)

    def finish(self) -> bytes:
        """The last (short) frame, if any, and the seek table."""
        if self._finished:
            raise ValueError("compressor already finished")
        self._finished = True
        tail = self._frame(bytes(self._pending)) if self._pending else b""
        self._pending.clear()
        return tail + encode_table(self._entries)


class ChunkDecompressor:
    """Streaming decompressor of consecutive frames, releasing a chunk only once it verified.

    With ``expect`` (the plan's entries), exactly those frames are read and nothing may follow
    (a ranged read).  Without it, the whole stored stream is read: frames up to the seek table,
    which must then list exactly the frames seen and end the stream (a full read).  Memory: one
    chunk of output and one delivery of input.
    """

    def __init__(
        self, expect: tuple[tuple[int, int], ...] | None = None, max_chunk: int = MAX_CHUNK_SIZE
    ) -> None:
        self._expect = expect
        self._max_chunk = max_chunk
        self._buffer = bytearray()
        self._seen: list[tuple[int, int]] = []
        self._done = False
        self._obj: zstandard.ZstdDecompressionObj | None = None
        self._out = bytearray()
        self._consumed = 0

    def feed(self, data: bytes) -> bytes:
        """Consume stored bytes; return the verified output of every frame they complete."""
        self._buffer += data
        out: list[bytes] = []
        while self._step(out):
            pass
        return b"".join(out)

    def finish(self) -> None:
        """The stream ended: anything short of a complete stream is corrupt."""
        if self._expect is not None and len(self._seen) == len(self._expect) and self._obj is None:
            self._done = True
        if not self._done or self._buffer:
            raise CorruptStream("stream ended early or has trailing bytes")

    def _step(self, out: list[bytes]) -> bool:
        """Advance by one frame boundary or one delivery; False when more input is needed."""
        buf = self._buffer
        if self._done:
            if buf:
                raise CorruptStream("bytes after the end of the stream")
            return False
        if self._obj is None:
            if self._expect is not None and len(self._seen) == len(self._expect):
                self._done = True
                return True
            if len(buf) < 4:
                return False
            (magic,) = struct.unpack_from("<I", buf)
            if magic == SKIPPABLE_MAGIC:
                return self._table()
            if magic != _ZSTD_MAGIC:
                raise CorruptStream("not a zstd frame where one should start")
            if not self._header_ok():
                return False
            self._obj = zstandard.ZstdDecompressor().decompressobj()
            self._out.clear()
            self._consumed = 0
        if not buf:
            return False
        limit = len(buf)
        if self._expect is not None:
            limit = min(limit, self._expect[len(self._seen)][0] - self._consumed)
        piece = bytes(buf[:limit])
        try:
            self._out += self._obj.decompress(piece)
        except zstandard.ZstdError as exc:
            raise CorruptStream(f"zstd frame rejected: {exc}") from exc
        if len(self._out) > self._max_chunk:
            raise CorruptStream("frame larger than the chunk size")
        if not self._obj.eof:
            self._consumed += len(piece)
            del buf[:limit]
            if self._expect is not None and self._consumed >= self._expect[len(self._seen)][0]:
                raise CorruptStream("frame longer than its table entry")
            return bool(buf)
        used = len(piece) - len(self._obj.unused_data)
        self._consumed += used
        del buf[:used]
        entry = (self._consumed, len(self._out))
        if self._expect is not None and entry != self._expect[len(self._seen)]:
            raise CorruptStream("frame does not match its table entry")
        self._seen.append(entry)
        self._obj = None
        out.append(bytes(self._out))
        self._out.clear()
        return True

    def _header_ok(self) -> bool:
        """Check the frame header before decompressing a byte of it (False: need more input).

        Every frame we write declares its content size and a checksum; a header declaring more
        than a chunk (or, from the table, another size) is refused here, and zstd refuses to
        decode past the declared size, so a damaged frame cannot make us allocate more than a
        chunk (a small input can otherwise expand by ~32,000 times)."""
        head = bytes(self._buffer[:_MAX_FRAME_HEADER])
        try:
            params = zstandard.get_frame_parameters(head)
        except zstandard.ZstdError as exc:
            if len(head) < _MAX_FRAME_HEADER:
                return False
            raise CorruptStream(f"zstd frame header rejected: {exc}") from exc
        size = params.content_size
        if not params.has_checksum or size == zstandard.CONTENTSIZE_UNKNOWN or size > self._max_chunk:
            raise CorruptStream("frame header is not one of a chunk (size, checksum)")
        if self._expect is not None and size != self._expect[len(self._seen)][1]:
            raise CorruptStream("frame header does not match its table entry")
        return True

    def _table(self) -> bool:
        if self._expect is not None:
            raise CorruptStream("seek table where a frame was expected")
        size = table_size(len(self._seen))
        if len(self._buffer) >= 8:
            (body,) = struct.unpack_from("<I", self._buffer, 4)
            if body + _SKIP_HEADER.size != size:
                raise CorruptStream("seek table does not list the frames seen")
        if len(self._buffer) < size:
            return False
        table = SeekTable.parse(bytes(self._buffer[:size]))
        if table.entries != tuple(self._seen):
            raise CorruptStream("seek table does not list the frames seen")
        del self._buffer[:size]
        self._done = True
        return True


def compress(data: bytes, level: str = "default", chunk_size: int = DEFAULT_CHUNK_SIZE) -> bytes:
    """The whole stored form of ``data`` (tests and small documents)."""
    comp = ChunkCompressor(level, chunk_size)
    return comp.feed(data) + comp.finish()


def decompress(stored: bytes, max_chunk: int = MAX_CHUNK_SIZE) -> bytes:
    """The logical bytes of a whole stored stream, verified (tests and small documents)."""
    dec = ChunkDecompressor(max_chunk=max_chunk)
    out = dec.feed(stored)
    dec.finish()
    return out


def read_range(stored: bytes, start: int, end: int) -> bytes:
    """Logical bytes ``start..end`` of ``stored``, decompressing only the covering frames
    (reference for the streaming read path; the table comes from the stream's tail)."""
    frames = frames_in_footer(stored[-FOOTER_SIZE:])
    table = SeekTable.parse(stored[-table_size(frames) :])
    plan = table.plan(start, end)
    dec = ChunkDecompressor(expect=plan.entries)
    out = dec.feed(stored[plan.stored_start : plan.stored_end + 1])
    dec.finish()
    return out[plan.skip : plan.skip + plan.length]

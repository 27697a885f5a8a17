"""``compression.*`` from a config file to the write path's compressor (s3orch.codec.objects).

Each key changes what is stored: ``enabled`` builds the compressor (or not), ``level`` the zstd
level (a better level stores the same text in fewer bytes), ``chunk_size`` the frames (one per
chunk: the seek table lists them), ``min_size`` and ``min_ratio`` when a body is stored as is.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import yaml
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from s3orch.codec import zstd as z
from s3orch.codec.objects import Compressor, build_compressor
from s3orch.codec.streams import CompressionSettings
from s3orch.config import load_config_from_string
from s3orch.payload import Payload
from s3orch.testing.harness import DEFAULT_CONFIG

T = TypeVar("T")
TEXT = b"".join(b"%05d some log line, %d with a repeated tail of words\n" % (i, i * 7919 % 1000) for i in range(6000))


def run(coro: Coroutine[Any, Any, T]) -> T:
    results: list[T | Failure] = []
    Deferred.fromCoroutine(coro).addBoth(results.append)
    (result,) = results
    if isinstance(result, Failure):
        result.raiseException()
    return result  # type: ignore[return-value]


def compressor(**section: Any) -> Compressor | None:
    text = DEFAULT_CONFIG.replace("{workdir}", "/tmp").replace("{port}", "9000")
    text += yaml.safe_dump({"compression": section})
    return build_compressor(load_config_from_string(text, {}).compression, None, None)


def stored(comp: Compressor, body: bytes) -> bytes | None:
    packed = run(comp.pack(Payload.from_bytes(body)))
    if packed is None:
        return None
    try:
        return packed.reader().read()
    finally:
        packed.close()


def test_build_compressor_follows_the_switch_and_every_key() -> None:
    assert compressor(enabled=False, level="best") is None
    built = compressor(enabled=True, level="best", chunk_size="32KiB", min_size=100, min_ratio=0.5)
    assert built is not None
    assert built.settings == CompressionSettings("best", 32 * 1024, 100, 0.5)
    defaults = compressor(enabled=True)
    assert defaults is not None and defaults.settings == CompressionSettings("default", 1024 * 1024, 4096, 0.95)


def test_level_and_chunk_size_change_the_stored_form() -> None:
    fastest, best = compressor(enabled=True, level="fastest"), compressor(enabled=True, level="best")
    small_chunks = compressor(enabled=True, chunk_size="16KiB")
    assert fastest is not None and best is not None and small_chunks is not None
    by_fastest, by_best, by_small = stored(fastest, TEXT), stored(best, TEXT), stored(small_chunks, TEXT)
    assert by_fastest is not None and by_best is not None and by_small is not None
    assert len(by_best) < len(by_fastest)
    assert z.decompress(by_best) == z.decompress(by_fastest) == z.decompress(by_small) == TEXT
    assert len(z.SeekTable.parse(by_small[-z.table_size(-(-len(TEXT) // 16384)):]).entries) == -(-len(TEXT) // 16384)


def test_min_size_and_min_ratio_decide_what_is_stored_as_is() -> None:
    low_bar = compressor(enabled=True, min_size=len(TEXT) + 1)
    assert low_bar is not None and stored(low_bar, TEXT) is None
    strict = compressor(enabled=True, min_ratio=0.01)  # no text saves 99%
    assert strict is not None and stored(strict, TEXT) is None
    lenient = compressor(enabled=True, min_size=0, min_ratio=0.9)
    assert lenient is not None and stored(lenient, TEXT) is not None

"""What tracing costs a request: ``python -m tools.bench_tracing [--requests N]``.

The tracing hooks one PUT passes through (a server span, two context blocks, three traced core
methods, one backend span, three log lines' id look-ups) against the same core calls without the
hooks: with tracing off (the fast path: no span, no context), and on with every request sampled
into a batch processor whose exporter drops the spans (the span work, without the network).
Prints the cost per request on this machine; nothing is written.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from s3orch.config.model import TracingConfig
from s3orch.observe import tracing


class _Dropping(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def _core() -> None:
    return None


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        coroutine.send(None)
    except StopIteration:
        pass


def hooks(number: int, repeat: int = 7) -> tuple[float, float]:
    """(ns per request with the hooks, ns per request without them), best of ``repeat``."""
    traced = tracing.traced("core.X")(_core)
    headers = {"host": ["gateway"]}

    def hooked() -> None:
        span = tracing.server_span("PUT", b"/b/k", headers)
        with tracing.using(span):
            for _ in range(3):
                _run(traced())
            call = tracing.backend_span("b", "PutObject", "PUT", {})
            if call is not None:
                tracing.end_backend_span(call, "200")
            for _ in range(3):
                tracing.log_ids()
        with tracing.using(span):
            pass
        if span is not None:
            tracing.end_server_span(span, "PutObject", 200, {})

    def bare() -> None:
        for _ in range(3):
            _run(_core())

    def best(fn: Callable[[], None]) -> float:
        return min(timeit.repeat(fn, repeat=repeat, number=number)) / number * 1e9

    return best(hooked), best(bare)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=100_000, help="requests per timing (default 100000)")
    args = parser.parse_args(argv)
    hooked, bare = hooks(args.number)
    print(f"tracing off: {hooked - bare:.0f} ns of hooks per request ({hooked:.0f} ns with, {bare:.0f} without)")
    for rate in (0.0, 1.0):
        provider = tracing.provider_for(TracingConfig(enabled=True, endpoint="-", sample_rate=rate), _Dropping())
        tracing.install(provider)
        try:
            spans, _ = hooks(args.number // 10)
        finally:
            tracing.uninstall()
            provider.shutdown()
        print(f"tracing on, sample_rate {rate:g}: {(spans - bare) / 1000:.1f} us of spans per request"
              " (sampled: 5 spans; not: the server span alone; export not included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

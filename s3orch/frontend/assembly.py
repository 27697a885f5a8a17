"""The S3 front door assembled: handler tables merged once, around them the envelope.

This is the one place that knows every handler module; :mod:`s3orch.tap` (and the
tests' in-memory front doors) build the front door through :func:`build_frontend`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from twisted.internet.interfaces import IReactorTime

from s3orch.auth.registry import CredentialRegistry
from s3orch.config.model import ServerConfig
from s3orch.core.objects import ObjectService
from s3orch.core.stream_write import stream_allowed
from s3orch.core.uploads import MultipartService
from s3orch.frontend.envelope import DEFAULT_RESERVED_PREFIXES, S3Envelope, WriteGate
from s3orch.frontend.handlers.bucket import BucketHandlers
from s3orch.frontend.handlers.multipart import MultipartHandlers
from s3orch.frontend.handlers.object import ObjectHandlers
from s3orch.frontend.handlers.service import ServiceHandlers
from s3orch.frontend.request import Route
from s3orch.http.admission import Admission
from s3orch.http.ratelimit import RateLimiter


def merge_routes(*tables: Mapping[str, Route]) -> dict[str, Route]:
    """One route table from several; an operation claimed twice is a programming error."""
    merged: dict[str, Route] = {}
    for table in tables:
        for name, route in table.items():
            if name in merged:
                raise ValueError(f"two handlers claim the S3 operation {name}")
            merged[name] = route
    return merged


def build_frontend(
    *,
    server: ServerConfig,
    registry: CredentialRegistry,
    objects: ObjectService,
    clock: IReactorTime,
    multipart: MultipartService | None = None,
    reserved_prefixes: Sequence[bytes] = DEFAULT_RESERVED_PREFIXES,
    admission: Admission | None = None,
    write_gate: WriteGate | None = None,
    limiter: RateLimiter | None = None,
) -> S3Envelope:
    """The S3 front door over these services.

    Without ``multipart`` the multipart operations answer 501 NotImplemented.
    """
    tables: list[Mapping[str, Route]] = [
        ServiceHandlers(started_at=clock.seconds()).routes(),
        BucketHandlers(objects).routes(),
        ObjectHandlers(objects, clock).routes(),
    ]
    if multipart is not None:
        tables.append(MultipartHandlers(multipart, objects, clock).routes())
    return S3Envelope(
        server=server,
        registry=registry,
        routes=merge_routes(*tables),
        clock=clock,
        reserved_prefixes=reserved_prefixes,
        admission=admission,
        write_gate=write_gate,
        limiter=limiter,
        stream_gate=lambda has_hex_claim: stream_allowed(objects, has_hex_claim),
    )

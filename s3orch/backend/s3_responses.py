"""What an S3 backend's answers mean: error statuses and ``<Error>`` bodies mapped to
:class:`~s3orch.backend.interface.BackendError`, small bodies (errors, listings) read
with a bound, and XML documents read through defusedxml like client XML.

Object bodies are never read here: they stream (:mod:`s3orch.backend.s3_streams`).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any, cast

from defusedxml import ElementTree as DefusedET
from defusedxml.common import DefusedXmlException
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from s3orch.backend.interface import BackendError, BackendNotFound, BackendUnavailable, PushProducer

#: An ``IResponse`` from Twisted's Agent.  zope interfaces are opaque to mypy
#: without a plugin, so responses are handled as Any at this one boundary.
Response = Any

ERROR_BODY_LIMIT = 64 * 1024
LIST_BODY_LIMIT = 16 * 1024 * 1024
_XML_CODE = re.compile(rb"<Code>([^<]{1,256})</Code>")
_XML_MESSAGE = re.compile(rb"<Message>([^<]{0,2048})</Message>")


def response_headers(response: Response) -> dict[str, str]:
    """A response's headers as a lower-case dict (see :func:`lower_headers`); the lean
    client's responses carry it already (``by_name``: that dict itself, a response is read once)."""
    by_name: dict[str, str] | None = getattr(response, "by_name", None)
    return by_name if by_name is not None else lower_headers(response.headers)


def lower_headers(raw: Headers) -> dict[str, str]:
    """Response headers as a lower-case dict (repeated headers joined by ', ')."""
    out: dict[str, str] = {}
    for name, values in raw.getAllRawHeaders():
        key = name.decode("latin-1").lower()
        out[key] = ", ".join(v.decode("latin-1") for v in values)
    return out


def parse_error_body(body: bytes) -> tuple[str | None, str | None]:
    """(Code, Message) of an S3 ``<Error>`` document; regex, so a truncated or
    odd body still yields its code, and no XML parser sees untrusted input."""
    code = _XML_CODE.search(body)
    message = _XML_MESSAGE.search(body)
    return (
        code.group(1).decode("utf-8", "replace").strip() if code else None,
        message.group(1).decode("utf-8", "replace").strip() if message else None,
    )


def parse_xml(body: bytes, what: str, backend: str) -> ET.Element:
    """Parse a bounded backend XML document through defusedxml, like client XML (no DTD, no entities)."""
    try:
        element = DefusedET.fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException:
        raise BackendError(f"{what}: XML with a DTD or entities refused", backend=backend) from None
    except (ET.ParseError, ValueError) as exc:
        raise BackendError(f"{what}: malformed XML: {exc}", backend=backend) from None
    if not isinstance(element, ET.Element):
        raise BackendError(f"{what}: malformed XML", backend=backend)
    return element


def local_name(tag: str) -> str:
    """An element's tag without its namespace (S3 documents may or may not carry one)."""
    return tag.rpartition("}")[2]


def children(element: ET.Element, name: str) -> Iterator[ET.Element]:
    """The children of ``element`` called ``name`` (any namespace)."""
    return (child for child in element if local_name(child.tag) == name)


def child_text(element: ET.Element, name: str) -> str | None:
    """The text of the first child called ``name`` ("" if empty), None if there is none."""
    for child in children(element, name):
        return child.text or ""
    return None


def unquote_etag(value: str | None) -> str:
    """An ETag header or element without its quotes (the core keeps them bare)."""
    return (value or "").strip().strip('"')


def error_for_status(status: int, code: str | None, message: str | None, backend: str) -> BackendError:
    """Map an error response to the backend error hierarchy."""
    text = message or f"HTTP {status}"
    if status == 404 and code in (None, "NoSuchKey", "NotFound"):
        return BackendNotFound(text, code=code or "NoSuchKey", backend=backend)
    transient = (status >= 500 and status != 501) or status in (408, 429)
    if transient or code in ("SlowDown", "RequestTimeout"):
        return BackendUnavailable(text, status=status, code=code, backend=backend)
    return BackendError(text, status=status, code=code, backend=backend)


class _BoundedReader(TwistedProtocol):
    """Collects a small response body; stops the transfer past ``limit``.

    With ``truncate`` the first ``limit`` bytes are kept (enough to find an
    error code) and the connection is dropped; otherwise an oversize body fails.
    """

    def __init__(self, limit: int, truncate: bool, backend: str) -> None:
        self.done: Deferred[bytes] = Deferred()
        self._limit = limit
        self._truncate = truncate
        self._backend = backend
        self._parts: list[bytes] = []
        self._size = 0
        self._finished = False

    def dataReceived(self, data: bytes) -> None:
        if self._finished:
            return
        self._parts.append(data)
        self._size += len(data)
        if self._size > self._limit:
            self._finished = True
            cast(PushProducer, self.transport).stopProducing()
            if self._truncate:
                self.done.callback(b"".join(self._parts)[: self._limit])
            else:
                self.done.errback(
                    BackendError(
                        f"response body larger than {self._limit} bytes",
                        backend=self._backend,
                    )
                )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._finished:
            return
        self._finished = True
        if isinstance(reason.value, (ResponseDone, PotentialDataLoss)):
            self.done.callback(b"".join(self._parts))
        else:
            self.done.errback(
                BackendUnavailable(
                    f"response body lost: {reason.getErrorMessage()}",
                    backend=self._backend,
                )
            )


async def read_body(response: Response, limit: int, backend: str, *, truncate: bool = False) -> bytes:
    """A small response body, at most ``limit`` bytes (see :class:`_BoundedReader`)."""
    reader = _BoundedReader(limit, truncate, backend)
    response.deliverBody(reader)
    return await reader.done

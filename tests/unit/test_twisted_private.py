"""The private parts of Twisted our HTTP layer overrides or reads are still there.

``s3orch/http/site.py`` and ``s3orch/http/relay.py`` subclass ``HTTPChannel`` and
``Request`` and read a few of their private attributes (setup.cfg pins Twisted to
the range this was tested against).  A Twisted release that renames one would not
fail loudly: an override of a method nobody calls any more is dead code, and a
``getattr(..., default)`` just returns the default.  Each check here names the
attribute and what depends on it, so an upgrade that breaks one says where to look.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from twisted.internet import abstract, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.web import http, server
from twisted.web.resource import Resource

from s3orch.http.site import S3Channel, S3Site
from s3orch.http.write_deadline import pending_write_bytes

#: (owner, attribute, what in s3orch needs it): class-level attributes and methods.
CLASS_ATTRIBUTES: list[tuple[type, str, str]] = [
    (http.HTTPChannel, "_respondToBadRequestAndDisconnect",
     "S3Channel overrides it to answer framing errors as S3 XML (Twisted calls it from its parser)"),
    (http.HTTPChannel, "_send100Continue", "S3Channel.allHeadersReceived sends 100 Continue only after admission"),
    (http.HTTPChannel, "_receivedHeaderCount", "S3Channel tells an oversized header section from a malformed one"),
    (http.HTTPChannel, "_receivedHeaderSize", "S3Channel tells an oversized header section from a malformed one"),
    (http.HTTPChannel, "_waitingForTransport", "relay.py starts a producer paused when the socket is full"),
    (http.HTTPChannel, "totalHeadersSize", "S3Channel: RequestHeaderSectionTooLarge"),
    (http.HTTPChannel, "maxHeaders", "S3Channel: RequestHeaderSectionTooLarge"),
    (http.HTTPChannel, "lineLengthExceeded", "S3Channel answers an over-long line instead of dropping it"),
    (http.HTTPChannel, "headerReceived", "S3Channel caps Content-Length digits before Twisted int()s it"),
    (http.HTTPChannel, "allHeadersReceived", "S3Channel replaces it to call the early handler"),
    (http.HTTPChannel, "allContentReceived", "S3Channel cancels the read deadlines"),
    (http.HTTPChannel, "rawDataReceived", "S3Channel turns RejectedEarly from the body into an answer"),
    (http.HTTPChannel, "checkPersistence", "S3Channel.allHeadersReceived"),
    (server.Request, "_disconnected", "frontend/request.py and relay.py: the client left before the answer"),
    (server.Request, "gotLength", "S3Request routes the body to the front end's sink"),
    (server.Request, "handleContentChunk", "S3Request feeds the body to the front end"),
    (server.Request, "parseCookies", "S3Channel.allHeadersReceived"),
    (server.Request, "process", "S3Request.process holds back a bodyless request waiting for a slot (http/hold.py)"),
    (abstract.FileDescriptor, "dataBuffer", "write_deadline.pending_write_bytes: the write deadline sees progress"),
    (abstract.FileDescriptor, "offset", "write_deadline.pending_write_bytes: the write deadline sees progress"),
    (abstract.FileDescriptor, "bufferSize", "socket_buffers: a socket's read size and write high-water mark"),
    (abstract.FileDescriptor, "SEND_LIMIT", "socket_buffers.WriteWindow: bytes per send() while relaying"),
    (abstract.FileDescriptor, "producerPaused", "eager_write: a paused producer means bytes are queued"),
    (abstract.FileDescriptor, "_writeDisconnecting", "eager_write: a half-close is pending"),
    (abstract.FileDescriptor, "_writeDisconnected", "eager_write: the write side is closed"),
    (tcp.Connection, "_aborting", "eager_write: after abortConnection nothing more may leave (the socket closes a turn later)"),
    (tcp.Connection, "TLS", "eager_write: a TCP connection after startTLS must go through its TLS layer"),
    (tcp.Connection, "writeSomeData", "eager_write sends through it when nothing is queued"),
]


@pytest.mark.parametrize(
    ("owner", "name", "why"), CLASS_ATTRIBUTES, ids=[f"{o.__name__}.{n}" for o, n, _ in CLASS_ATTRIBUTES]
)
def test_private_attribute_still_exists(owner: type, name: str, why: str) -> None:
    assert hasattr(owner, name), f"Twisted's {owner.__module__}.{owner.__name__}.{name} is gone; {why}"


#: Twisted's parser calls these hooks with exactly these parameters (after self).
SIGNATURES: list[tuple[type, str, list[str]]] = [
    (http.HTTPChannel, "_respondToBadRequestAndDisconnect", []),
    (http.HTTPChannel, "lineLengthExceeded", ["line"]),
    (http.HTTPChannel, "headerReceived", ["line"]),
    (server.Request, "gotLength", ["length"]),
    (server.Request, "handleContentChunk", ["data"]),
]


@pytest.mark.parametrize(("owner", "name", "params"), SIGNATURES, ids=[n for _, n, _ in SIGNATURES])
def test_overridden_hook_keeps_its_signature(owner: type, name: str, params: list[str]) -> None:
    found = list(inspect.signature(getattr(owner, name)).parameters)[1:]
    assert found == params, f"Twisted's {owner.__name__}.{name} now takes {found}; S3Channel/S3Request override it"


def test_all_headers_received_does_only_what_s3channel_reimplements() -> None:
    # S3Channel.allHeadersReceived replaces Twisted's wholesale; if Twisted's starts doing
    # something more (a name we do not know), ours silently skips it.
    known = {
        "requests", "parseCookies", "checkPersistence", "_version", "persistent", "gotLength", "length",
        "requestHeaders", "getRawHeaders", "lower", "_send100Continue",
    }
    names = set(http.HTTPChannel.allHeadersReceived.__code__.co_names)
    assert names <= known, f"HTTPChannel.allHeadersReceived now also uses {sorted(names - known)}: update S3Channel"


def test_the_parser_sets_the_request_line_attributes_s3channel_reads() -> None:
    channel = http.HTTPChannel()
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"PUT /b/k?x=1 HTTP/1.1\r\nHost: h\r\nx-a: 1\r\nx-b: 2\r\n")
    state: Any = channel
    for name, value in (("_command", b"PUT"), ("_path", b"/b/k?x=1"), ("_version", b"HTTP/1.1")):
        assert getattr(state, name, None) == value, f"HTTPChannel no longer sets {name}; S3Channel reads it"
    # S3Channel.dataReceived/lineReceived read _handlingRequest to start the read deadlines.
    assert getattr(state, "_handlingRequest", None) is False, "HTTPChannel no longer sets _handlingRequest"
    assert state._receivedHeaderSize > 0, "HTTPChannel no longer counts _receivedHeaderSize"
    # A header is parsed when the next line starts: Host and x-a so far.
    assert state._receivedHeaderCount == 2, "HTTPChannel no longer counts _receivedHeaderCount"
    channel.dataReceived(b"\r\n")
    assert state._handlingRequest is True


def test_a_bad_request_goes_through_the_hook_s3channel_overrides() -> None:
    calls: list[str] = []

    class Spy(http.HTTPChannel):
        def _respondToBadRequestAndDisconnect(self) -> None:
            calls.append("bad")
            self.transport.loseConnection()  # type: ignore[union-attr]  # set by makeConnection

    channel = Spy()
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"NOT-A-REQUEST\r\n\r\n")
    assert calls == ["bad"], "Twisted no longer refuses a bad request line through _respondToBadRequestAndDisconnect"


def test_the_transport_buffer_pending_write_bytes_reads() -> None:
    descriptor: Any = abstract.FileDescriptor.__new__(abstract.FileDescriptor)
    abstract.FileDescriptor.__init__(descriptor)
    assert isinstance(descriptor._tempDataLen, int), "FileDescriptor._tempDataLen is gone (pending_write_bytes)"
    descriptor.dataBuffer = b"abcdef"
    descriptor.offset = 2
    descriptor._tempDataLen = 3
    assert pending_write_bytes(descriptor) == 7


def test_the_socket_sizes_socket_buffers_sets_are_the_ones_tcp_uses() -> None:
    # set_read_size / WriteWindow set these attributes; Twisted must still read them there.
    assert "bufferSize" in tcp.Connection.doRead.__code__.co_names, "tcp reads no longer use bufferSize"
    assert "bufferSize" in abstract.FileDescriptor._isSendBufferFull.__code__.co_names, (
        "the write high-water mark is no longer bufferSize (socket_buffers.WriteWindow)"
    )
    assert "SEND_LIMIT" in tcp.Connection.writeSomeData.__code__.co_names, "sends are no longer capped by SEND_LIMIT"


def test_the_site_builds_our_channel() -> None:
    site = S3Site(Resource(), early_handler=None)
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert isinstance(protocol, S3Channel)
    assert callable(getattr(protocol, "callLater", None)), "HTTPFactory no longer sets callLater on its channels"


def test_the_channel_has_the_network_producer_an_admission_wait_pauses() -> None:
    # http/hold.py pauses and resumes HTTPChannel._networkProducer (the transport as a push
    # producer) when a request waiting for an admission slot buffers too much of its body.
    channel: Any = http.HTTPChannel()
    transport = StringTransport()
    channel.makeConnection(transport)
    channel._networkProducer.pauseProducing()
    assert transport.producerState == "paused", "HTTPChannel._networkProducer no longer pauses the transport"
    channel._networkProducer.resumeProducing()
    assert transport.producerState == "producing"


def test_the_private_failures_the_lean_backend_client_raises_are_still_there() -> None:
    # s3orch.backend.http11*: a request on a connection that cannot take it is RequestNotSent
    # (the pool's stale-connection retry keys on it, as Twisted's does); a body producer that
    # breaks its length is WrongBodyLength inside RequestGenerationFailed, as with Agent.
    from twisted.web import _newclient
    from twisted.web.client import RequestGenerationFailed

    assert issubclass(_newclient.RequestNotSent, Exception), "twisted.web._newclient.RequestNotSent is gone"
    assert issubclass(_newclient.WrongBodyLength, Exception), "twisted.web._newclient.WrongBodyLength is gone"
    assert RequestGenerationFailed is _newclient.RequestGenerationFailed


def test_the_buffers_eager_write_checks_are_the_ones_write_fills() -> None:
    # eager_write sends at once only when _tempDataBuffer/_tempDataLen/dataBuffer are empty;
    # if write() queued elsewhere, eager sends could overtake queued bytes.
    for name in ("_tempDataBuffer", "_tempDataLen"):
        assert name in abstract.FileDescriptor.write.__code__.co_names, f"FileDescriptor.write no longer fills {name}"
    assert "dataBuffer" in abstract.FileDescriptor.doWrite.__code__.co_names


def test_requests_write_through_the_channel_methods_s3channel_overrides() -> None:
    # S3Channel.write/writeSequence/writeHeaders send eagerly and S3Request.write joins the
    # first write's pieces; S3Channel.getHost caches what Request.__init__ asks for.
    names = set(http.Request.write.__code__.co_names)
    assert {"writeHeaders", "write", "writeSequence"} <= names, "Request.write no longer goes through the channel"
    assert "getHost" in http.Request.__init__.__code__.co_names, "Request.__init__ no longer asks channel.getHost"

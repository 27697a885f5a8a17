"""The lean HTTP/1.1 backend client (s3orch.backend.http11) at the byte level: connections
are StringTransports handed out by a fake endpoint, time is a task.Clock."""

from __future__ import annotations

from typing import Any, cast

import pytest
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from zope.interface import implementer

from s3orch.backend.http11 import LeanAgent, LeanPool, split_uri
from s3orch.backend.http11_connection import HTTP11Connection
from s3orch.backend.interface import BackendUnavailable
from s3orch.backend.s3 import S3Backend
from s3orch.config import load_config_from_string

URL = b"http://backend.test:9000/bucket/key?x=1"
ORIGIN = ("http", "backend.test", 9000)
OK_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """Every connect gives a new connection over a StringTransport, at once."""

    def __init__(self) -> None:
        self.connections: list[tuple[HTTP11Connection, Any]] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)


class Reader(Protocol):
    """A body protocol that records what it got and how the body ended."""

    transport: Any

    def __init__(self) -> None:
        self.data = b""
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.reason = reason

    def ended(self, kind: type[BaseException]) -> bool:
        return self.reason is not None and self.reason.check(kind) is not None


class Producer:
    """An IBodyProducer the test drives by hand."""

    def __init__(self, length: Any) -> None:
        self.length = length
        self.consumer: Any = None
        self.done: Deferred[None] = Deferred()
        self.stopped = False

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self.consumer = consumer
        return self.done

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.stopped = True


class Rig:
    def __init__(self, *, max_idle: int = 2, idle_timeout: float = 60) -> None:
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        self.pool = LeanPool(self.clock, max_persistent_per_host=max_idle, cached_connection_timeout=idle_timeout)
        self.agent = LeanAgent(self.clock, pool=self.pool, endpoint_factory=lambda origin: self.endpoint)

    def request(self, method: bytes = b"GET", body: Any = None, url: bytes = URL) -> tuple[Deferred[Any], list[Any]]:
        d = self.agent.request(method, url, Headers({b"x-test": [b"1"]}), body)
        outcome: list[Any] = []
        d.addBoth(outcome.append)
        return d, outcome

    def conn(self, index: int = -1) -> tuple[HTTP11Connection, Any]:
        return self.endpoint.connections[index]


def _lost(protocol: HTTP11Connection, reason: Exception | None = None) -> None:
    protocol.connectionLost(Failure(reason or ConnectionDone()))


def test_split_uri_keeps_the_raw_target_and_omits_a_default_port() -> None:
    assert split_uri(URL) == (ORIGIN, b"backend.test:9000", b"/bucket/key?x=1")
    assert split_uri(b"https://h.test:443/a%2Fb") == (("https", "h.test", 443), b"h.test", b"/a%2Fb")
    assert split_uri(b"http://h.test?list") == (("http", "h.test", 80), b"h.test", b"/?list")


def test_request_is_written_with_host_and_a_kept_alive_connection_is_reused() -> None:
    rig = Rig()
    _, outcome = rig.request()
    protocol, transport = rig.conn()
    sent = transport.value()
    assert sent.startswith(b"GET /bucket/key?x=1 HTTP/1.1\r\n")
    assert b"Host: backend.test:9000\r\n" in sent and b"X-Test: 1\r\n" in sent
    assert b"Content-Length" not in sent
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"e\"\r\n\r\nhel")
    response = outcome[0]
    assert (response.code, response.phrase, response.length) == (200, b"OK", 5)
    assert response.headers.getRawHeaders(b"etag") == [b'"e"']
    assert transport.producerState == "paused"  # nobody reads the body yet
    reader = Reader()
    response.deliverBody(reader)
    assert transport.producerState == "producing"
    protocol.dataReceived(b"lo")
    assert reader.data == b"hello" and reader.ended(ResponseDone)
    assert rig.pool.idle_count(ORIGIN) == 1
    transport.clear()
    _, second = rig.request()
    assert len(rig.endpoint.connections) == 1  # the same connection carried it
    assert transport.value().startswith(b"GET ")
    protocol.dataReceived(OK_EMPTY)
    assert second[0].code == 200


def test_a_body_abandoned_midway_closes_the_connection_and_is_never_reused() -> None:
    rig = Rig()
    _, outcome = rig.request()
    protocol, transport = rig.conn()
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
    reader = Reader()
    outcome[0].deliverBody(reader)
    reader.transport.stopProducing()
    assert transport.disconnected  # aborted, not drained
    protocol.dataReceived(b"67890")  # the rest, already in flight: not delivered
    assert reader.data == b"12345" and reader.reason is None
    _lost(protocol)
    assert reader.ended(ResponseFailed)
    assert rig.pool.idle_count(ORIGIN) == 0
    rig.request()
    assert len(rig.endpoint.connections) == 2


def test_a_body_stopped_after_it_was_read_whole_reports_failure_not_done() -> None:
    rig = Rig()
    _, outcome = rig.request()
    protocol, _ = rig.conn()
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd")  # whole, buffered

    class Stopper(Reader):
        def dataReceived(self, data: bytes) -> None:
            super().dataReceived(data)
            self.transport.stopProducing()

    reader = Stopper()
    outcome[0].deliverBody(reader)
    assert reader.ended(ResponseFailed)
    assert rig.pool.idle_count(ORIGIN) == 1  # the socket had been read to the end: reusable


def test_chunked_response_is_decoded_and_the_connection_reused() -> None:
    rig = Rig()
    _, outcome = rig.request()
    protocol, _ = rig.conn()
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    assert outcome[0].length is UNKNOWN_LENGTH
    reader = Reader()
    outcome[0].deliverBody(reader)
    protocol.dataReceived(b"2\r\nde\r\n0\r\n\r\n")
    assert reader.data == b"abcde" and reader.ended(ResponseDone)
    assert rig.pool.idle_count(ORIGIN) == 1


def test_a_truncated_chunked_body_fails() -> None:
    rig = Rig()
    _, outcome = rig.request()
    protocol, _ = rig.conn()
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    reader = Reader()
    outcome[0].deliverBody(reader)
    _lost(protocol, ConnectionLost())
    assert reader.ended(ResponseFailed)


def test_head_answer_has_no_body_whatever_its_content_length_and_the_connection_is_reused() -> None:
    rig = Rig()
    _, outcome = rig.request(b"HEAD")
    protocol, _ = rig.conn()
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n")
    assert not outcome
    protocol.dataReceived(b"ETag: \"x\"\r\n\r\n")
    response = outcome[0]
    assert response.code == 200 and response.length == 0
    assert response.headers.getRawHeaders(b"content-length") == [b"1000"]
    reader = Reader()
    response.deliverBody(reader)
    assert reader.data == b"" and reader.ended(ResponseDone)
    assert rig.pool.idle_count(ORIGIN) == 1


def test_bytes_after_a_head_answer_make_the_connection_unfit_for_reuse() -> None:
    rig = Rig()
    _, outcome = rig.request(b"HEAD")
    protocol, transport = rig.conn()
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody")
    assert outcome[0].code == 200
    assert rig.pool.idle_count(ORIGIN) == 0 and transport.disconnecting


def test_a_second_answer_after_the_first_closes_the_connection_but_the_first_stands() -> None:
    rig = Rig()
    _, outcome = rig.request()
    protocol, transport = rig.conn()
    protocol.dataReceived(OK_EMPTY + b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")
    assert outcome[0].code == 200
    assert rig.pool.idle_count(ORIGIN) == 0 and transport.disconnecting


def test_100_continue_is_skipped() -> None:
    rig = Rig()
    _, outcome = rig.request()
    protocol, _ = rig.conn()
    protocol.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert not outcome
    protocol.dataReceived(b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n")
    assert outcome[0].code == 204 and outcome[0].length == 0
    assert outcome[0].headers.getRawHeaders(b"x-a") == [b"b"]
    assert rig.pool.idle_count(ORIGIN) == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
)
def test_a_server_that_does_not_keep_alive_gets_its_connection_closed(answer: bytes) -> None:
    rig = Rig()
    _, outcome = rig.request()
    protocol, transport = rig.conn()
    protocol.dataReceived(answer)
    reader = Reader()
    outcome[0].deliverBody(reader)
    assert reader.data == b"ok" and reader.ended(ResponseDone)
    assert transport.disconnecting and rig.pool.idle_count(ORIGIN) == 0


def test_a_body_read_to_eof_without_length_ends_in_potential_data_loss() -> None:
    rig = Rig()
    _, outcome = rig.request()
    protocol, _ = rig.conn()
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nsome")
    assert outcome[0].length is UNKNOWN_LENGTH
    reader = Reader()
    outcome[0].deliverBody(reader)
    protocol.dataReceived(b"more")
    _lost(protocol)
    assert reader.data == b"somemore" and reader.ended(PotentialDataLoss)


def test_a_short_body_fails_with_response_failed() -> None:
    rig = Rig()
    _, outcome = rig.request()
    protocol, _ = rig.conn()
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    reader = Reader()
    outcome[0].deliverBody(reader)
    _lost(protocol)
    assert reader.ended(ResponseFailed)


def test_a_malformed_answer_fails_the_request_and_closes_the_connection() -> None:
    rig = Rig()
    _, outcome = rig.request()
    protocol, transport = rig.conn()
    protocol.dataReceived(b"HTTP/1.1 2x0 What\r\n\r\n")
    assert isinstance(outcome[0], Failure) and outcome[0].check(ResponseNeverReceived)
    assert isinstance(outcome[0].value, ResponseFailed)
    assert transport.disconnected


def test_a_malformed_chunk_fails_the_body() -> None:
    rig = Rig()
    _, outcome = rig.request()
    protocol, transport = rig.conn()
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    reader = Reader()
    outcome[0].deliverBody(reader)
    protocol.dataReceived(b"zz\r\nabc\r\n")
    assert reader.ended(ResponseFailed)
    assert transport.disconnected and rig.pool.idle_count(ORIGIN) == 0


def test_backpressure_from_the_body_reader_pauses_and_resumes_the_socket() -> None:
    rig = Rig()
    _, outcome = rig.request()
    protocol, transport = rig.conn()
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
    reader = Reader()
    outcome[0].deliverBody(reader)
    assert transport.producerState == "producing"
    reader.transport.pauseProducing()
    assert transport.producerState == "paused"
    reader.transport.resumeProducing()
    assert transport.producerState == "producing"
    reader.transport.pauseProducing()
    protocol.dataReceived(b"abcdef")  # the end: the connection goes back to the pool reading
    assert transport.producerState == "producing"
    reader.transport.pauseProducing()  # too late: detached, the pooled socket is not touched
    assert transport.producerState == "producing" and rig.pool.idle_count(ORIGIN) == 1


def test_a_pause_made_when_the_reader_connects_is_kept() -> None:
    rig = Rig()
    _, outcome = rig.request()
    protocol, transport = rig.conn()
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")

    class PausesAtOnce(Reader):
        def connectionMade(self) -> None:
            self.transport.pauseProducing()

    outcome[0].deliverBody(PausesAtOnce())
    assert transport.producerState == "paused"


def test_stale_pooled_connection_is_retried_once_for_an_idempotent_request() -> None:
    rig = Rig()
    _, first = rig.request()
    protocol, _ = rig.conn()
    protocol.dataReceived(OK_EMPTY)
    _, outcome = rig.request(b"DELETE")
    _lost(protocol)  # the server had closed it while idle
    assert len(rig.endpoint.connections) == 2 and not outcome
    fresh, transport = rig.conn()
    assert transport.value().startswith(b"DELETE ")
    fresh.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert outcome[0].code == 204


def test_no_retry_for_a_request_with_a_body_or_once_bytes_came_back() -> None:
    rig = Rig()
    rig.request()
    protocol, _ = rig.conn()
    protocol.dataReceived(OK_EMPTY)
    producer = Producer(3)
    _, outcome = rig.request(b"PUT", producer)
    _lost(protocol)
    assert isinstance(outcome[0], Failure) and outcome[0].check(RequestTransmissionFailed)
    assert producer.stopped and len(rig.endpoint.connections) == 1

    rig2 = Rig()
    rig2.request()
    protocol2, _ = rig2.conn()
    protocol2.dataReceived(OK_EMPTY)
    _, outcome2 = rig2.request()
    protocol2.dataReceived(b"HTTP/1.1 200 OK\r\n")
    _lost(protocol2)
    assert isinstance(outcome2[0], Failure) and outcome2[0].check(ResponseNeverReceived)
    assert len(rig2.endpoint.connections) == 1


def test_a_request_failing_on_a_fresh_connection_is_not_retried() -> None:
    rig = Rig()
    _, outcome = rig.request()
    protocol, _ = rig.conn()
    _lost(protocol)
    assert isinstance(outcome[0], Failure) and outcome[0].check(ResponseNeverReceived)
    assert len(rig.endpoint.connections) == 1


def test_upload_streams_with_content_length_and_the_transport_as_backpressure() -> None:
    rig = Rig()
    producer = Producer(5)
    _, outcome = rig.request(b"PUT", producer)
    protocol, transport = rig.conn()
    assert b"Content-Length: 5\r\n" in transport.value()
    registered = transport.producer
    assert registered is producer and transport.streaming
    producer.consumer.write(b"abc")
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n")
    producer.consumer.write(b"de")
    assert not outcome  # written in full first
    producer.done.callback(None)
    assert transport.producer is None and transport.value().endswith(b"\r\n\r\nabcde")
    protocol.dataReceived(b"\r\n")
    assert outcome[0].code == 200 and rig.pool.idle_count(ORIGIN) == 1


def test_unknown_length_upload_is_chunked() -> None:
    rig = Rig()
    producer = Producer(UNKNOWN_LENGTH)
    rig.request(b"PUT", producer)
    _, transport = rig.conn()
    producer.consumer.write(b"hello")
    producer.done.callback(None)
    assert b"Transfer-Encoding: chunked\r\n" in transport.value()
    assert transport.value().endswith(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


def test_empty_put_says_content_length_zero() -> None:
    rig = Rig()
    rig.request(b"PUT")
    assert b"Content-Length: 0\r\n" in rig.conn()[1].value()


@pytest.mark.parametrize(("writes", "end"), [([b"toolong"], False), ([b"ab"], True)])
def test_a_producer_that_breaks_its_length_fails_generation(writes: list[bytes], end: bool) -> None:
    rig = Rig()
    producer = Producer(5)
    _, outcome = rig.request(b"PUT", producer)
    _, transport = rig.conn()
    for data in writes:
        producer.consumer.write(data)
    if end:
        producer.done.callback(None)
    assert isinstance(outcome[0], Failure) and outcome[0].check(RequestGenerationFailed)
    assert transport.disconnected


def test_a_failing_producer_fails_generation_with_its_error() -> None:
    rig = Rig()
    producer = Producer(5)
    _, outcome = rig.request(b"PUT", producer)
    producer.done.errback(ValueError("source broke"))
    assert isinstance(outcome[0], Failure) and outcome[0].check(RequestGenerationFailed)
    assert cast(Any, outcome[0].value).reasons[0].check(ValueError)


def test_an_answer_complete_before_the_upload_ends_is_given_and_the_upload_stopped() -> None:
    rig = Rig()
    producer = Producer(100)
    _, outcome = rig.request(b"PUT", producer)
    protocol, transport = rig.conn()
    producer.consumer.write(b"abc")
    protocol.dataReceived(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
    assert outcome[0].code == 403 and producer.stopped
    assert transport.disconnecting and rig.pool.idle_count(ORIGIN) == 0


def test_cancelling_aborts_the_connection_and_stops_the_upload() -> None:
    rig = Rig()
    producer = Producer(10)
    d, outcome = rig.request(b"PUT", producer)
    protocol, transport = rig.conn()
    d.cancel()
    assert isinstance(outcome[0], Failure) and outcome[0].check(CancelledError)
    assert transport.disconnected and producer.stopped
    _lost(protocol)  # no second outcome, no error


def test_cancelling_while_waiting_for_the_answer_aborts_and_a_late_answer_is_ignored() -> None:
    rig = Rig()
    d, outcome = rig.request()
    protocol, transport = rig.conn()
    d.cancel()
    assert outcome[0].check(CancelledError) and transport.disconnected
    protocol.dataReceived(OK_EMPTY)
    assert len(outcome) == 1 and rig.pool.idle_count(ORIGIN) == 0


def test_cancelling_a_pending_connect_gives_cancelled_error() -> None:
    @implementer(IStreamClientEndpoint)
    class Hanging:
        def __init__(self) -> None:
            self.cancelled = False

        def connect(self, factory: Any) -> Deferred[Any]:
            def cancel(_: Any) -> None:
                self.cancelled = True

            return Deferred(cancel)

    hanging = Hanging()
    agent = LeanAgent(Clock(), endpoint_factory=lambda origin: hanging)
    d = agent.request(b"GET", URL)
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    d.cancel()
    assert hanging.cancelled and outcome[0].check(CancelledError)


def test_idle_connections_are_capped_per_host_and_expire() -> None:
    rig = Rig(max_idle=1, idle_timeout=30)
    rig.request()
    rig.request()
    (first, first_t), (second, second_t) = rig.endpoint.connections
    first.dataReceived(OK_EMPTY)
    second.dataReceived(OK_EMPTY)
    assert rig.pool.idle_count(ORIGIN) == 1 and first_t.disconnecting and not second_t.disconnecting
    rig.clock.advance(30)
    assert second_t.disconnecting and rig.pool.idle_count(ORIGIN) == 0


def test_a_pooled_connection_the_server_closes_leaves_the_pool() -> None:
    rig = Rig()
    rig.request()
    protocol, _ = rig.conn()
    protocol.dataReceived(OK_EMPTY)
    _lost(protocol)
    assert rig.pool.idle_count(ORIGIN) == 0
    assert not rig.clock.getDelayedCalls()


def test_close_cached_connections_waits_for_them_to_close() -> None:
    rig = Rig()
    rig.request()
    protocol, transport = rig.conn()
    protocol.dataReceived(OK_EMPTY)
    closed = rig.pool.closeCachedConnections()
    assert transport.disconnecting and not closed.called
    _lost(protocol)
    assert closed.called


def test_default_endpoints_use_the_connect_timeout_and_tls_for_https() -> None:
    reactor = MemoryReactorClock()
    agent = LeanAgent(reactor, connect_timeout=7)
    agent.request(b"GET", b"http://127.0.0.1:9000/b/k")
    host, port, factory, timeout, _ = reactor.tcpClients[0]
    assert (host, port, timeout) == ("127.0.0.1", 9000, 7)
    assert type(cast(Any, factory)._wrappedFactory).__name__ == "_ConnectionFactory"
    agent.request(b"GET", b"https://127.0.0.1:9443/b/k")
    host, port, factory, timeout, _ = reactor.tcpClients[1]
    assert (port, timeout) == (9443, 7)
    assert type(cast(Any, factory)._wrappedFactory).__name__ == "TLSMemoryBIOFactory"


@pytest.mark.parametrize(("choice", "agent_type"), [("lean", LeanAgent), ("twisted", Agent)])
def test_server_backend_http_client_picks_the_backend_agent(choice: str, agent_type: type) -> None:
    config = load_config_from_string(
        "server:\n  backend_http_client: " + choice + "\n"
        "backends:\n  - name: b1\n    endpoint: http://127.0.0.1:9\n    bucket: x\n"
        "    access_key_id: k\n    secret_access_key: s\n    quota_bytes: 1000\n"
        "buckets:\n  - name: app\n    credentials:\n      - access_key_id: a\n        secret_access_key: b\n"
    )
    assert config.server.backend_http_client == choice
    backend = S3Backend(
        config.backends[0], MemoryReactorClock(), 5.0, http_client=config.server.backend_http_client
    )
    assert type(backend._agent) is agent_type


def test_backend_timeout_aborts_a_silent_backend_and_reads_as_unavailable() -> None:
    rig = Rig()
    config = load_config_from_string(
        "backends:\n  - name: b1\n    endpoint: http://backend.test:9000\n    bucket: x\n"
        "    access_key_id: k\n    secret_access_key: s\n    quota_bytes: 1000\n"
        "buckets:\n  - name: app\n    credentials:\n      - access_key_id: a\n        secret_access_key: b\n"
    ).backends[0]
    backend = S3Backend(config, rig.clock, 5.0, agent=rig.agent)
    outcome: list[Any] = []
    Deferred.fromCoroutine(backend.head_object("k")).addBoth(outcome.append)
    _, transport = rig.conn()
    assert transport.value().startswith(b"HEAD /x/k HTTP/1.1\r\n")
    rig.clock.advance(4.9)
    assert not outcome and not transport.disconnected
    rig.clock.advance(0.2)
    assert isinstance(outcome[0], Failure) and outcome[0].check(BackendUnavailable)
    assert "no response within 5s" in str(outcome[0].value)
    assert transport.disconnected

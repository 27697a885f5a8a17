"""RESP2: the serialiser, the incremental parser (hypothesis: any bytes give replies or a
ProtocolError, never another exception; any reply survives any chunking), and the connection
protocol over a StringTransport with a Clock (pipelining, timeouts, garbage, loss)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from s3orch.redis.client import RedisClient, RedisProtocol, RedisUnavailable
from s3orch.redis.resp import (
    MAX_DEPTH,
    ProtocolError,
    Reply,
    ReplyError,
    ReplyParser,
    encode_command,
    encode_reply,
)
from tests.support.fuzz import examples

# --- the serialiser and the parser -------------------------------------------------------------


def test_a_command_is_an_array_of_bulk_strings() -> None:
    assert encode_command(["SET", b"k\r\n", 42, "é"]) == b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n42\r\n$2\r\n\xc3\xa9\r\n"
    with pytest.raises(ValueError):
        encode_command([])
    with pytest.raises(TypeError):
        encode_command(["INCRBY", "k", True])


def test_every_reply_type_parses() -> None:
    parser = ReplyParser()
    data = b"+OK\r\n-ERR wrong\r\n:-12\r\n$3\r\na\r\n\r\n$-1\r\n*-1\r\n*0\r\n*2\r\n:1\r\n*1\r\n$0\r\n\r\n"
    assert parser.feed(data) == ["OK", ReplyError("ERR wrong"), -12, b"a\r\n", None, None, [], [1, [b""]]]
    assert ReplyError("WRONGTYPE Operation against a key").kind == "WRONGTYPE"
    assert parser.buffered == 0


@pytest.mark.parametrize(
    "data",
    [
        b"?x\r\n",  # unknown type
        b"\r\n",  # empty line
        b":12a\r\n",
        b":\r\n",
        b"$-2\r\n",
        b"$abc\r\n",
        b"$3\r\nabcXY",  # no CRLF after the bulk
        b"*" + b"*1\r\n" * 0 + b"-5\r\n",
        b"*1\r\n" * (MAX_DEPTH + 1) + b":1\r\n",
        b"$99999999999\r\n",  # over the bulk limit
        b"+" + b"x" * 70000,  # a line that never ends
    ],
)
def test_malformed_input_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        ReplyParser().feed(data)


def test_a_reply_split_anywhere_waits_for_the_rest() -> None:
    whole = encode_reply([b"abc", 7, None, ReplyError("ERR x"), "OK"])
    for cut in range(len(whole)):
        parser = ReplyParser()
        assert parser.feed(whole[:cut]) == []
        assert parser.feed(whole[cut:]) == [[b"abc", 7, None, ReplyError("ERR x"), "OK"]]


_text = st.text(st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\r\n"), max_size=20)
_scalars = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.binary(max_size=40),
    _text,
    _text.map(lambda t: ReplyError("ERR " + t)),
)
replies: st.SearchStrategy[Reply] = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=5), max_leaves=20)


@settings(max_examples=examples(2000))
@given(st.lists(replies, max_size=5), st.data())
def test_replies_survive_any_chunking(items: list[Reply], data: st.DataObject) -> None:
    stream = b"".join(encode_reply(item) for item in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    parser, got, start = ReplyParser(), [], 0
    for cut in [*cuts, len(stream)]:
        got.extend(parser.feed(stream[start:cut]))
        start = cut
    assert got == items
    assert parser.buffered == 0


@settings(max_examples=examples(3000))
@given(st.lists(st.one_of(st.binary(max_size=30), st.sampled_from([b"\r\n", b"*3\r\n", b"$5\r\n", b":-", b"*-1\r\n"])),
                max_size=12))
def test_any_bytes_give_replies_or_a_protocol_error_only(chunks: list[bytes]) -> None:
    parser = ReplyParser(max_bulk=1 << 20)
    try:
        for chunk in chunks:
            parser.feed(chunk)
    except ProtocolError:
        pass


# --- the connection --------------------------------------------------------------------------


def _connected(timeout: float = 3.0) -> tuple[RedisProtocol, StringTransport, Clock]:
    clock = Clock()
    protocol = RedisProtocol(clock, timeout)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport, clock


def test_pipelined_batches_get_their_replies_in_order_in_any_chunking() -> None:
    protocol, transport, _ = _connected()
    first = protocol.send([["INCRBY", "a", 1], ["GET", "a"]])
    second = protocol.send([["PING"]])
    assert transport.value() == encode_command(["INCRBY", "a", 1]) + encode_command(["GET", "a"]) + encode_command(
        ["PING"]
    )
    got: list[Any] = []
    first.addCallback(got.append)
    second.addCallback(got.append)
    for byte in b":1\r\n$1\r\n1\r\n+PONG\r\n":
        protocol.dataReceived(bytes([byte]))
    assert got == [[1, b"1"], ["PONG"]]


def test_no_reply_within_the_timeout_aborts_and_fails_every_waiting_batch() -> None:
    protocol, transport, clock = _connected(timeout=3.0)
    first = protocol.send([["PING"]])
    clock.advance(2)
    protocol.dataReceived(b"+PONG\r\n")  # progress re-arms the timer
    second = protocol.send([["PING"]])
    third = protocol.send([["PING"]])
    clock.advance(2.9)
    assert not second.called
    clock.advance(0.2)
    assert transport.disconnecting
    for d in (second, third):
        failure: list[Failure] = []
        d.addErrback(failure.append)
        assert failure and failure[0].check(RedisUnavailable) and "no reply within 3s" in str(failure[0].value)
    assert first.called
    with pytest.raises(RedisUnavailable):
        protocol.send([["PING"]])
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("garbage", [b"!!!\r\n", b"+OK\r\n+EXTRA\r\n"])
def test_garbage_or_an_unrequested_reply_drops_the_connection(garbage: bytes) -> None:
    protocol, transport, _ = _connected()
    waiting = protocol.send([["PING"]])
    errors: list[Failure] = []
    waiting.addErrback(errors.append)
    protocol.dataReceived(garbage)
    assert transport.disconnecting
    if errors:
        assert errors[0].check(RedisUnavailable)
    assert not protocol.usable


def test_a_lost_connection_fails_what_was_sent_and_fires_closed() -> None:
    protocol, _, clock = _connected()
    waiting = protocol.send([["INCRBY", "a", 1]])
    errors: list[Failure] = []
    waiting.addErrback(errors.append)
    protocol.connectionLost(Failure(ConnectionError("reset")))
    assert errors and errors[0].check(RedisUnavailable) and "connection lost" in str(errors[0].value)
    assert protocol.closed.called and clock.getDelayedCalls() == []


class _Endpoint:
    """Connects each protocol to a StringTransport at once, remembering both."""

    def __init__(self) -> None:
        self.connections: list[tuple[Protocol, StringTransport]] = []

    def connect(self, factory: Factory) -> Deferred[Protocol]:
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)


def test_the_client_authenticates_selects_and_reconnects_only_between_commands() -> None:
    endpoint = _Endpoint()
    clock = Clock()
    client = RedisClient(clock, "redis", 6379, password="s3cret", db=2, endpoint=endpoint)  # type: ignore[arg-type]
    results: list[Any] = [Deferred.fromCoroutine(client.incrby("k", 5)) for _ in range(3)]
    (protocol, transport), = endpoint.connections  # three callers, one connection
    assert transport.value() == encode_command(["AUTH", "s3cret"]) + encode_command(["SELECT", 2])
    transport.clear()
    protocol.dataReceived(b"+OK\r\n+OK\r\n")
    assert transport.value() == encode_command(["INCRBY", "k", 5]) * 3
    protocol.dataReceived(b":5\r\n:10\r\n:15\r\n")
    assert [r.result for r in results] == [5, 10, 15]
    protocol.connectionLost(Failure(ConnectionError("gone")))
    again = Deferred.fromCoroutine(client.ping())
    assert len(endpoint.connections) == 2
    endpoint.connections[1][0].dataReceived(b"+OK\r\n+OK\r\n+PONG\r\n")
    assert again.called and again.result is None


def test_a_refused_auth_is_unavailable_and_never_names_the_password() -> None:
    endpoint = _Endpoint()
    client = RedisClient(Clock(), "redis", 6379, password="s3cret", endpoint=endpoint)  # type: ignore[arg-type]
    attempt = Deferred.fromCoroutine(client.ping())
    endpoint.connections[0][0].dataReceived(b"-WRONGPASS invalid username-password pair\r\n")
    errors: list[Failure] = []
    attempt.addErrback(errors.append)
    assert errors[0].check(RedisUnavailable)
    assert "AUTH refused" in str(errors[0].value) and "s3cret" not in str(errors[0].value)

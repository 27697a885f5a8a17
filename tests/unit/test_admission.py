"""Admission control (``server.max_concurrent_*``): pools, 503 SlowDown at header time, shedding."""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from s3orch.auth.registry import CredentialRegistry
from s3orch.config import load_config_from_string
from s3orch.frontend.assembly import build_frontend
from s3orch.frontend.envelope import S3Envelope
from s3orch.frontend.ops import OpsApp
from s3orch.frontend.root import RootResource
from s3orch.http.admission import Admission, Refused
from s3orch.http.site import S3Site
from s3orch.observe.metrics import ADMISSION_REJECTIONS, AUDIT_EVENTS, CREDENTIAL_REJECTIONS, LOAD_SHED
from s3orch.s3 import sigv4
from tests.unit.frontdoor_fakes import START

CONFIG = """
server:
{server}
buckets:
  - name: photos
    credentials:
      - {{access_key_id: photoskey, secret_access_key: photossecret}}
      - {{access_key_id: otherkey, secret_access_key: othersecret}}
backends:
  - name: b1
    endpoint: http://127.0.0.1:1
    bucket: x
    access_key_id: a
    secret_access_key: s
"""


def _site(server: str, admission: Admission | None = None) -> tuple[S3Site, S3Envelope]:
    config = load_config_from_string(CONFIG.format(server=server))
    clock = MemoryReactorClock()
    clock.advance(START)
    frontend = build_frontend(
        server=config.server,
        registry=CredentialRegistry(config.buckets),
        objects=None,  # type: ignore[arg-type]  # no request here completes its body
        clock=clock,
        admission=admission,
    )
    site = S3Site(
        RootResource(frontend, OpsApp(is_ready=lambda: True).resource()),
        early_handler=frontend,
        reactor=clock,
    )
    return site, frontend


def _connect(site: S3Site) -> tuple[object, StringTransport]:
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
    transport = StringTransport()
    protocol.makeConnection(transport)  # type: ignore[union-attr]
    return protocol, transport


def _headers(method: str, path: str, length: int, access_key: str = "photoskey") -> bytes:
    secret = {"photoskey": "photossecret", "otherkey": "othersecret"}[access_key]
    signed = sigv4.sign_headers(
        method, "http://gw.test" + path, {}, sigv4.UNSIGNED_PAYLOAD, access_key, secret,
        "us-east-1", START,
    )
    lines = [f"{method} {path} HTTP/1.1", "Host: gw.test", f"Content-Length: {length}", "Expect: 100-continue"]
    lines += [f"{k}: {v}" for k, v in signed.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _start_put(site: S3Site) -> tuple[object, StringTransport]:
    protocol, transport = _connect(site)
    protocol.dataReceived(_headers("PUT", "/photos/k", 100))  # type: ignore[attr-defined]
    assert b"100 Continue" in transport.value()
    return protocol, transport


def test_default_is_a_global_pool_of_1000() -> None:
    _, frontend = _site("  listen_addr: ':9000'")
    assert frontend.admission.global_pool is not None
    assert frontend.admission.global_pool.capacity == 1000


def test_request_over_capacity_gets_503_slowdown_before_100_continue() -> None:
    site, frontend = _site("  max_concurrent_requests: 1")
    before = ADMISSION_REJECTIONS._value.get()
    audited = AUDIT_EVENTS.labels("s3.AdmissionRejected")._value.get()
    _start_put(site)
    _, transport = _connect(site)
    _.dataReceived(_headers("PUT", "/photos/k2", 100))  # type: ignore[attr-defined]
    sent = transport.value()
    assert sent.startswith(b"HTTP/1.1 503 ")
    assert b"100 Continue" not in sent
    assert b"<Code>SlowDown</Code>" in sent
    assert b"<Message>Server at capacity</Message>" in sent
    assert b"Retry-After: 1\r\n" in sent
    assert transport.disconnecting
    assert ADMISSION_REJECTIONS._value.get() == before + 1
    assert AUDIT_EVENTS.labels("s3.AdmissionRejected")._value.get() == audited + 1
    assert frontend.admission.global_pool is not None
    assert frontend.admission.global_pool.in_use == 1  # the refused one took nothing


def test_abandoned_request_releases_its_slot() -> None:
    site, frontend = _site("  max_concurrent_requests: 1")
    protocol, _ = _start_put(site)
    protocol.connectionLost(Failure(ConnectionError("gone")))  # type: ignore[attr-defined]
    assert frontend.admission.global_pool is not None
    assert frontend.admission.global_pool.in_use == 0
    _start_put(site)  # admitted again


def test_early_rejection_releases_its_slot() -> None:
    site, frontend = _site("  max_concurrent_requests: 1\n  max_object_size: 10")
    _, transport = _connect(site)
    _.dataReceived(_headers("PUT", "/photos/k", 100))  # type: ignore[attr-defined]
    assert b"EntityTooLarge" in transport.value()
    assert frontend.admission.global_pool is not None
    assert frontend.admission.global_pool.in_use == 0


def test_health_and_metrics_are_never_refused() -> None:
    site, _ = _site("  max_concurrent_requests: 1")
    _start_put(site)
    for path in (b"/health", b"/metrics"):
        protocol, transport = _connect(site)
        protocol.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: gw.test\r\n\r\n")  # type: ignore[attr-defined]
        assert transport.value().startswith(b"HTTP/1.1 200 ")


def test_split_pools_keep_reads_flowing_when_writes_are_full() -> None:
    site, frontend = _site("  max_concurrent_reads: 1\n  max_concurrent_writes: 1")
    assert frontend.admission.split
    _start_put(site)
    _, transport = _connect(site)
    _.dataReceived(_headers("DELETE", "/photos/k", 0))  # type: ignore[attr-defined]
    assert transport.value().startswith(b"HTTP/1.1 503 ")
    slot = frontend.admission.admit("GET")
    assert slot is not None and slot.pool.name == "read"
    with pytest.raises(Refused):
        frontend.admission.admit("HEAD")


def test_only_one_split_pool_set_means_no_admission_control() -> None:
    admission = Admission(max_requests=0, max_reads=5, max_writes=0)
    for _ in range(100):
        assert admission.admit("PUT") is None


def test_shedding_probability_rises_linearly_from_floor_to_capacity() -> None:
    admission = Admission(max_requests=10, shed_threshold=0.5)
    pool = admission.global_pool
    assert pool is not None
    expected = {0: 0.0, 4: 0.0, 5: 0.0, 6: 0.2, 8: 0.6, 9: 0.8, 10: 1.0}
    for in_use, probability in expected.items():
        pool.in_use = in_use
        assert admission.shed_probability(pool) == pytest.approx(probability)


def test_shed_request_gets_503_and_counts_in_load_shed_total() -> None:
    draws = iter([0.5, 0.7])
    admission = Admission(max_requests=10, shed_threshold=0.5, random_source=lambda: next(draws))
    site, _ = _site("  max_concurrent_requests: 10", admission=admission)
    pool = admission.global_pool
    assert pool is not None
    pool.in_use = 8  # shedding probability 0.6
    before = LOAD_SHED._value.get()
    audited = AUDIT_EVENTS.labels("s3.LoadShed")._value.get()
    protocol, transport = _connect(site)
    protocol.dataReceived(_headers("PUT", "/photos/k", 100))  # type: ignore[attr-defined]
    sent = transport.value()
    assert sent.startswith(b"HTTP/1.1 503 ") and b"<Code>SlowDown</Code>" in sent  # draw 0.5 < 0.6
    assert b"Retry-After: 1\r\n" in sent
    assert LOAD_SHED._value.get() == before + 1
    assert AUDIT_EVENTS.labels("s3.LoadShed")._value.get() == audited + 1
    assert pool.in_use == 8
    _start_put(site)  # draw 0.7 >= 0.6: admitted
    assert pool.in_use == 9


# -- max_concurrent_per_credential ----------------------------------------------------


def test_default_credential_share_is_a_quarter_of_the_pool_at_least_one() -> None:
    assert Admission(max_requests=8).credential_limit(Admission(max_requests=8).admit("GET")) == 2
    small = Admission(max_requests=3)
    assert small.credential_limit(small.admit("GET")) == 1
    split = Admission(max_requests=0, max_reads=40, max_writes=12)
    assert split.credential_limit(split.admit("GET")) == 10
    assert split.credential_limit(split.admit("PUT")) == 3
    assert split.credential_limit(None) is None  # an unlimited request has no share
    assert Admission(max_requests=8, per_credential=5).credential_limit(None) == 5


def test_credential_holds_are_counted_and_released_exactly_once() -> None:
    admission = Admission(max_requests=8, per_credential=2)
    slot = admission.admit("GET")
    first = admission.admit_credential("b:k", slot)
    second = admission.admit_credential("b:k", slot)
    with pytest.raises(Refused) as info:
        admission.admit_credential("b:k", slot)
    assert info.value.reason == "credential"
    assert admission.admit_credential("b:other", slot) is not None
    assert first is not None and second is not None
    first.release()
    first.release()
    assert admission.by_credential["global/b:k"] == 1
    second.release()
    assert admission.by_credential == {"global/b:other": 1}  # no entry left behind per key


def test_credential_shares_are_per_pool() -> None:
    admission = Admission(max_requests=0, max_reads=8, max_writes=4)  # shares: 2 reads, 1 write
    reads = [admission.admit("GET"), admission.admit("GET")]
    for slot in reads:
        admission.admit_credential("b:k", slot)
    with pytest.raises(Refused):
        admission.admit_credential("b:k", admission.admit("HEAD"))
    assert admission.admit_credential("b:k", admission.admit("PUT")) is not None  # the write share is free


def test_one_credential_over_its_share_gets_503_slowdown_before_100_continue() -> None:
    site, frontend = _site("  max_concurrent_requests: 8")  # share: 2
    before = CREDENTIAL_REJECTIONS._value.get()
    held = [_start_put(site), _start_put(site)]
    protocol, transport = _connect(site)
    protocol.dataReceived(_headers("PUT", "/photos/k3", 100))  # type: ignore[attr-defined]
    sent = transport.value()
    assert sent.startswith(b"HTTP/1.1 503 ") and b"<Code>SlowDown</Code>" in sent
    assert b"Retry-After: 1\r\n" in sent
    assert b"100 Continue" not in sent
    assert CREDENTIAL_REJECTIONS._value.get() == before + 1
    assert frontend.admission.global_pool is not None
    assert frontend.admission.global_pool.in_use == 2  # the refused request gave its slot back
    other, other_transport = _connect(site)
    other.dataReceived(_headers("PUT", "/photos/k4", 100, access_key="otherkey"))  # type: ignore[attr-defined]
    assert b"100 Continue" in other_transport.value()  # another credential is admitted
    held[0][0].connectionLost(Failure(ConnectionError("gone")))  # type: ignore[attr-defined]
    _start_put(site)  # the first credential has room again


def test_explicit_per_credential_cap_applies_to_bodyless_requests_too() -> None:
    site, frontend = _site("  max_concurrent_requests: 100\n  max_concurrent_per_credential: 1")
    _start_put(site)
    protocol, transport = _connect(site)
    protocol.dataReceived(_headers("GET", "/photos/k", 0))  # type: ignore[attr-defined]
    sent = transport.value().removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert sent.startswith(b"HTTP/1.1 503 ") and b"<Code>SlowDown</Code>" in sent
    assert b"Retry-After: 1\r\n" in sent
    assert frontend.admission.global_pool is not None
    assert frontend.admission.global_pool.in_use == 1
    assert frontend.admission.by_credential == {"global/photos:photoskey": 1}

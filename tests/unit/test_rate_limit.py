"""Rate limiting (``rate_limit.*``): token buckets, 429 before the body, client IP, sweep, reload."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from s3orch.auth.registry import CredentialRegistry
from s3orch.config import load_config_from_string
from s3orch.config.features import RateLimitConfig
from s3orch.frontend.assembly import build_frontend
from s3orch.frontend.ops import OpsApp
from s3orch.frontend.root import RootResource
from s3orch.http.ratelimit import RateLimiter, Rates, TokenBuckets, admin_gate, client_ip, parse_networks
from s3orch.http.site import S3Site
from s3orch.observe.metrics import RATE_LIMIT_REJECTIONS
from s3orch.reload import Reloader, ReloadTargets
from s3orch.workers.rate_limit_sweep import RateLimitSweeper
from tests.unit.frontdoor_fakes import (
    CONFIG,
    START,
    AbortingTransport,
    FakeObjects,
    signed_request,
    status_of,
)

BIG = 50 * 1024 * 1024


class Gateway:
    """The front door and the admin gate over a rate limiter, peers chosen per connection."""

    def __init__(self, rate_limit: str, server: str = "  max_concurrent_requests: 100") -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(START)
        self.config = load_config_from_string(CONFIG.format(server=server) + rate_limit)
        self.limiter = RateLimiter(self.config.rate_limit, self.clock)
        self.objects = FakeObjects(self.clock)
        self.frontend = build_frontend(
            server=self.config.server, registry=CredentialRegistry(self.config.buckets),
            objects=self.objects,  # type: ignore[arg-type]
            clock=self.clock, limiter=self.limiter,
        )
        self.site = S3Site(
            RootResource(self.frontend, OpsApp(is_ready=lambda: True).resource()),
            early_handler=self.frontend, reactor=self.clock, other_gate=admin_gate(self.limiter),
        )

    def send(self, raw: bytes, peer: str = "198.51.100.7") -> Any:
        """The transport (an AbortingTransport) after sending ``raw`` from ``peer``."""
        address = IPv4Address("TCP", peer, 40000)
        protocol = self.site.buildProtocol(address)
        transport: Any = AbortingTransport(peerAddress=address)  # type: ignore[no-untyped-call]
        transport.protocol = protocol
        protocol.makeConnection(transport)
        protocol.dataReceived(raw)
        return transport


def _limits(**values: Any) -> str:
    return "rate_limit:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in values.items())


def _rejections(api: str, key: str) -> float:
    return float(RATE_LIMIT_REJECTIONS.labels(api, key)._value.get())


def _big_put(key: str = "k", xff: str | None = None, access_key: str = "photoskey") -> bytes:
    """The headers of a PUT announcing a large body, with Expect: 100-continue; no body byte."""
    headers = {"Expect": "100-continue"} | ({"X-Forwarded-For": xff} if xff else {})
    raw = signed_request("PUT", f"/photos/{key}", headers=headers, access_key=access_key, content_length=False)
    return raw.replace(b"\r\n\r\n", f"\r\nContent-Length: {BIG}\r\n\r\n".encode(), 1)


# -- the bucket ----------------------------------------------------------------------------------


def test_a_bucket_allows_burst_at_once_then_refills_at_the_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(Rates(per_second=2.0, burst=3.0), clock.seconds)
    assert [buckets.take("a") for _ in range(4)] == [True, True, True, False]
    clock.advance(0.4)  # 0.8 of a token
    assert not buckets.take("a")
    clock.advance(0.1)  # 0.8 + 0.2 = 1 token
    assert buckets.take("a") and not buckets.take("a")
    clock.advance(100)  # refills to burst, not beyond
    assert [buckets.take("a") for _ in range(4)] == [True, True, True, False]
    assert buckets.take("b")  # each key has its own bucket


def test_sweep_drops_only_buckets_idle_longer_than_max_age() -> None:
    clock = Clock()
    buckets = TokenBuckets(Rates(0.001, 1.0), clock.seconds)
    for key in ("old1", "old2", "fresh"):
        buckets.take(key)
    clock.advance(200)
    buckets.take("old2")  # used again: no longer old
    clock.advance(150)
    assert buckets.sweep(300) == (2, True)  # old1 and fresh (idle 350 s); old2 idle 150 s stays
    assert len(buckets) == 1 and not buckets.take("old2")  # its state was kept (bucket empty)


def test_a_sweep_runs_in_batches_and_new_use_during_it_is_kept() -> None:
    clock = Clock()
    buckets = TokenBuckets(Rates(1.0, 1.0), clock.seconds)
    for n in range(5):
        buckets.take(f"k{n}")
    clock.advance(10)
    assert buckets.sweep(5, batch=2) == (2, False)
    buckets.take("k3")  # used between two steps: moves to the back, fresh
    assert buckets.sweep(5, batch=2) == (2, True)  # k2 and k4; k3 is fresh: done
    assert len(buckets) == 1 and buckets.take("new")


def test_the_sweeper_yields_the_reactor_between_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("s3orch.workers.rate_limit_sweep.SWEEP_BATCH", 2)
    gw = Gateway(_limits(enabled=True, cleanup_interval="1m", cleanup_max_age="1m"))
    for n in range(5):
        gw.limiter.allow_ip(f"192.0.2.{n}", "s3")
    gw.clock.advance(120)
    sweeper = RateLimitSweeper(gw.limiter, gw.clock)
    done = Deferred.fromCoroutine(sweeper.tick())
    assert len(gw.limiter.ips) == 3 and not done.called  # one batch, then the reactor's turn
    gw.clock.advance(0)  # (runs the calls each step schedules too)
    assert len(gw.limiter.ips) == 0 and done.called


def test_the_sweeper_worker_runs_every_cleanup_interval() -> None:
    gw = Gateway(_limits(enabled=True, cleanup_interval="30s", cleanup_max_age="1m"))
    sweeper = RateLimitSweeper(gw.limiter, gw.clock)
    sweeper.startService()
    try:
        for n in range(5):
            gw.limiter.allow_ip(f"192.0.2.{n}", "s3")
        gw.clock.advance(30)
        gw.limiter.allow_ip("192.0.2.0", "s3")  # used again at 30 s
        assert len(gw.limiter.ips) == 5  # the tick at 30 s: none idle for a minute yet
        gw.clock.advance(30)
        assert len(gw.limiter.ips) == 1  # the tick at 60 s: four idle for 60 s went
        gw.clock.advance(30)
        assert len(gw.limiter.ips) == 0
    finally:
        sweeper.stopService()


# -- the client IP -----------------------------------------------------------------------------


TRUSTED = parse_networks(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("203.0.113.9", ["1.2.3.4"], "203.0.113.9"),  # untrusted peer: the header is ignored
        ("10.1.1.1", [], "10.1.1.1"),  # trusted peer, no header: the peer
        ("10.1.1.1", ["1.2.3.4"], "1.2.3.4"),
        ("10.1.1.1", ["6.6.6.6, 1.2.3.4"], "1.2.3.4"),  # a spoofed left part is not used
        ("10.1.1.1", ["6.6.6.6", "1.2.3.4, 10.2.2.2"], "1.2.3.4"),  # past every trusted hop
        ("10.1.1.1", ["10.3.3.3, 10.2.2.2"], "10.3.3.3"),  # all trusted: the leftmost
        ("10.1.1.1", ["1.2.3.4, garbage"], "10.1.1.1"),  # a hop that is no IP ends the walk
        ("::ffff:10.1.1.1", ["::ffff:1.2.3.4"], "1.2.3.4"),  # IPv4-mapped addresses normalised
        ("fd00::1", ["2001:db8::5"], "2001:db8::5"),
    ],
)
def test_client_ip_is_the_rightmost_untrusted_hop_only_behind_a_trusted_proxy(
    peer: str, xff: list[str], expected: str
) -> None:
    assert client_ip(peer, xff, TRUSTED) == expected


def test_without_trusted_proxies_x_forwarded_for_is_ignored() -> None:
    assert client_ip("10.1.1.1", ["1.2.3.4"], ()) == "10.1.1.1"


# -- through the site: 429 before the body ----------------------------------------------------------


def test_a_burst_beyond_burst_gets_429_slowdown_with_retry_after_before_the_body() -> None:
    gw = Gateway(_limits(enabled=True, requests_per_sec=1, burst=3))
    before = _rejections("s3", "ip")
    for n in range(3):
        assert b"100 Continue" in gw.send(_big_put(f"k{n}")).value()
    refused = gw.send(_big_put("k3"))
    sent = refused.value()
    assert sent.startswith(b"HTTP/1.1 429 ") and b"100 Continue" not in sent
    assert b"<Code>SlowDown</Code>" in sent and b"<Message>Rate limit exceeded</Message>" in sent
    assert b"Retry-After: 1\r\n" in sent and refused.disconnecting
    assert _rejections("s3", "ip") == before + 1
    assert gw.frontend.admission.global_pool is not None
    assert gw.frontend.admission.global_pool.in_use == 3  # the refused one gave its slot back
    # Another client is not affected; a second later the first has a token again.
    assert b"100 Continue" in gw.send(_big_put("k4"), peer="198.51.100.8").value()
    gw.clock.advance(1)
    assert b"100 Continue" in gw.send(_big_put("k5")).value()


def test_bodyless_requests_are_limited_too_and_unauthenticated_ones_count() -> None:
    gw = Gateway(_limits(enabled=True, requests_per_sec=1, burst=2))
    assert status_of(gw.send(b"GET /photos/x HTTP/1.1\r\nHost: gw.test\r\n\r\n")) == 403
    assert status_of(gw.send(signed_request("GET", "/photos/x"))) == 404
    limited = gw.send(signed_request("GET", "/photos/x"))
    assert status_of(limited) == 429 and b"Retry-After: 1\r\n" in limited.value()
    assert limited.value().startswith(b"HTTP/1.1 429 Too Many Requests\r\n")


def test_spoofed_x_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    gw = Gateway(_limits(enabled=True, requests_per_sec=1, burst=2, trusted_proxies=["10.0.0.0/8"]))
    for n in range(2):  # a different forged address each time: still one client
        assert b"100 Continue" in gw.send(_big_put(f"a{n}", xff=f"192.0.2.{n}")).value()
    assert status_of(gw.send(_big_put("a2", xff="192.0.2.99"))) == 429
    # Behind the trusted proxy, two clients are told apart by the header the proxy appends.
    for n in range(2):
        assert b"100 Continue" in gw.send(_big_put(f"b{n}", xff="6.6.6.6, 192.0.2.1"), peer="10.0.0.5").value()
    assert status_of(gw.send(_big_put("b2", xff="192.0.2.1"), peer="10.0.0.5")) == 429
    assert b"100 Continue" in gw.send(_big_put("c", xff="192.0.2.2"), peer="10.0.0.5").value()


def test_per_credential_charges_the_access_key_so_tenants_behind_one_nat_do_not_starve() -> None:
    gw = Gateway(_limits(enabled=True, requests_per_sec=1, burst=2, per_credential=True))
    before = _rejections("s3", "credential")
    for n in range(2):
        assert b"100 Continue" in gw.send(_big_put(f"p{n}")).value()
    refused = gw.send(_big_put("p2"))
    assert status_of(refused) == 429 and b"100 Continue" not in refused.value()
    assert _rejections("s3", "credential") == before + 1
    # Same IP, another tenant: its own bucket, full.
    for n in range(2):
        assert b"100 Continue" in gw.send(_big_put(f"o{n}", access_key="otherkey")).value()
    # Unauthenticated traffic from that IP is still limited per IP (its bucket is untouched so far).
    anonymous = b"PUT /photos/z HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\n"
    assert [status_of(gw.send(anonymous)) for _ in range(3)] == [403, 403, 429]


def test_off_means_no_limit_and_no_buckets() -> None:
    gw = Gateway(_limits(enabled=False, requests_per_sec=1, burst=1))
    for n in range(5):
        assert b"100 Continue" in gw.send(_big_put(f"k{n}")).value()
    assert len(gw.limiter.ips) == 0


# -- /admin/ ---------------------------------------------------------------------------------------


def test_admin_requests_are_limited_with_a_json_429_before_the_body() -> None:
    gw = Gateway(_limits(enabled=True, requests_per_sec=1, burst=2))
    before = _rejections("admin", "ip")
    request = b"POST /admin/api/log-level HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 900000\r\nExpect: 100-continue\r\n\r\n"
    for _ in range(2):
        assert b"100 Continue" in gw.send(request).value()
    refused = gw.send(request).value()
    head, _, body = refused.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429 ") and b"100 Continue" not in head
    assert b"Retry-After: 1" in head and b"Content-Type: application/json" in head
    assert json.loads(body)["error"] == "rate limit exceeded"
    assert _rejections("admin", "ip") == before + 1
    health = gw.send(b"GET /health HTTP/1.1\r\nHost: gw.test\r\n\r\n").value()
    assert health.startswith(b"HTTP/1.1 200 ")  # only /admin/ and S3 are limited


# -- reload ------------------------------------------------------------------------------------------


class _Store:
    async def sync_quota_limits(self, limits: dict[str, int], now: float) -> None:
        pass


def test_a_reload_gives_new_rates_to_new_buckets_and_switches_at_once() -> None:
    gw = Gateway(_limits(enabled=True, requests_per_sec=1, burst=1))
    assert gw.limiter.allow_ip("192.0.2.1", "s3")
    targets = ReloadTargets(store=_Store(), rate_limiter=gw.limiter)
    reloader = Reloader(current=gw.config, targets=targets, clock=gw.clock, record=lambda outcome: None)
    new = replace(gw.config, rate_limit=RateLimitConfig(enabled=True, requests_per_sec=1, burst=5))
    outcome: list[dict[str, Any]] = []
    Deferred.fromCoroutine(reloader.apply(new)).addCallback(outcome.append)
    assert outcome and outcome[0]["changed"] == ["rate_limit.burst"]
    assert not gw.limiter.allow_ip("192.0.2.1", "s3")  # its bucket keeps the old burst of 1
    assert [gw.limiter.allow_ip("192.0.2.2", "s3") for _ in range(6)] == [True] * 5 + [False]
    off = replace(new, rate_limit=replace(new.rate_limit, enabled=False))
    Deferred.fromCoroutine(reloader.apply(off))
    assert all(gw.limiter.allow_ip("192.0.2.1", "s3") for _ in range(10))


# -- memory under a spray of addresses ------------------------------------------------------------


@pytest.mark.slow
def test_memory_after_a_million_distinct_ips_returns_to_base_after_the_sweep() -> None:
    import tracemalloc

    clock = Clock()
    limiter = RateLimiter(RateLimitConfig(enabled=True), clock)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for n in range(1_000_000):  # each address a new string, as each request's is
            limiter.allow_ip(f"{10 + n // 65536}.{n // 256 % 256}.{n % 256}.1", "s3")
        full = tracemalloc.get_traced_memory()[0]
        clock.advance(limiter.config.cleanup_max_age + 1)
        assert limiter.sweep() == (1_000_000, True)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    print(f"\nrate limiter: base {base} B, 1M IPs {full - base} B ({(full - base) / 1e6:.0f} B/IP), after sweep {after - base} B")
    assert full - base > 50_000_000  # the spray was really held
    assert after - base < 64 * 1024  # and all of it given back

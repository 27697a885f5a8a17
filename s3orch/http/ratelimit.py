"""Rate limiting (``rate_limit.*``): token buckets per client IP, optionally per access key.

* Every S3 request and every ``/admin/`` request takes a token from its client IP's bucket
  when its headers are in (S3: after the admission slot, before authentication, as
  s3-orchestrator orders them); an empty bucket is ``429 SlowDown`` "Rate limit exceeded"
  with ``Retry-After: 1``, answered before the body is read.  A bucket holds ``burst``
  tokens and refills at ``requests_per_sec``.
* The client IP (:func:`client_ip`, :meth:`RateLimiter.client_ip_of`) is the peer's
  address, unless the peer is in ``trusted_proxies``: then it is the rightmost hop of
  ``X-Forwarded-For`` that is not itself a trusted proxy (a client cannot spoof its way
  past the proxy, which appends the address it saw).
* ``per_credential`` (our addition): a request that authenticates is charged to its access
  key's bucket instead (its IP token is given back), so tenants behind one NAT address do
  not starve each other, while unauthenticated traffic stays limited per IP.
* Buckets are kept in last-use order; the sweep (every ``cleanup_interval``, by
  :class:`s3orch.workers.rate_limit_sweep.RateLimitSweeper`) drops those idle longer than ``cleanup_max_age`` from the front
  and stops at the first fresh one, and compacts the table after a large sweep, so a spray
  of source addresses costs memory only until the next sweep.
* A SIGHUP reload (:meth:`RateLimiter.reconfigure`) applies new rates to new buckets only
  (as s3-orchestrator: existing buckets expire naturally); ``enabled``, ``per_credential``
  and ``trusted_proxies`` take effect at once.  Limits are per instance.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.config.features import RateLimitConfig
from s3orch.http.site import RejectedEarly, S3Request
from s3orch.observe.logging import new_request_id
from s3orch.observe.metrics import RATE_LIMIT_BUCKETS, RATE_LIMIT_REJECTIONS

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

log = Logger(namespace="s3orch.ratelimit")

#: Peers whose trust is remembered (a gateway sees a few proxies; a spray only clears it).
PEER_CACHE = 4096


@dataclass(frozen=True)
class Rates:
    """One generation of rates, shared by the buckets made under it."""

    per_second: float
    burst: float


class _Bucket:
    __slots__ = ("rates", "stamp", "tokens")

    def __init__(self, tokens: float, stamp: float, rates: Rates) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.rates = rates


class TokenBuckets:
    """Token buckets by key (an IP, an access key), ordered by last use for a cheap sweep."""

    def __init__(self, rates: Rates, now: Callable[[], float]) -> None:
        self.rates = rates
        self._now = now
        self._buckets: dict[str, _Bucket] = {}
        self._swept = 0  # removed by the sweep under way

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> bool:
        """One token from ``key``'s bucket; False when it is empty."""
        now = self._now()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(self.rates.burst, now, self.rates)
        else:
            rates = bucket.rates
            refill = max(0.0, now - bucket.stamp) * rates.per_second
            bucket.tokens = min(rates.burst, bucket.tokens + refill)
            bucket.stamp = now
        self._buckets[key] = bucket  # to the end: the dict stays in last-use order
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def give_back(self, key: str) -> None:
        """Return the token ``take`` took (the request is charged elsewhere)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(bucket.rates.burst, bucket.tokens + 1.0)

    def sweep(self, max_age: float, batch: int | None = None) -> tuple[int, bool]:
        """Drop up to ``batch`` buckets unused for more than ``max_age`` seconds: how many
        went, and whether the sweep is done (False: call again, after yielding the reactor).

        The oldest are at the front, so the walk stops at the first one still in use.  A
        bucket idle that long is full again, so dropping it changes no answer.  Python's
        dicts do not shrink on delete: once a sweep has removed more than what is left,
        the table is copied, giving the memory back.
        """
        cutoff = self._now() - max_age
        stale: list[str] = []
        done = True
        for key, bucket in self._buckets.items():
            if bucket.stamp > cutoff:
                break
            if batch is not None and len(stale) >= batch:
                done = False
                break
            stale.append(key)
        for key in stale:
            del self._buckets[key]
        self._swept += len(stale)
        if done:
            if self._swept > len(self._buckets):
                self._buckets = dict(self._buckets)
            self._swept = 0
        return len(stale), done


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """``trusted_proxies`` as networks (the loader has already refused invalid ones)."""
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_ip(peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's IP as the rate limiter sees it.

    ``peer`` is the connection's remote address, ``forwarded_for`` the request's
    ``X-Forwarded-For`` header values in order.  Unless the peer is a trusted proxy the
    header is ignored (anyone can write it).  Otherwise the hops are read from the right
    (the last one was appended by the peer itself) past every trusted proxy; the first
    untrusted one is the client.  A hop that is not an IP address ends the walk at the last
    trusted hop; all hops trusted: the leftmost.
    """
    if not trusted:
        return peer
    address = _address(peer)
    if address is None or not any(address in net for net in trusted):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    last = address
    for hop in reversed(hops):
        hop_address = _address(hop)
        if hop_address is None:
            return str(last)
        if not any(hop_address in net for net in trusted):
            return str(hop_address)
        last = hop_address
    return str(last)


def peer_host(request: Any) -> str:
    """The remote address of a twisted.web request's connection ("" when unknown)."""
    peer = request.getClientAddress()
    return str(getattr(peer, "host", "") or "")


def forwarded_for(request: Any) -> list[str]:
    values = request.requestHeaders.getRawHeaders(b"x-forwarded-for") or []
    return [v.decode("latin-1") if isinstance(v, bytes) else v for v in values]


class RateLimiter:
    """The per-IP (and per-access-key) limits of one gateway, reloadable."""

    def __init__(self, config: RateLimitConfig, clock: IReactorTime) -> None:
        self.clock = clock
        rates = Rates(config.requests_per_sec, float(config.burst))
        self.ips = TokenBuckets(rates, clock.seconds)
        self.credentials = TokenBuckets(rates, clock.seconds)
        self.config = config
        self.trusted = parse_networks(config.trusted_proxies)
        #: Peers already checked against ``trusted`` (bounded: cleared when full).
        self._peer_trusted: dict[str, bool] = {}
        RATE_LIMIT_BUCKETS.labels("ip").set_function(lambda: float(len(self.ips)))
        RATE_LIMIT_BUCKETS.labels("credential").set_function(lambda: float(len(self.credentials)))

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def reconfigure(self, config: RateLimitConfig) -> None:
        """A reload: new rates for new buckets, the rest at once."""
        rates = Rates(config.requests_per_sec, float(config.burst))
        self.ips.rates = self.credentials.rates = rates
        self.trusted = parse_networks(config.trusted_proxies)
        self._peer_trusted.clear()
        self.config = config
        log.info(
            "Reloaded rate limits", component="reload", requests_per_sec=config.requests_per_sec,
            burst=config.burst, enabled=config.enabled,
        )

    def client_ip_of(self, request: Any) -> str:
        """The client IP of a twisted.web request, as the rate limiter finds it (the
        dashboard's login throttle keys on the same)."""
        peer = peer_host(request)
        if not self.trusted:
            return peer  # no parsing: the cost of a request without proxies is a dict lookup
        trusted = self._peer_trusted.get(peer)
        if trusted is None:
            address = _address(peer)
            trusted = address is not None and any(address in net for net in self.trusted)
            if len(self._peer_trusted) >= PEER_CACHE:
                self._peer_trusted.clear()
            self._peer_trusted[peer] = trusted
        return client_ip(peer, forwarded_for(request), self.trusted) if trusted else peer

    def allow_ip(self, ip: str, api: str) -> bool:
        """Charge one request to ``ip``; False (counted) when over its limit."""
        if not self.config.enabled or self.ips.take(ip):
            return True
        RATE_LIMIT_REJECTIONS.labels(api, "ip").inc()
        return False

    def allow_credential(self, ip: str, access_key: str) -> bool:
        """An authenticated S3 request: with ``per_credential``, charged to its access key
        instead of its IP; False (counted) when the key is over its limit."""
        if not (self.config.enabled and self.config.per_credential):
            return True
        self.ips.give_back(ip)
        if self.credentials.take(access_key):
            return True
        RATE_LIMIT_REJECTIONS.labels("s3", "credential").inc()
        return False

    def sweep(self, batch: int | None = None) -> tuple[int, bool]:
        """One step of the sweep of idle buckets (``batch`` at most from each table): how
        many went, and whether it is done."""
        max_age = self.config.cleanup_max_age
        ips, ips_done = self.ips.sweep(max_age, batch)
        keys, keys_done = self.credentials.sweep(max_age, batch)
        return ips + keys, ips_done and keys_done


def admin_gate(limiter: RateLimiter, prefix: bytes = b"/admin") -> Callable[[S3Request], RejectedEarly | None]:
    """The site's check of non-S3 requests: ``/admin/`` is charged to its client IP's bucket
    and answered ``429 {"error": "rate limit exceeded"}`` with ``Retry-After: 1`` when it is
    empty, before its body is read (the admin API answers JSON)."""

    def gate(request: S3Request) -> RejectedEarly | None:
        path = request._early_uri.split(b"?", 1)[0]
        if not limiter.enabled or not (path == prefix or path.startswith(prefix + b"/")):
            return None
        if limiter.allow_ip(limiter.client_ip_of(request), "admin"):
            return None
        request_id = new_request_id()
        body = json.dumps({"error": "rate limit exceeded", "request_id": request_id}).encode() + b"\n"
        return RejectedEarly(
            429,
            [("Content-Type", "application/json"), ("X-Request-Id", request_id), ("Retry-After", "1")],
            body,
        )

    return gate

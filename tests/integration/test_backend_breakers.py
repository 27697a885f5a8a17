"""Backend circuit breakers in a real gateway (twistd), over two moto backends, one of them
behind the fault rig's TCP proxy (BEHAVIOURS §1.27, issue 15's acceptance):

a backend that refuses PUTs makes writes land elsewhere; once its breaker is open, a request
that would have gone there completes in under 100 ms measured from the client (the proxy then
stalls, so reaching the backend would cost the whole ``backend_timeout``) and never connects;
after ``open_timeout`` the half-open probe closes the breaker when the backend is healthy.
"""

from __future__ import annotations

import dataclasses
import time
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import PHOTOS, backend_keys
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.gateway import GatewayProcess
from tests.support.servers import MotoServer

OPEN_TIMEOUT = 2.0
THRESHOLD = 2
#: The acceptance figure: a call to an open backend fails at once, so the request it was part
#: of costs what a request to a healthy backend costs.
FAST = 0.100


def _metric(gw: GatewayProcess, metric_name: str, **labels: str) -> float:
    text = urllib.request.urlopen(gw.endpoint + "/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(metric_name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy.for_endpoint(moto_server.endpoint) as p:
        yield p


def _no_retry_client(gw: GatewayProcess) -> Any:
    """A boto3 client that sends each request once (boto3 retries a 503 by default, which
    would time the retry's back-off, not the gateway)."""
    return boto3.client(
        "s3",
        endpoint_url=gw.endpoint,
        aws_access_key_id=PHOTOS.access_key,
        aws_secret_access_key=PHOTOS.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
    )


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    try:
        result = call()
    except ClientError as exc:
        result = exc
    return time.monotonic() - started, result


def test_a_refusing_backend_opens_its_breaker_and_the_probe_closes_it(  # type: ignore[no-untyped-def]
    start_gateway, moto_backends, proxy: FaultProxy
) -> None:
    first, second = moto_backends(2, quota=1 << 30)
    proxied = dataclasses.replace(first, endpoint=proxy.endpoint)
    gw = start_gateway(
        GatewayConfig(
            backends=[proxied, second],
            routing_strategy="pack",
            extra={
                "backend_circuit_breaker": {
                    "enabled": True,
                    "failure_threshold": THRESHOLD,
                    "open_timeout": f"{OPEN_TIMEOUT:g}s",
                }
            },
        )
    )
    s3 = _no_retry_client(gw)

    def landed(spec: BackendSpec) -> int:
        return len(backend_keys(spec))

    s3.put_object(Bucket="photos", Key="before", Body=b"on the first backend")
    assert (landed(first), landed(second)) == (1, 0)  # pack: the first backend takes writes

    # The first backend refuses: every write still succeeds, on the second one.
    proxy.set(Fault.REFUSE)
    for i in range(THRESHOLD):
        s3.put_object(Bucket="photos", Key=f"refused-{i}", Body=b"x" * 100)
    assert (landed(first), landed(second)) == (1, THRESHOLD)
    assert _metric(gw, "s3o_circuit_breaker_state", name="backend-1") == 1
    assert _metric(gw, "s3o_circuit_breaker_transitions_total", name="backend-1", to="open") == 1
    assert _metric(gw, "s3o_circuit_breaker_state", name="backend-2") == 0
    assert "backend circuit breaker opened" in gw.log_text()

    # Now the first backend hangs: reaching it would cost backend_timeout (10 s). With its
    # breaker open, nothing connects to it and each request is as fast as a healthy one.
    proxy.set(Fault.STALL_HEADERS)
    connections = proxy.connections
    put_times: list[float] = []
    for i in range(5):
        elapsed, result = _timed(partial(s3.put_object, Bucket="photos", Key=f"fast-{i}", Body=b"y" * 100))
        assert not isinstance(result, ClientError), result
        put_times.append(elapsed)
    # The only holder of "before" is behind the open breaker: a 5xx at once, never a 404.
    get_times: list[float] = []
    for _ in range(3):
        elapsed, result = _timed(lambda: s3.get_object(Bucket="photos", Key="before"))
        assert isinstance(result, ClientError)
        assert result.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        get_times.append(elapsed)
    print(f"open breaker: PUT {[round(t * 1000, 1) for t in put_times]} ms, GET {[round(t * 1000, 1) for t in get_times]} ms")
    assert proxy.connections == connections  # the open backend was not even connected to
    assert max(put_times) < FAST and max(get_times) < FAST
    assert (landed(first), landed(second)) == (1, THRESHOLD + 5)
    assert _metric(gw, "s3o_circuit_breaker_rejections_total", name="backend-1") >= 3

    # Healthy again; after open_timeout (+ up to a quarter of jitter) the next write is the
    # probe: it lands on the first backend and closes the breaker.
    proxy.set(Fault.PASS)
    time.sleep(OPEN_TIMEOUT * 1.25 + 0.2)
    s3.put_object(Bucket="photos", Key="probe", Body=b"z" * 100)
    assert (landed(first), landed(second)) == (2, THRESHOLD + 5)
    assert _metric(gw, "s3o_circuit_breaker_state", name="backend-1") == 0
    assert _metric(gw, "s3o_circuit_breaker_transitions_total", name="backend-1", to="closed") == 1
    assert s3.get_object(Bucket="photos", Key="before")["Body"].read() == b"on the first backend"
    assert proxy.connections > connections

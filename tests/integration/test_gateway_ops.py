"""The operational surface of a running gateway process: logs, signals, start-up refusals and a
separate metrics listener.  Addressing styles, the public /metrics and /health, proxy tokens and
the spool directory are tested in-process: tests/inproc/test_gateway_ops.py."""

from __future__ import annotations

import json

from tests.conftest import PHOTOS, s3_client
from tests.support.configs import GatewayConfig
from tests.support.polling import wait_for


def test_logs_are_json_lines_with_component_and_no_secrets(start_gateway, moto_backends) -> None:  # type: ignore[no-untyped-def]
    gw = start_gateway(GatewayConfig(backends=moto_backends(1, quota=1 << 20)))
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    s3.put_object(Bucket="photos", Key="log-me", Body=b"x")
    s3.get_object(Bucket="photos", Key="log-me")["Body"].read()
    # A real process: wait until the GET's audit line (the last one) has reached the file.
    wait_for(lambda: '"event":"s3.GetObject"' in gw.log_text())
    records = [json.loads(line) for line in gw.log_text().splitlines() if line.strip()]
    assert records and all("component" in r and "level" in r and "time" in r for r in records)
    audits = [r for r in records if r.get("audit")]
    puts = [r for r in audits if r["event"] == "s3.PutObject"]
    assert len(puts) == 1
    put = puts[0]
    assert put["bucket"] == "photos" and put["key"] == "log-me" and put["status"] == 200
    assert put["access_key"] == PHOTOS.access_key and put["request_id"] and put["duration"] >= 0
    stored = [r for r in audits if r["event"] == "storage.PutObject" and r["request_id"] == put["request_id"]]
    assert len(stored) == 1 and stored[0]["access_key"] == PHOTOS.access_key and stored[0]["size"] == 1
    gets = [r for r in audits if r["event"] in ("s3.GetObject", "storage.GetObject")]
    assert len({r["request_id"] for r in gets}) == 1 and len(gets) == 2
    assert all(r["access_key"] == PHOTOS.access_key for r in gets)
    text = gw.log_text()
    assert PHOTOS.secret_key not in text and "Signature=" not in text


def _get(url: str) -> tuple[int, bytes, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("content-type", "")


def test_metrics_listen_moves_metrics_to_their_own_address(start_gateway, moto_backends) -> None:  # type: ignore[no-untyped-def]
    from tests.support.servers import free_port

    metrics_port = free_port()
    config = GatewayConfig(
        backends=moto_backends(1, quota=1 << 20),
        extra={"telemetry": {"metrics": {"enabled": True, "path": "/metrics",
                                         "listen": f"127.0.0.1:{metrics_port}"}}},
    )
    gw = start_gateway(config)
    metrics = f"http://127.0.0.1:{metrics_port}"
    status, body, content_type = _get(metrics + "/metrics")
    assert status == 200 and b"s3o_requests_total" in body and content_type.startswith("text/plain")
    assert _get(metrics + "/health/ready")[:2] == (200, b'{"status":"ready"}')
    assert _get(metrics + "/photos/key")[0] == 404  # nothing but the operational endpoints there
    # On the S3 port, /metrics is an S3 request like any other: bucket "metrics", no credentials.
    status, body, content_type = _get(gw.endpoint + "/metrics")
    assert status == 403 and content_type == "application/xml"
    assert b"<Code>AccessDenied</Code>" in body and b"s3o_" not in body
    assert _get(gw.endpoint + "/health/ready")[0] == 200  # load balancers still probe the S3 port
    gw.stop()
    import socket

    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", metrics_port)) != 0  # stopped with the gateway


def test_text_logs_carry_the_audit_fields(start_gateway, moto_backends) -> None:  # type: ignore[no-untyped-def]
    gw = start_gateway(GatewayConfig(backends=moto_backends(1, quota=1 << 20), extra_server={"log_format": "text"}))
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    s3.put_object(Bucket="photos", Key="text log.txt", Body=b"x")
    assert wait_for(lambda: "event=s3.PutObject" in gw.log_text(), 10), gw.log_text()
    (line,) = [line for line in gw.log_text().splitlines() if "event=s3.PutObject" in line]
    assert " INFO  [audit] audit event=s3.PutObject " in line
    assert 'bucket=photos key="text log.txt"' in line and "status=200" in line
    assert f"access_key={PHOTOS.access_key}" in line and PHOTOS.secret_key not in gw.log_text()

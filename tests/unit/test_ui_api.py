"""The dashboard (ui.*) through a whole in-process gateway: login, lockout, sessions, CSRF,
security headers, and every ``/ui/api/*`` route's JSON, limits and refusals."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from twisted.logger import globalLogPublisher

from s3orch.observe.logging import active_settings
from s3orch.testing.harness import DEFAULT_CONFIG, GatewayHarness, HarnessResponse
from s3orch.ui.auth import LOCKOUT_SECONDS, PasswordCheck

UI = 'ui:\n  enabled: true\n  admin_key: "admin"\n  admin_secret: "{secret}"\n  session_secret: "sess-secret"\n'
CONFIG = DEFAULT_CONFIG.replace("quota_bytes: 1048576", "quota_bytes: 4194304") + UI.format(secret="hunter2")
HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "content-security-policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
}


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path, CONFIG).start()
    try:
        yield harness
    finally:
        harness.stop()


def send(h: GatewayHarness, method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None,
         cookies: dict[str, str] | None = None) -> HarnessResponse:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {h.host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if cookies:
        lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in cookies.items()))
    return h.send_raw("\r\n".join(lines).encode() + b"\r\n\r\n" + body)


def login_post(h: GatewayHarness, key: str, secret: str, ip_header: dict[str, str] | None = None) -> HarnessResponse:
    form = urlencode({"access_key": key, "secret_key": secret}).encode()
    return send(h, "POST", "/ui/login", body=form,
                headers={"Content-Type": "application/x-www-form-urlencoded", **(ip_header or {})})


def set_cookies(response: HarnessResponse) -> list[str]:
    """Every Set-Cookie header's value (the response's header map joins repeats)."""
    lines = response.raw_head.decode("latin-1").split("\r\n")
    return [line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("set-cookie:")]


def cookies_of(response: HarnessResponse) -> dict[str, str]:
    jar = {}
    for value in set_cookies(response):
        name, _, rest = value.partition("=")
        jar[name] = rest.split(";", 1)[0]
    return jar


class Session:
    def __init__(self, h: GatewayHarness) -> None:
        self.h = h
        answer = login_post(h, "admin", "hunter2")
        assert answer.status == 303, answer.text
        self.cookies = cookies_of(answer)

    def get(self, path: str) -> HarnessResponse:
        return send(self.h, "GET", "/ui" + path, cookies=self.cookies)

    def post(self, path: str, body: Any = None, *, csrf: bool = True, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> HarnessResponse:
        data = raw if raw is not None else json.dumps(body or {}).encode()
        extra = {"Content-Type": "application/json", **(headers or {})}
        if csrf:
            extra["X-CSRF-Token"] = self.cookies["s3orch_csrf"]
        return send(self.h, "POST", "/ui" + path, body=data, headers=extra, cookies=self.cookies)


def js(response: HarnessResponse, status: int = 200) -> Any:
    assert response.status == status, response.text
    assert response.header("content-type") == "application/json"
    return json.loads(response.body)


# --- login, sessions, refusals --------------------------------------------------------------


def test_login_sets_a_signed_httponly_strict_session_and_a_readable_csrf_cookie(gateway: GatewayHarness) -> None:
    answer = login_post(gateway, "admin", "hunter2")
    assert answer.status == 303 and answer.header("location") == "/ui/"
    cookies = set_cookies(answer)
    session = next(c for c in cookies if c.startswith("s3orch_session="))
    csrf = next(c for c in cookies if c.startswith("s3orch_csrf="))
    assert "HttpOnly" in session and "samesite=strict" in session.lower() and "secure" not in session.lower()
    assert "HttpOnly" not in csrf and "samesite=strict" in csrf.lower()
    for name, value in HEADERS.items():
        assert answer.header(name) == value


def test_force_secure_cookies_marks_both_cookies_secure(tmp_path: Path) -> None:
    forced = CONFIG + "  force_secure_cookies: true\n"
    harness = GatewayHarness(tmp_path, forced).start()
    try:
        cookies = set_cookies(login_post(harness, "admin", "hunter2"))
    finally:
        harness.stop()
    assert len(cookies) == 2 and all("; secure" in c.lower() for c in cookies)


def test_wrong_password_is_401_with_the_page_and_unknown_key_too(gateway: GatewayHarness) -> None:
    for key, secret in (("admin", "wrong"), ("nobody", "hunter2"), ("", "")):
        answer = login_post(gateway, key, secret)
        assert answer.status == 401
        assert b"Wrong access key or secret key" in answer.body and b"<form" in answer.body
        assert "s3orch_session" not in cookies_of(answer)


def test_five_failures_lock_the_ip_out_for_five_minutes_even_with_the_right_password(gateway: GatewayHarness) -> None:
    for _ in range(5):
        assert login_post(gateway, "admin", "nope").status == 401
    locked = login_post(gateway, "admin", "hunter2")
    assert locked.status == 429 and b"Too many attempts" in locked.body
    gateway.advance(LOCKOUT_SECONDS + 1)
    assert login_post(gateway, "admin", "hunter2").status == 303


def test_pages_redirect_to_login_and_apis_answer_401_without_a_session(gateway: GatewayHarness) -> None:
    for page in ("/ui/", "/ui/objects", "/ui/logs", "/ui/config", "/ui/operations"):
        answer = send(gateway, "GET", page)
        assert answer.status == 303 and answer.header("location") == "/ui/login", page
        assert answer.header("x-frame-options") == "DENY"
    for api in ("dashboard", "tree", "logs", "download?key=photos/a", "jobs"):
        answer = send(gateway, "GET", f"/ui/api/{api}")
        assert js(answer, 401) == {"error": "unauthorized"}
        assert all(answer.header(name) == value for name, value in HEADERS.items())
    forged = {"s3orch_session": "9999999999.abcd.0000"}
    assert send(gateway, "GET", "/ui/api/dashboard", cookies=forged).status == 401


def test_a_session_expires_after_24_hours(gateway: GatewayHarness) -> None:
    session = Session(gateway)
    assert session.get("/api/jobs").status == 200
    gateway.advance(24 * 3600 + 1)
    assert session.get("/api/jobs").status == 401


def test_a_session_is_valid_on_another_instance_sharing_the_secret(gateway: GatewayHarness, tmp_path: Path) -> None:
    session = Session(gateway)
    other = GatewayHarness(tmp_path / "other", CONFIG).start()
    try:
        assert send(other, "GET", "/ui/api/jobs", cookies=session.cookies).status == 200
    finally:
        other.stop()


def test_every_post_without_the_csrf_token_is_403(gateway: GatewayHarness) -> None:
    session = Session(gateway)
    for route in ("delete", "delete-prefix", "upload", "rebalance", "clean-excess", "sync", "drain", "logout"):
        answer = session.post(f"/api/{route}", {"key": "photos/x"}, csrf=False)
        assert js(answer, 403)["error"].startswith("missing or invalid CSRF"), route
        wrong = session.post(f"/api/{route}", {}, csrf=False, headers={"X-CSRF-Token": "0" * 64})
        assert wrong.status == 403


def test_bcrypt_secret_is_accepted_and_checked() -> None:
    bcrypt = pytest.importorskip("bcrypt")
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    check = PasswordCheck("admin", hashed)
    assert check.check("admin", "s3cret")
    assert not check.check("admin", "s3cre")
    assert not check.check("other", "s3cret")


def test_the_login_page_and_static_assets_are_served_without_a_session(gateway: GatewayHarness) -> None:
    page = send(gateway, "GET", "/ui/login")
    assert page.status == 200 and b'name="access_key"' in page.body and b'name="secret_key"' in page.body
    for asset, kind in (("ui.css", "text/css"), ("ui.js", "javascript")):
        answer = send(gateway, "GET", f"/ui/static/{asset}")
        assert answer.status == 200 and kind in (answer.header("content-type") or "")
    assert send(gateway, "GET", "/ui/static/..%2Fapp.py").status == 404


# --- reading -----------------------------------------------------------------------------


def test_dashboard_json_carries_the_admin_status_per_backend(gateway: GatewayHarness) -> None:
    assert gateway.put("photos", "a.txt", b"hello").status == 200
    data = js(Session(gateway).get("/api/dashboard"))
    by_name = {b["name"]: b for b in data["backends"]}
    assert set(by_name) == {"backend-1", "backend-2"}
    assert by_name["backend-1"]["bytes_used"] == 5 and by_name["backend-1"]["object_count"] == 1
    assert by_name["backend-1"]["bytes_limit"] == 4194304
    assert data["multipart_uploads"] == {"photos": 0, "documents": 0}
    assert data["buckets"] == ["photos", "documents"]


def test_tree_pages_buckets_prefixes_and_keys(gateway: GatewayHarness) -> None:
    for key in ("a.txt", "b.txt", "dir/c.txt", "dir/d.txt"):
        assert gateway.put("photos", key, b"xyz").status == 200
    session = Session(gateway)
    top = js(session.get("/api/tree"))
    assert [e["name"] for e in top["entries"]] == ["photos/", "documents/"] and top["hasMore"] is False
    first = js(session.get("/api/tree?prefix=photos/&maxKeys=2"))
    assert first["hasMore"] is True
    assert [(e["name"], e["isDir"]) for e in first["entries"]] == [("a.txt", False), ("b.txt", False)]
    assert first["entries"][0]["size"] == 3
    rest = js(session.get(f"/api/tree?prefix=photos/&maxKeys=2&startAfter={quote(first['nextCursor'])}"))
    assert [(e["name"], e["isDir"]) for e in rest["entries"]] == [("dir/", True)]
    assert rest["hasMore"] is False
    inner = js(session.get("/api/tree?prefix=photos/dir/"))
    assert [e["path"] for e in inner["entries"]] == ["photos/dir/c.txt", "photos/dir/d.txt"]


@pytest.mark.parametrize("max_keys", ["0", "201", "-1", "x"])
def test_tree_max_keys_must_be_1_to_200(gateway: GatewayHarness, max_keys: str) -> None:
    assert "maxKeys" in js(Session(gateway).get(f"/api/tree?prefix=photos/&maxKeys={max_keys}"), 400)["error"]


def test_object_details_list_every_copy(gateway: GatewayHarness) -> None:
    assert gateway.put("photos", "k.bin", b"abc", {"x-amz-tagging": "team=ops"}).status == 200
    data = js(Session(gateway).get("/api/object?key=photos/k.bin"))
    assert data["size"] == 3 and data["etag"] == hashlib.md5(b"abc").hexdigest()
    assert [c["backend"] for c in data["copies"]] == ["backend-1"]
    assert data["tags"] == [["team", "ops"]]
    assert js(Session(gateway).get("/api/object?key=photos/none"), 404)["error"] == "no object photos/none"
    assert js(Session(gateway).get("/api/object?key=nobucket/x"), 400)


def test_logs_filter_by_request_id_level_and_component(gateway: GatewayHarness) -> None:
    settings = active_settings()
    assert settings is not None
    observer = settings.observer()  # twistd installs it; the harness does not
    globalLogPublisher.addObserver(observer)
    try:
        session = Session(gateway)
        put = gateway.put("photos", "logged.txt", b"x")
    finally:
        globalLogPublisher.removeObserver(observer)
    request_id = put.header("x-amz-request-id")
    lines = js(session.get(f"/api/logs?request_id={request_id}"))["lines"]
    assert lines and all(line["request_id"] == request_id for line in lines)
    errors = js(session.get("/api/logs?level=error"))["lines"]
    assert all(line["level"] == "ERROR" for line in errors)
    assert js(session.get("/api/logs?level=loud"), 400)["error"].startswith("unknown log level")
    ui_lines = js(session.get("/api/logs?component=ui"))["lines"]
    assert ui_lines and all(line["component"] == "ui" for line in ui_lines)  # the login was logged


def test_pages_render_and_config_masks_secrets(gateway: GatewayHarness) -> None:
    session = Session(gateway)
    for page in ("/", "/objects", "/objects?prefix=photos/", "/operations", "/logs?level=info", "/config"):
        answer = session.get(page)
        assert answer.status == 200 and (answer.header("content-type") or "").startswith("text/html"), page
        assert answer.header("content-security-policy") == HEADERS["content-security-policy"]
    config = session.get("/config").text
    assert "hunter2" not in config and "sess-secret" not in config and "photossecret" not in config
    assert "********" in config


# --- changing ----------------------------------------------------------------------------


def multipart(key: str, data: bytes, boundary: str = "XyZb0undary") -> tuple[bytes, str]:
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\n{key}\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\n"
        "Content-Type: application/x-test\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_upload_then_download_is_byte_identical_and_an_attachment(gateway: GatewayHarness) -> None:
    session = Session(gateway)
    data = bytes(range(256)) * 1000 + b"\r\n--XyZb0undar"  # > 100 kB: spooled; boundary-like tail
    body, ctype = multipart("photos/up/f.bin", data)
    answer = js(session.post("/api/upload", raw=body, headers={"Content-Type": ctype}))
    assert answer == {"ok": True, "key": "photos/up/f.bin", "size": len(data), "etag": hashlib.md5(data).hexdigest()}
    download = session.get("/api/download?key=photos/up/f.bin")
    assert download.status == 200 and download.body == data
    assert (download.header("content-disposition") or "").startswith('attachment; filename="f.bin"')
    assert gateway.get("photos", "up/f.bin").body == data


def test_upload_refusals(gateway: GatewayHarness) -> None:
    session = Session(gateway)
    body, ctype = multipart("nobucket/f.bin", b"x")
    assert "configured bucket" in js(session.post("/api/upload", raw=body, headers={"Content-Type": ctype}), 400)["error"]
    assert js(session.post("/api/upload", raw=b"junk", headers={"Content-Type": "text/plain"}), 400)
    cut = body[:-10]
    assert js(session.post("/api/upload", raw=cut, headers={"Content-Type": ctype}), 400)


def test_only_the_upload_route_may_exceed_one_mib(gateway: GatewayHarness) -> None:
    session = Session(gateway)
    big = b'{"key": "' + b"x" * (1024 * 1024) + b'"}'
    assert session.post("/api/delete", raw=big).status == 413
    data = b"y" * (1024 * 1024 + 10)
    body, ctype = multipart("photos/big.bin", data)
    assert js(session.post("/api/upload", raw=body, headers={"Content-Type": ctype}))["size"] == len(data)
    lines = ["POST /ui/api/upload HTTP/1.1", f"Host: {gateway.host}", f"Content-Length: {513 * 1024 * 1024 + 1}", "", ""]
    assert gateway.send_raw("\r\n".join(lines).encode()).status == 413  # refused before the body


def test_delete_and_delete_prefix(gateway: GatewayHarness) -> None:
    for index in range(5):
        assert gateway.put("photos", f"old/{index}", b"x").status == 200
    assert gateway.put("photos", "keep.txt", b"x").status == 200
    session = Session(gateway)
    assert js(session.get("/api/prefix-count?prefix=photos/old/")) == {"prefix": "photos/old/", "count": 5}
    assert js(session.post("/api/delete-prefix", {"prefix": "photos/old/"})) == {"ok": True, "deleted": 5}
    assert js(session.post("/api/delete", {"key": "photos/keep.txt"})) == {"ok": True}
    assert js(session.post("/api/delete", {"key": "photos/keep.txt"}), 404)
    assert gateway.get("photos", "keep.txt").status == 404
    assert js(session.post("/api/delete-prefix", {"prefix": "photos"}), 400)
    assert js(session.post("/api/delete", raw=b"[1]"), 400)["error"] == "the JSON body must be an object"


def test_operations_run_the_admin_passes_in_the_foreground_and_as_jobs(gateway: GatewayHarness) -> None:
    session = Session(gateway)
    cleaned = js(session.post("/api/clean-excess", {}))
    assert cleaned["ok"] is True
    rebalance = js(session.post("/api/rebalance", {}))
    assert rebalance["ok"] is True
    started = js(session.post("/api/scrub", {"background": True}))
    job = js(session.get(f"/api/jobs/{started['job']['id']}"))
    assert job["operation"] == "scrub" and job["state"] in ("done", "failed")
    assert js(session.get("/api/jobs"))["jobs"][0]["id"] == job["id"]
    assert js(session.get("/api/jobs/999"), 404)
    assert js(session.post("/api/nonsense", {}), 404)
    assert js(session.post("/api/sync", {"backend": "backend-1"}), 400)


def test_drain_starts_and_reaches_completed(gateway: GatewayHarness) -> None:
    for index in range(3):
        assert gateway.put("photos", f"d/{index}", b"z" * 10).status == 200
    session = Session(gateway)
    assert js(session.post("/api/drain", {"backend": "backend-1"}))["status"] == "drain started"
    for _ in range(60):
        status = js(session.get("/api/drain-status?backend=backend-1"))
        if status.get("state") == "completed":
            break
        gateway.advance(1)
    assert status["state"] == "completed" and status["objects_remaining"] == 0
    assert js(session.post("/api/drain", {"backend": "nope"}), 400)


def test_logout_clears_the_cookies(gateway: GatewayHarness) -> None:
    session = Session(gateway)
    answer = session.post("/api/logout", {})
    assert js(answer) == {"ok": True}
    assert all(re.search(r"Max-Age=0", c) for c in set_cookies(answer))


def test_the_dashboard_counts_the_replication_backlog(tmp_path: Path) -> None:
    harness = GatewayHarness(tmp_path, CONFIG + "replication:\n  factor: 2\n  worker_interval: 3600s\n").start()
    try:
        session = Session(harness)
        assert harness.put("photos", "r1", b"x").status == 200
        assert harness.put("photos", "r2", b"y").status == 200
        before = js(session.get("/api/dashboard"))["replication_backlog"]
        js(session.post("/api/replicate", {}))
        after = js(session.get("/api/dashboard"))["replication_backlog"]
        page = session.get("/").text
    finally:
        harness.stop()
    assert (before, after) == (2, 0)
    assert "0 extents below the replication factor" in page


def test_no_replicator_means_no_backlog_figure(gateway: GatewayHarness) -> None:
    assert js(Session(gateway).get("/api/dashboard"))["replication_backlog"] is None

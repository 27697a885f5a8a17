"""Who may use the dashboard: the password check, signed sessions, CSRF tokens, login lockout.

* The session cookie is ``<expires>.<nonce>.<mac>``, an HMAC-SHA256 under a key derived from
  ``ui.session_secret``: nothing is stored server-side, so a session survives restarts and is
  valid on every instance that shares the secret.
* The CSRF token is derived from the session (HMAC of it under a second derived key): a page
  in another origin cannot read the ``s3orch_csrf`` cookie, so it cannot echo it in
  ``X-CSRF-Token``; any instance can check it without shared state.
* The password check always hashes the secret (bcrypt or plaintext digest) whether or not the
  key was right, so the time taken says nothing about which half was wrong.
* Five failures from one client IP lock it out for five minutes (the IP as the rate limiter
  finds it, so proxies are handled the same way).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict

from twisted.internet.interfaces import IReactorTime

#: How long a session lasts.
SESSION_TTL = 24 * 3600.0
#: Failed logins from one IP before it is locked out, and for how long.
MAX_FAILURES = 5
LOCKOUT_SECONDS = 300.0
#: IPs whose failures are remembered at most (the oldest are forgotten first).
MAX_TRACKED_IPS = 10_000

SESSION_COOKIE = b"s3orch_session"
CSRF_COOKIE = b"s3orch_csrf"


def _derive(secret: str, purpose: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), f"s3orch-ui/{purpose}".encode(), hashlib.sha256).digest()


class PasswordCheck:
    """``admin_key`` / ``admin_secret`` (plaintext, or a bcrypt hash starting with ``$2``)."""

    def __init__(self, admin_key: str, admin_secret: str) -> None:
        self._key_digest = hashlib.sha256(admin_key.encode("utf-8")).digest()
        self._bcrypt = admin_secret.startswith("$2")
        self._secret = admin_secret.encode("utf-8")
        self._secret_digest = hashlib.sha256(self._secret).digest()

    def check(self, access_key: str, secret_key: str) -> bool:
        key_ok = hmac.compare_digest(hashlib.sha256(access_key.encode("utf-8")).digest(), self._key_digest)
        given = secret_key.encode("utf-8")
        if self._bcrypt:
            import bcrypt  # only a bcrypt secret needs it

            try:
                secret_ok = bcrypt.checkpw(given[:72], self._secret)
            except ValueError:  # a malformed hash in the config: nobody logs in
                secret_ok = False
        else:
            secret_ok = hmac.compare_digest(hashlib.sha256(given).digest(), self._secret_digest)
        return key_ok and secret_ok and bool(self._secret)


class Sessions:
    """Signs and checks session cookies and their CSRF tokens."""

    def __init__(self, session_secret: str, clock: IReactorTime, ttl: float = SESSION_TTL) -> None:
        self._mac_key = _derive(session_secret, "session")
        self._csrf_key = _derive(session_secret, "csrf")
        self.clock = clock
        self.ttl = ttl

    def _mac(self, body: str) -> str:
        return hmac.new(self._mac_key, body.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        body = f"{int(self.clock.seconds() + self.ttl)}.{secrets.token_hex(16)}"
        return f"{body}.{self._mac(body)}"

    def valid(self, cookie: str | None) -> bool:
        if not cookie or cookie.count(".") != 2:
            return False
        expires, nonce, mac = cookie.split(".")
        if not hmac.compare_digest(self._mac(f"{expires}.{nonce}"), mac):
            return False
        try:
            return float(expires) > self.clock.seconds()
        except ValueError:
            return False

    def csrf_token(self, cookie: str) -> str:
        return hmac.new(self._csrf_key, cookie.encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, cookie: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(cookie), token or "")


class LoginThrottle:
    """Failed logins per client IP; locked out after :data:`MAX_FAILURES` for a while."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        #: ip -> (failures, locked until)
        self._ips: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def locked(self, ip: str) -> bool:
        entry = self._ips.get(ip)
        if entry is None:
            return False
        failures, until = entry
        if until and until <= self.clock.seconds():
            del self._ips[ip]  # the lockout is over: a fresh count
            return False
        return failures >= MAX_FAILURES

    def failed(self, ip: str) -> None:
        failures, _ = self._ips.pop(ip, (0, 0.0))
        failures += 1
        until = self.clock.seconds() + LOCKOUT_SECONDS if failures >= MAX_FAILURES else 0.0
        self._ips[ip] = (failures, until)
        while len(self._ips) > MAX_TRACKED_IPS:
            self._ips.popitem(last=False)

    def succeeded(self, ip: str) -> None:
        self._ips.pop(ip, None)

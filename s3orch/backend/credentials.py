"""Where a backend's signing keys come from: config.yaml, or the AWS default chain.

``credential_source: static`` (the default) signs with the backend's ``access_key_id`` and
``secret_access_key``. ``credential_source: default_chain`` resolves keys at start-up the way the
AWS SDK for Go v2 (the SDK of s3-orchestrator, the Go product s3orch re-creates) does, for the
sources this build supports:

1. ``AWS_PROFILE``, when set, names the profile to use, and only that profile is tried;
2. the environment: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``);
3. a web identity: ``AWS_WEB_IDENTITY_TOKEN_FILE`` with ``AWS_ROLE_ARN`` (and optionally
   ``AWS_ROLE_SESSION_NAME``), exchanged for temporary keys with STS AssumeRoleWithWebIdentity
   (how EKS service accounts and other OIDC workloads get a role);
4. the ``default`` profile of the shared files: ``AWS_SHARED_CREDENTIALS_FILE`` (default
   ``~/.aws/credentials``) and ``AWS_CONFIG_FILE`` (default ``~/.aws/config``), with static keys
   (``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``) or a web identity
   (``role_arn`` with ``web_identity_token_file``).

Not supported (the start-up error says so when a profile asks for them): EC2/ECS instance roles
(IMDS, container credentials), SSO, ``credential_process`` and ``source_profile`` role chaining.

Keys from the environment and the files are read once, at start-up. Web-identity keys are
temporary: they are fetched again before they expire, in the background (the token file is read
again each time, since it is rotated), and a request never signs with keys that are about to
expire. The STS exchange is one small HTTP request on the reactor; it never blocks it.
"""

from __future__ import annotations

import configparser
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import treq
from defusedxml import ElementTree
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = [
    "CredentialError",
    "CredentialProvider",
    "CredentialRefresher",
    "Credentials",
    "CredentialsUnavailable",
    "RefreshingCredentials",
    "StaticCredentials",
    "WebIdentity",
    "resolve_default_chain",
]

#: Temporary keys are refreshed this long before they expire (at most half their lifetime).
REFRESH_BEFORE = 15 * 60.0
#: Keys closer than this to their expiry are not used: a request waits for new ones instead.
MANDATORY_WINDOW = 60.0
#: After a failed refresh, the next try (and, until then, requests fail at once).
RETRY_AFTER = 30.0
#: STS answers are a few KiB; anything longer is not STS.
STS_BODY_LIMIT = 256 * 1024

_UNSUPPORTED_PROFILE_KEYS = {
    "source_profile": "role chaining (source_profile)",
    "credential_source": "credential_source",
    "credential_process": "credential_process",
    "sso_session": "SSO",
    "sso_start_url": "SSO",
}


class CredentialError(Exception):
    """The chain found no credentials, or a source it found is unusable (a start-up error)."""


class CredentialsUnavailable(Exception):
    """No valid credentials right now (a refresh failed and the old keys have expired)."""


@dataclass(frozen=True)
class Credentials:
    """A key pair, with the session token and expiry of temporary keys."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(default="", repr=False)
    #: Epoch seconds; None for keys that do not expire.
    expiration: float | None = None


class CredentialProvider(Protocol):
    """What the backend client asks for before signing each request."""

    #: Where the keys come from, for logs ("environment variables", "web identity ...").
    source: str

    async def get(self) -> Credentials:
        """Keys to sign with now; raise CredentialsUnavailable when there are none."""
        ...

    def start(self) -> None:
        """Begin fetching, if the keys are fetched (called once the reactor runs)."""

    def close(self) -> None:
        """Stop any background refresh."""


class StaticCredentials:
    """Keys that never change: from config.yaml, the environment or a shared file."""

    def __init__(self, credentials: Credentials, source: str) -> None:
        self._credentials = credentials
        self.source = source

    async def get(self) -> Credentials:
        return self._credentials

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class RefreshingCredentials:
    """Temporary keys from ``fetch``, fetched again before they expire.

    One fetch at a time: concurrent requests that need keys wait for the same one. A failed
    fetch is logged and retried after ``RETRY_AFTER`` seconds; meanwhile, keys that are still
    valid keep being used, and without them requests fail at once (``CredentialsUnavailable``)
    instead of each asking STS again.
    """

    log = Logger(namespace="s3orch.backend.credentials")

    def __init__(
        self, fetch: Callable[[], Awaitable[Credentials]], clock: IReactorTime, source: str
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self.source = source
        self._current: Credentials | None = None
        self._waiters: list[Deferred[Credentials]] = []
        self._fetching = False
        self._failed_at: float | None = None
        self._error = ""
        self._timer: IDelayedCall | None = None
        self._closed = False

    def _usable(self, credentials: Credentials | None) -> bool:
        if credentials is None:
            return False
        if credentials.expiration is None:
            return True
        return self._clock.seconds() < credentials.expiration - MANDATORY_WINDOW

    async def get(self) -> Credentials:
        if self._usable(self._current):
            assert self._current is not None
            return self._current
        if not self._fetching and self._failed_at is not None:
            if self._clock.seconds() - self._failed_at < RETRY_AFTER:
                raise CredentialsUnavailable(f"no valid credentials ({self.source}): {self._error}")
        if self._closed:
            raise CredentialsUnavailable(f"no valid credentials ({self.source}): closed")
        waiter: Deferred[Credentials] = Deferred()
        self._waiters.append(waiter)
        self._begin()
        return await waiter

    def start(self) -> None:
        if self._current is None:
            self._begin()

    def close(self) -> None:
        self._closed = True
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _schedule(self, delay: float) -> None:
        self._cancel_timer()
        if not self._closed:
            self._timer = self._clock.callLater(delay, self._begin)

    def _begin(self) -> None:
        if self._fetching or self._closed:
            return
        self._fetching = True
        self._cancel_timer()
        Deferred.fromCoroutine(self._refresh()).addErrback(
            lambda failure: self.log.failure("credential refresh failed", failure, component="backend")
        )

    async def _refresh(self) -> None:
        try:
            credentials = await self._fetch()
        except Exception as exc:  # a refresh must never stop the refreshing
            self._fetching = False
            self._failed_at = self._clock.seconds()
            self._error = str(exc) or type(exc).__name__
            self.log.error(
                "cannot refresh backend credentials ({source}): {error}; retrying in {retry}s",
                component="backend", source=self.source, error=self._error, retry=RETRY_AFTER,
            )
            self._schedule(RETRY_AFTER)
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.errback(CredentialsUnavailable(f"no valid credentials ({self.source}): {self._error}"))
            return
        self._fetching = False
        self._failed_at = None
        self._current = credentials
        if credentials.expiration is not None:
            lifetime = credentials.expiration - self._clock.seconds()
            self._schedule(max(1.0, lifetime - min(REFRESH_BEFORE, lifetime / 2)))
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(credentials)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _find(element: Any, name: str) -> Any:
    for child in element.iter():
        if _local(child.tag) == name:
            return child
    return None


def _text(element: Any, name: str) -> str:
    found = _find(element, name)
    return (found.text or "").strip() if found is not None else ""


def parse_sts_credentials(body: bytes) -> Credentials:
    """The ``<Credentials>`` of an STS AssumeRole* answer."""
    try:
        root = ElementTree.fromstring(body)
    except Exception as exc:  # defusedxml raises several types for hostile or broken XML
        raise CredentialError(f"STS answered something that is not XML ({exc})") from None
    found = _find(root, "Credentials")
    if found is None:
        raise CredentialError("STS answered without <Credentials>")
    key, secret = _text(found, "AccessKeyId"), _text(found, "SecretAccessKey")
    token, expiry = _text(found, "SessionToken"), _text(found, "Expiration")
    if not (key and secret and token and expiry):
        raise CredentialError("STS answered incomplete <Credentials>")
    try:
        expiration = datetime.fromisoformat(expiry.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise CredentialError(f"STS answered an unreadable Expiration {expiry!r}") from None
    return Credentials(key, secret, token, expiration)


class WebIdentity:
    """One STS AssumeRoleWithWebIdentity exchange per call: token file in, temporary keys out.

    The call is not signed (the token is the proof), so it needs no other credentials.
    """

    def __init__(
        self,
        *,
        role_arn: str,
        token_file: str,
        session_name: str,
        endpoint: str,
        reactor: Any,
        timeout: float,
        http: Any = None,
    ) -> None:
        self.role_arn = role_arn
        self.token_file = token_file
        self.session_name = session_name
        self.endpoint = endpoint
        self._reactor = reactor
        self._timeout = timeout
        self._http = http

    def _client(self) -> Any:
        if self._http is None:
            from twisted.web.client import Agent

            self._http = treq.client.HTTPClient(Agent(self._reactor, connectTimeout=self._timeout))
        return self._http

    async def __call__(self) -> Credentials:
        # A few hundred bytes from a local (usually in-memory) file: read in place.
        try:
            token = Path(self.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialError(f"cannot read web identity token file {self.token_file}: {exc}") from None
        body = urlencode(
            {
                "Action": "AssumeRoleWithWebIdentity",
                "Version": "2011-06-15",
                "RoleArn": self.role_arn,
                "RoleSessionName": self.session_name,
                "WebIdentityToken": token,
            }
        ).encode("ascii")
        try:
            response = await self._client().post(
                self.endpoint,
                data=body,
                headers={"Content-Type": ["application/x-www-form-urlencoded; charset=utf-8"]},
                allow_redirects=False,
                timeout=self._timeout,
                reactor=self._reactor,
            )
            chunks: list[bytes] = []
            size = [0]

            def collect(data: bytes) -> None:
                size[0] += len(data)
                if size[0] > STS_BODY_LIMIT:
                    raise CredentialError(f"STS answer longer than {STS_BODY_LIMIT} bytes")
                chunks.append(data)

            await treq.collect(response, collect)
        except CredentialError:
            raise
        except Exception as exc:
            raise CredentialError(f"STS {self.endpoint} unreachable: {type(exc).__name__}: {exc}") from None
        answer = b"".join(chunks)
        if response.code != 200:
            code, message = _text_of(answer, "Code"), _text_of(answer, "Message")
            raise CredentialError(
                f"STS AssumeRoleWithWebIdentity for {self.role_arn} refused: {response.code} {code} {message}".strip()
            )
        return parse_sts_credentials(answer)


def _text_of(body: bytes, name: str) -> str:
    try:
        return _text(ElementTree.fromstring(body), name)
    except Exception:
        return ""


# --- the chain ---------------------------------------------------------------------------------


def _read_ini(path: Path) -> configparser.RawConfigParser:
    """A shared AWS file (missing: empty). Raw: secrets may contain '%'."""
    parser = configparser.RawConfigParser(strict=False)
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise CredentialError(f"cannot read {path}: {exc}") from None
    return parser


@dataclass(frozen=True)
class _SharedFiles:
    credentials_path: Path
    config_path: Path

    def profile(self, name: str) -> dict[str, str] | None:
        """The profile's keys, the credentials file winning over the config file; None if absent."""
        found = False
        merged: dict[str, str] = {}
        config = _read_ini(self.config_path)
        section = "default" if name == "default" else f"profile {name}"
        for candidate in (section, f"profile {name}"):
            if config.has_section(candidate):
                merged.update(config.items(candidate))
                found = True
                break
        credentials = _read_ini(self.credentials_path)
        if credentials.has_section(name):
            merged.update(credentials.items(name))
            found = True
        return merged if found else None

    def describe(self) -> str:
        return f"{self.credentials_path} and {self.config_path}"


def _sts_endpoint(env: Mapping[str, str], region: str) -> str:
    """AWS_ENDPOINT_URL_STS, then AWS_ENDPOINT_URL, then the regional (or global) endpoint."""
    explicit = env.get("AWS_ENDPOINT_URL_STS") or env.get("AWS_ENDPOINT_URL")
    if explicit:
        return explicit.rstrip("/") + "/"
    if region:
        return f"https://sts.{region}.amazonaws.com/"
    return "https://sts.amazonaws.com/"


def _web_identity(
    *,
    role_arn: str,
    token_file: str,
    session_name: str,
    region: str,
    env: Mapping[str, str],
    reactor: Any,
    timeout: float,
    origin: str,
) -> RefreshingCredentials:
    if not role_arn:
        raise CredentialError(f"{origin} names a web identity token file but no role ARN")
    path = Path(os.path.expanduser(token_file))
    if not os.access(path, os.R_OK):
        raise CredentialError(f"{origin}: web identity token file {path} is missing or unreadable")
    name = session_name or f"s3orch-{int(time.time())}"
    fetch = WebIdentity(
        role_arn=role_arn,
        token_file=str(path),
        session_name=name,
        endpoint=_sts_endpoint(env, region),
        reactor=reactor,
        timeout=timeout,
    )
    return RefreshingCredentials(fetch, reactor, f"web identity ({role_arn}, from {origin})")


def _from_profile(
    name: str,
    files: _SharedFiles,
    env: Mapping[str, str],
    reactor: Any,
    timeout: float,
    *,
    required: bool,
) -> CredentialProvider | None:
    values = files.profile(name)
    origin = f"profile {name!r} of {files.describe()}"
    if values is None:
        if required:
            raise CredentialError(f"AWS_PROFILE names profile {name!r}, which is in neither {files.describe()}")
        return None
    key, secret = values.get("aws_access_key_id", ""), values.get("aws_secret_access_key", "")
    if key and secret:
        credentials = Credentials(key, secret, values.get("aws_session_token", ""))
        return StaticCredentials(credentials, origin)
    if values.get("web_identity_token_file"):
        return _web_identity(
            role_arn=values.get("role_arn", ""),
            token_file=values["web_identity_token_file"],
            session_name=values.get("role_session_name", "") or env.get("AWS_ROLE_SESSION_NAME", ""),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or values.get("region", ""),
            env=env,
            reactor=reactor,
            timeout=timeout,
            origin=origin,
        )
    unsupported = sorted({label for key_name, label in _UNSUPPORTED_PROFILE_KEYS.items() if key_name in values})
    if unsupported:
        raise CredentialError(f"{origin} uses {', '.join(unsupported)}, which this build of s3orch does not support")
    if values.get("role_arn"):
        raise CredentialError(f"{origin} has role_arn without web_identity_token_file, which this build does not support")
    if required or key or secret:
        raise CredentialError(f"{origin} has no aws_access_key_id/aws_secret_access_key pair")
    return None


def resolve_default_chain(env: Mapping[str, str], reactor: Any, *, timeout: float) -> CredentialProvider:
    """The first source of the chain that has credentials; CredentialError naming what was checked."""
    home = Path(env.get("HOME") or Path.home())
    files = _SharedFiles(
        Path(os.path.expanduser(env.get("AWS_SHARED_CREDENTIALS_FILE") or str(home / ".aws" / "credentials"))),
        Path(os.path.expanduser(env.get("AWS_CONFIG_FILE") or str(home / ".aws" / "config"))),
    )
    profile = env.get("AWS_PROFILE", "")
    if profile:
        found = _from_profile(profile, files, env, reactor, timeout, required=True)
        assert found is not None
        return found
    key, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if key and secret:
        return StaticCredentials(Credentials(key, secret, env.get("AWS_SESSION_TOKEN", "")), "environment variables")
    token_file = env.get("AWS_WEB_IDENTITY_TOKEN_FILE", "")
    if token_file:
        return _web_identity(
            role_arn=env.get("AWS_ROLE_ARN", ""),
            token_file=token_file,
            session_name=env.get("AWS_ROLE_SESSION_NAME", ""),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION", ""),
            env=env,
            reactor=reactor,
            timeout=timeout,
            origin="AWS_WEB_IDENTITY_TOKEN_FILE",
        )
    found = _from_profile("default", files, env, reactor, timeout, required=False)
    if found is not None:
        return found
    raise CredentialError(
        "no AWS credentials found: checked AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
        f"AWS_WEB_IDENTITY_TOKEN_FILE and profile 'default' of {files.describe()} "
        "(EC2/ECS instance roles, SSO and credential_process are not supported by this build)"
    )


class CredentialRefresher(Service):
    """Starts fetching temporary keys with the gateway and stops refreshing them with it."""

    log = Logger(namespace="s3orch.backend.credentials")

    def __init__(self, providers: Mapping[str, CredentialProvider]) -> None:
        self.name = "backend-credentials"
        self.providers = dict(providers)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # Twisted's Service is unannotated
        for backend, provider in self.providers.items():
            self.log.info(
                "backend {backend} signs with credentials from {source}",
                component="backend", backend=backend, source=provider.source,
            )
        for provider in {id(p): p for p in self.providers.values()}.values():
            provider.start()

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]  # Twisted's Service is unannotated
        for provider in self.providers.values():
            provider.close()

"""credential_source: default_chain: which source wins, temporary keys refreshed before expiry, signing."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.web.resource import Resource
from twisted.web.server import Request

from s3orch.backend.credentials import (
    MANDATORY_WINDOW,
    RETRY_AFTER,
    CredentialError,
    CredentialRefresher,
    Credentials,
    CredentialsUnavailable,
    RefreshingCredentials,
    StaticCredentials,
    WebIdentity,
    parse_sts_credentials,
    resolve_default_chain,
)
from s3orch.backend.interface import BackendUnavailable
from s3orch.backend.s3 import S3Backend
from s3orch.config import BackendConfig
from s3orch.s3.sigv4 import UNSIGNED_PAYLOAD


def _result(coroutine: Any) -> Any:
    """The value of a coroutine that finishes without waiting (or the exception it raised)."""
    d = Deferred.fromCoroutine(coroutine)
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "did not finish synchronously"
    if isinstance(results[0], Exception) or hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


# --- the chain --------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / ".aws").mkdir()
    return tmp_path


def _chain(env: dict[str, str], home: Path) -> Any:
    return resolve_default_chain({"HOME": str(home), **env}, MemoryReactorClock(), timeout=30.0)


def _keys(provider: Any) -> tuple[str, str, str]:
    creds = _result(provider.get())
    return creds.access_key_id, creds.secret_access_key, creds.session_token


def _token_file(home: Path) -> str:
    path = home / "token"
    path.write_text("eyJ.token.sig\n")
    return str(path)


def test_environment_keys_come_first(home: Path) -> None:
    (home / ".aws" / "credentials").write_text("[default]\naws_access_key_id = FILE\naws_secret_access_key = f\n")
    provider = _chain(
        {"AWS_ACCESS_KEY_ID": "ENV", "AWS_SECRET_ACCESS_KEY": "e", "AWS_SESSION_TOKEN": "tok",
         "AWS_WEB_IDENTITY_TOKEN_FILE": _token_file(home), "AWS_ROLE_ARN": "arn:aws:iam::1:role/r"},
        home,
    )
    assert isinstance(provider, StaticCredentials)
    assert provider.source == "environment variables"
    assert _keys(provider) == ("ENV", "e", "tok")


def test_an_explicit_aws_profile_wins_over_the_environment(home: Path) -> None:
    (home / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = DEF\naws_secret_access_key = d\n"
        "[work]\naws_access_key_id = WORK\naws_secret_access_key = w%1\n"
    )
    provider = _chain({"AWS_PROFILE": "work", "AWS_ACCESS_KEY_ID": "ENV", "AWS_SECRET_ACCESS_KEY": "e"}, home)
    assert _keys(provider) == ("WORK", "w%1", "")  # no interpolation of '%'
    assert "profile 'work'" in provider.source


def test_web_identity_comes_before_the_default_profile(home: Path) -> None:
    (home / ".aws" / "credentials").write_text("[default]\naws_access_key_id = DEF\naws_secret_access_key = d\n")
    provider = _chain(
        {"AWS_WEB_IDENTITY_TOKEN_FILE": _token_file(home), "AWS_ROLE_ARN": "arn:aws:iam::1:role/r",
         "AWS_REGION": "eu-west-1"},
        home,
    )
    assert isinstance(provider, RefreshingCredentials)
    assert provider.source == "web identity (arn:aws:iam::1:role/r, from AWS_WEB_IDENTITY_TOKEN_FILE)"
    fetch = provider._fetch
    assert isinstance(fetch, WebIdentity)
    assert fetch.endpoint == "https://sts.eu-west-1.amazonaws.com/"
    assert fetch.session_name.startswith("s3orch-")


def test_the_sts_endpoint_can_be_overridden_like_the_sdks_do(home: Path) -> None:
    env = {"AWS_WEB_IDENTITY_TOKEN_FILE": _token_file(home), "AWS_ROLE_ARN": "arn:aws:iam::1:role/r",
           "AWS_ROLE_SESSION_NAME": "gw-1"}
    assert _chain(env, home)._fetch.endpoint == "https://sts.amazonaws.com/"
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:5000"
    assert _chain(env, home)._fetch.endpoint == "http://127.0.0.1:5000/"
    env["AWS_ENDPOINT_URL_STS"] = "http://127.0.0.1:6000/"
    fetch = _chain(env, home)._fetch
    assert (fetch.endpoint, fetch.session_name) == ("http://127.0.0.1:6000/", "gw-1")


def test_the_default_profile_of_the_credentials_file_wins_over_the_config_file(home: Path) -> None:
    (home / ".aws" / "config").write_text("[default]\naws_access_key_id = CONF\naws_secret_access_key = c\n")
    assert _keys(_chain({}, home)) == ("CONF", "c", "")
    (home / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = CRED\naws_secret_access_key = s\naws_session_token = t\n"
    )
    assert _keys(_chain({}, home)) == ("CRED", "s", "t")


def test_file_locations_and_named_profiles_follow_the_environment(home: Path) -> None:
    config = home / "elsewhere.ini"
    config.write_text("[profile ci]\naws_access_key_id = CI\naws_secret_access_key = c\n")
    env = {"AWS_CONFIG_FILE": str(config), "AWS_SHARED_CREDENTIALS_FILE": str(home / "none"), "AWS_PROFILE": "ci"}
    assert _keys(_chain(env, home)) == ("CI", "c", "")


def test_a_profile_may_name_a_web_identity(home: Path) -> None:
    (home / ".aws" / "config").write_text(
        f"[default]\nrole_arn = arn:aws:iam::1:role/p\nweb_identity_token_file = {_token_file(home)}\nregion = ap-south-1\n"
    )
    provider = _chain({}, home)
    assert isinstance(provider, RefreshingCredentials)
    assert provider._fetch.role_arn == "arn:aws:iam::1:role/p"
    assert provider._fetch.endpoint == "https://sts.ap-south-1.amazonaws.com/"


@pytest.mark.parametrize(
    ("env", "files", "message"),
    [
        ({}, {}, "no AWS credentials found: checked AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                 "AWS_WEB_IDENTITY_TOKEN_FILE and profile 'default' of "),
        ({"AWS_PROFILE": "gone"}, {}, "AWS_PROFILE names profile 'gone', which is in neither "),
        ({"AWS_WEB_IDENTITY_TOKEN_FILE": "/nonexistent/token", "AWS_ROLE_ARN": "arn:r"}, {},
         "web identity token file /nonexistent/token is missing or unreadable"),
        ({"AWS_WEB_IDENTITY_TOKEN_FILE": "TOKEN"}, {}, "names a web identity token file but no role ARN"),
        ({}, {"config": "[default]\nsso_session = corp\nsso_start_url = https://x\n"}, "uses SSO, which this build"),
        ({}, {"config": "[default]\ncredential_process = /bin/creds\n"}, "uses credential_process"),
        ({}, {"config": "[default]\nrole_arn = arn:r\nsource_profile = base\n"}, "uses role chaining (source_profile)"),
        ({}, {"credentials": "[default]\naws_access_key_id = ONLY\n"}, "has no aws_access_key_id/aws_secret_access_key pair"),
        ({}, {"credentials": "[default\nbroken"}, "cannot read "),
    ],
)
def test_nothing_usable_is_a_clear_start_up_error(
    home: Path, env: dict[str, str], files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        (home / ".aws" / name).write_text(text)
    env = {k: (_token_file(home) if v == "TOKEN" else v) for k, v in env.items()}
    with pytest.raises(CredentialError) as info:
        _chain(env, home)
    assert message in str(info.value)


def test_a_partial_environment_is_skipped_as_the_sdk_does(home: Path) -> None:
    (home / ".aws" / "credentials").write_text("[default]\naws_access_key_id = FILE\naws_secret_access_key = f\n")
    assert _keys(_chain({"AWS_ACCESS_KEY_ID": "ENV"}, home)) == ("FILE", "f", "")


# --- refreshing temporary keys ------------------------------------------------------------------


class Fetcher:
    """Each call returns a Deferred the test fires."""

    def __init__(self) -> None:
        self.calls: list[Deferred[Credentials]] = []

    def __call__(self) -> Deferred[Credentials]:
        d: Deferred[Credentials] = Deferred()
        self.calls.append(d)
        return d


def _refreshing() -> tuple[RefreshingCredentials, Fetcher, Clock]:
    clock = Clock()
    clock.advance(1_000_000)
    fetcher = Fetcher()
    return RefreshingCredentials(fetcher, clock, "test"), fetcher, clock


def _creds(name: str, expires: float) -> Credentials:
    return Credentials(name, "secret-" + name, "token-" + name, expires)


def test_concurrent_requests_share_one_fetch() -> None:
    provider, fetcher, clock = _refreshing()
    first, second = Deferred.fromCoroutine(provider.get()), Deferred.fromCoroutine(provider.get())
    assert len(fetcher.calls) == 1
    fetcher.calls[0].callback(_creds("A", clock.seconds() + 3600))
    assert [first.result.access_key_id, second.result.access_key_id] == ["A", "A"]
    assert _result(provider.get()).access_key_id == "A"  # no new fetch while valid
    assert len(fetcher.calls) == 1


def test_keys_are_refreshed_in_the_background_before_they_expire() -> None:
    provider, fetcher, clock = _refreshing()
    provider.start()
    fetcher.calls[0].callback(_creds("A", clock.seconds() + 3600))
    clock.advance(3600 - 15 * 60 - 1)  # refreshed 15 minutes before expiry
    assert len(fetcher.calls) == 1
    clock.advance(1)
    assert len(fetcher.calls) == 2
    assert _result(provider.get()).access_key_id == "A"  # still valid meanwhile
    fetcher.calls[1].callback(_creds("B", clock.seconds() + 900))
    assert _result(provider.get()).access_key_id == "B"
    clock.advance(450)  # short-lived keys: refreshed at half their lifetime
    assert len(fetcher.calls) == 3


def test_keys_about_to_expire_are_never_used() -> None:
    provider, fetcher, clock = _refreshing()
    provider.start()
    fetcher.calls[0].callback(_creds("A", clock.seconds() + 3600))
    clock.advance(2700)  # the background refresh starts, and STS is slow to answer
    assert len(fetcher.calls) == 2
    assert _result(provider.get()).access_key_id == "A"
    clock.advance(900 - MANDATORY_WINDOW)
    waiting = Deferred.fromCoroutine(provider.get())
    assert not waiting.called and len(fetcher.calls) == 2  # waits for the refresh under way
    fetcher.calls[1].callback(_creds("B", clock.seconds() + 3600))
    assert waiting.result.access_key_id == "B"


def test_a_failed_refresh_keeps_valid_keys_and_retries() -> None:
    provider, fetcher, clock = _refreshing()
    provider.start()
    fetcher.calls[0].callback(_creds("A", clock.seconds() + 3600))
    clock.advance(2700)
    fetcher.calls[1].errback(CredentialError("STS refused"))
    assert _result(provider.get()).access_key_id == "A"
    clock.advance(RETRY_AFTER)
    assert len(fetcher.calls) == 3
    fetcher.calls[2].callback(_creds("B", clock.seconds() + 3600))
    assert _result(provider.get()).access_key_id == "B"


def test_without_valid_keys_requests_fail_fast_until_the_retry() -> None:
    provider, fetcher, clock = _refreshing()
    waiting = Deferred.fromCoroutine(provider.get())
    fetcher.calls[0].errback(CredentialError("STS refused: AccessDenied"))
    failure = waiting.result
    waiting.addErrback(lambda _: None)
    assert isinstance(failure.value, CredentialsUnavailable) and "AccessDenied" in str(failure.value)
    with pytest.raises(CredentialsUnavailable):
        _result(provider.get())  # no new STS call per request
    assert len(fetcher.calls) == 1
    clock.advance(RETRY_AFTER)
    assert len(fetcher.calls) == 2
    fetcher.calls[1].callback(_creds("A", clock.seconds() + 3600))
    assert _result(provider.get()).access_key_id == "A"


def test_close_stops_the_refreshing() -> None:
    provider, fetcher, clock = _refreshing()
    refresher = CredentialRefresher({"b1": provider, "b2": provider})
    refresher.startService()
    assert len(fetcher.calls) == 1  # one fetch for the backends sharing the chain
    fetcher.calls[0].callback(_creds("A", clock.seconds() + 3600))
    refresher.stopService()
    clock.advance(7200)
    assert len(fetcher.calls) == 1 and clock.getDelayedCalls() == []


# --- the STS exchange -------------------------------------------------------------------------

STS_OK = b"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIAEXAMPLE</AccessKeyId>
<SecretAccessKey>secret</SecretAccessKey><SessionToken>session</SessionToken>
<Expiration>2030-01-02T03:04:05.123456Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"""


class FakeSTS(Resource):
    isLeaf = True

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__()
        self.status, self.body = status, body
        self.forms: list[dict[str, list[str]]] = []

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        self.forms.append(urllib.parse.parse_qs(request.content.read().decode()))
        request.setResponseCode(self.status)
        return self.body


def _web_identity(tmp_path: Path, sts: FakeSTS) -> WebIdentity:
    token = tmp_path / "token"
    token.write_text("the-token\n")
    return WebIdentity(role_arn="arn:aws:iam::1:role/r", token_file=str(token), session_name="s",
                       endpoint="http://sts.test/", reactor=Clock(), timeout=30.0, http=StubTreq(sts))


def test_web_identity_posts_the_token_and_reads_the_temporary_keys(tmp_path: Path) -> None:
    sts = FakeSTS(200, STS_OK)
    creds = _result(_web_identity(tmp_path, sts)())
    assert creds == Credentials("ASIAEXAMPLE", "secret", "session", 1893553445.123456)
    assert sts.forms == [{
        "Action": ["AssumeRoleWithWebIdentity"], "Version": ["2011-06-15"],
        "RoleArn": ["arn:aws:iam::1:role/r"], "RoleSessionName": ["s"], "WebIdentityToken": ["the-token"],
    }]


def test_a_refusal_by_sts_names_its_code(tmp_path: Path) -> None:
    sts = FakeSTS(403, b"<ErrorResponse><Error><Code>AccessDenied</Code><Message>Not authorized</Message></Error></ErrorResponse>")
    with pytest.raises(CredentialError, match="403 AccessDenied Not authorized"):
        _result(_web_identity(tmp_path, sts)())


@pytest.mark.parametrize(
    "body", [b"not xml", b"<x/>", STS_OK.replace(b"<SessionToken>session</SessionToken>", b""),
             b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>']
)
def test_answers_that_are_not_sts_credentials_are_errors(body: bytes) -> None:
    with pytest.raises(CredentialError):
        parse_sts_credentials(body)


def test_an_oversized_sts_answer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match="longer than"):
        _result(_web_identity(tmp_path, FakeSTS(200, b"x" * (300 * 1024)))())


# --- signing ----------------------------------------------------------------------------------


def _backend(credentials: Any = None) -> S3Backend:
    config = BackendConfig(name="b", endpoint="http://127.0.0.1:9", bucket="data", access_key_id="AK",
                           secret_access_key="SK", disable_checksum=False, strip_sdk_headers=False)
    return S3Backend(config, MemoryReactorClock(), timeout=5, credentials=credentials)


def test_a_session_token_is_sent_and_signed() -> None:
    backend = _backend()
    creds = Credentials("ASIA", "secret", "the-session-token", None)
    headers = backend._headers("PUT", backend.object_url("k"), {"content-type": "a/b"}, UNSIGNED_PAYLOAD, creds)
    assert headers.getRawHeaders(b"x-amz-security-token") == [b"the-session-token"]
    authorization = headers.getRawHeaders(b"authorization")[0].decode()
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=ASIA/")
    signed = re.search(r"SignedHeaders=([^,]+)", authorization)
    assert signed is not None and "x-amz-security-token" in signed.group(1).split(";")


def test_backend_requests_carry_no_sdk_or_flexible_checksum_headers() -> None:
    # Why disable_checksum and strip_sdk_headers (for GCS) need no code: there is nothing to strip.
    backend = _backend()
    creds = Credentials("AK", "SK")
    headers = backend._headers("PUT", backend.object_url("k"), {"content-type": "a/b"}, UNSIGNED_PAYLOAD, creds)
    names = {name.decode().lower() for name, _ in headers.getAllRawHeaders()}
    assert names == {"host", "content-type", "authorization", "x-amz-date", "x-amz-content-sha256"}


def test_static_keys_sign_unless_a_provider_is_given() -> None:
    assert _result(_backend().credentials.get()) == Credentials("AK", "SK")
    assert _backend().credentials.source == "config.yaml"


def test_no_valid_credentials_makes_the_backend_unavailable_without_a_request() -> None:
    class Down:
        source = "test"

        async def get(self) -> Credentials:
            raise CredentialsUnavailable("STS down")

    backend = _backend(Down())
    with pytest.raises(BackendUnavailable, match="STS down"):
        _result(backend.head_object("k"))

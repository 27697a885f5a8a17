"""Config loading: defaults, ${ENV} expansion, unknown keys, every validation rule, units, secrets."""

from __future__ import annotations

import base64
import copy
import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from s3orch.config import (
    BackendConfig,
    Config,
    ConfigError,
    ConfigIssue,
    DatabaseConfig,
    GiB,
    KiB,
    LifecycleRule,
    MiB,
    ServerConfig,
    TiB,
    expand_env,
    format_duration,
    format_size,
    load_config,
    load_config_from_string,
    parse_duration,
    parse_size,
)

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]
KEY32 = base64.b64encode(b"k" * 32).decode()

BASE: dict[str, Any] = {
    "buckets": [
        {
            "name": "photos",
            "credentials": [
                {"access_key_id": "PHOTOSKEY", "secret_access_key": "photossecret"}
            ],
        }
    ],
    "backends": [
        {
            "name": "b1",
            "endpoint": "http://127.0.0.1:9100",
            "bucket": "data",
            "access_key_id": "k1",
            "secret_access_key": "s1",
            "quota_bytes": 1000,
        }
    ],
}


def backend(name: str, **overrides: Any) -> dict[str, Any]:
    """A valid limited backend entry."""
    entry: dict[str, Any] = {
        "name": name,
        "endpoint": "http://127.0.0.1:9100",
        "bucket": "data",
        "access_key_id": f"key-{name}",
        "secret_access_key": f"secret-{name}",
        "quota_bytes": 1000,
    }
    entry.update(overrides)
    return entry


def bucket(name: str, *credentials: dict[str, str], **overrides: Any) -> dict[str, Any]:
    """A bucket entry; by default with one key pair derived from the name."""
    creds = list(credentials) or [
        {"access_key_id": f"AK-{name}", "secret_access_key": "sk"}
    ]
    return {"name": name, "credentials": creds, **overrides}


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; lists and scalars in ``overrides`` replace."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def load(
    overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None
) -> Config:
    return load_config_from_string(
        yaml.safe_dump(merge(BASE, overrides or {})), env or {}
    )


def issues(overrides: dict[str, Any]) -> list[str]:
    """Every error message for BASE + overrides, as "path: message" strings."""
    with pytest.raises(ConfigError) as info:
        load(overrides)
    return [str(issue) for issue in info.value.errors]


# --- defaults ---------------------------------------------------------------------------------


def test_minimal_config_gets_the_documented_default_of_every_section() -> None:
    cfg = load()
    expected: dict[str, dict[str, Any]] = {
        "server": {
            "listen_addr": "0.0.0.0:9000",
            "max_object_size": 5 * 1024**3,
            "max_concurrent_requests": 1000,
            "max_concurrent_reads": 0,
            "max_concurrent_writes": 0,
            "load_shed_threshold": 0.0,
            "admission_wait": 0.0,
            "backend_timeout": 30.0,
            "read_header_timeout": 10.0,
            "read_timeout": 300.0,
            "write_timeout": 300.0,
            "idle_timeout": 120.0,
            "shutdown_delay": 0.0,
            "tls": None,
            "log_level": "info",
            "log_format": "json",
            "spool_dir": "",
            "spool_memory_limit": 1024 * 1024,
            "stream_through_min_size": 8 * 1024 * 1024,
            "virtual_host_suffix": "",
            "delete_concurrency": 16,
            "allow_sigv2": True,
            "regions": (),
            "max_concurrent_per_credential": 0,
            "processes": "1",
            "backend_http_client": "lean",
        },
        "database": {
            "driver": "sqlite",
            "path": "s3-orchestrator.db",
            "host": "",
            "port": 5432,
            "database": "",
            "user": "",
            "password": "",
            "ssl_mode": "require",
            "max_conns": 50,
            "min_conns": 10,
            "max_conn_lifetime": 300.0,
            "dsn": "",
            "statement_timeout": 0.0,
        },
        "telemetry": {
            "metrics": {"enabled": False, "path": "/metrics", "listen": ""},
            "tracing": {
                "enabled": False,
                "endpoint": "",
                "insecure": False,
                "sample_rate": 1.0,
                "protocol": "grpc",
            },
        },
        "circuit_breaker": {
            "failure_threshold": 3,
            "open_timeout": 15.0,
            "cache_ttl": 60.0,
            "parallel_broadcast": False,
            "degraded_broadcast_parallelism": 0,
            "journal_path": "",  # ours
            "journal_refresh": 2.0,  # ours
        },
        "backend_circuit_breaker": {
            "enabled": False,
            "failure_threshold": 5,
            "open_timeout": 300.0,
        },
        "rebalance": {
            "enabled": False,
            "strategy": "pack",
            "interval": 6 * 3600.0,
            "batch_size": 100,
            "threshold": 0.1,
            "concurrency": 5,
        },
        "replication": {
            "factor": 1,
            "worker_interval": 300.0,
            "batch_size": 50,
            "concurrency": 5,
            "unhealthy_threshold": 600.0,
            "ack": "first",
        },
        "cleanup_queue": {
            "concurrency": 10,
            "claim_grace_period": 300.0,
            "multipart_stale_timeout": 86400.0,
        },
        "rate_limit": {
            "enabled": False,
            "requests_per_sec": 100.0,
            "burst": 200,
            "cleanup_interval": 60.0,
            "cleanup_max_age": 300.0,
            "trusted_proxies": (),
            "per_credential": False,
        },
        "encryption": {
            "enabled": False,
            "master_key": "",
            "master_key_file": "",
            "vault": None,
            "previous_keys": (),
            "chunk_size": 65536,
        },
        "compression": {
            "enabled": False,
            "level": "default",
            "chunk_size": 1024 * 1024,
            "min_size": 4096,
            "min_ratio": 0.95,
        },
        "integrity": {
            "enabled": False,
            "verify_on_read": False,
            "verify_on_replicate": True,
            "scrubber_interval": 6 * 3600.0,
            "scrubber_batch_size": 100,
        },
        "ui": {
            "enabled": False,
            "path": "/ui",
            "admin_key": "",
            "admin_secret": "",
            "session_secret": "",
            "admin_token": "",
            "force_secure_cookies": False,
        },
        "usage_flush": {
            "interval": 30.0,
            "adaptive_enabled": False,
            "adaptive_threshold": 0.8,
            "fast_interval": 5.0,
        },
        "lifecycle": {"rules": (), "batch_size": 100},
        "reconcile": {"enabled": False, "interval": 86400.0, "grace_period": 3600.0},
        "cache": {
            "enabled": False,
            "max_size": 256 * 1024 * 1024,
            "max_object_size": 10 * 1024 * 1024,
            "ttl": 300.0,
        },
        "notifications": {"endpoints": ()},
        "redis": {
            "address": "",
            "password": "",
            "key_prefix": "s3orch",
            "failure_threshold": 3,
            "open_timeout": 15.0,
        },
        "write_path": {
            "pending_pattern": {
                "enabled": True,
                "reaper_tick": 60.0,
                "min_age": 300.0,
                "batch_size": 50,
            },
            "parallel_copies": {"enabled": False},
        },
    }
    for name, values in expected.items():
        assert dataclasses.asdict(getattr(cfg, name)) == values, name
    assert cfg.routing_strategy == "pack"
    assert cfg.redis.enabled is False
    assert cfg.warnings == ()


def test_backend_and_bucket_defaults() -> None:
    cfg = load()
    (b1,) = cfg.backends
    assert (b1.region, b1.credential_source, b1.force_path_style) == (
        "us-east-1",
        "static",
        False,
    )
    assert (b1.unsigned_payload, b1.disable_checksum, b1.strip_sdk_headers) == (
        None,
        False,
        False,
    )
    assert (b1.max_object_size, b1.api_request_limit, b1.egress_byte_limit) == (0, 0, 0)
    assert b1.ingress_byte_limit == 0
    assert cfg.buckets[0].max_multipart_uploads == 0
    assert cfg.buckets[0].credentials[0].token == ""


def test_empty_string_means_default_for_enumerated_keys() -> None:
    cfg = load({"routing_strategy": "", "backends": [backend("b1", region="")]})
    assert cfg.routing_strategy == "pack"
    assert cfg.backends[0].region == "us-east-1"


def test_admission_pool_is_1000_only_when_every_pool_is_zero() -> None:
    assert (
        load({"server": {"max_concurrent_requests": 0}}).server.max_concurrent_requests
        == 1000
    )
    split = load(
        {"server": {"max_concurrent_reads": 50, "max_concurrent_writes": 20}}
    ).server
    assert (split.max_concurrent_requests, split.max_concurrent_reads) == (0, 50)
    assert (
        load({"server": {"max_concurrent_requests": 7}}).server.max_concurrent_requests
        == 7
    )


@pytest.mark.parametrize("only", ["max_concurrent_reads", "max_concurrent_writes"])
def test_only_one_split_pool_is_refused_naming_it(only: str) -> None:
    # s3-orchestrator silently runs without admission control then; this build refuses.
    with pytest.raises(ConfigError) as caught:
        load({"server": {only: 50}})
    assert [issue.path for issue in caught.value.errors] == [f"server.{only}"]
    assert "need both max_concurrent_reads and max_concurrent_writes" in str(caught.value)


def test_admission_wait_loads_without_a_warning() -> None:
    cfg = load({"server": {"admission_wait": "2s"}})
    assert cfg.server.admission_wait == 2.0
    assert cfg.warnings == ()


def test_unsigned_payload_is_auto_by_scheme_unless_set() -> None:
    assert (
        BackendConfig(endpoint="https://s3.example.com").effective_unsigned_payload
        is True
    )
    assert (
        BackendConfig(endpoint="http://minio:9000").effective_unsigned_payload is False
    )
    assert (
        BackendConfig(endpoint="HTTPS://s3.example.com").effective_unsigned_payload
        is True
    )
    explicit = load(
        {"backends": [backend("b1", endpoint="https://x", unsigned_payload=False)]}
    )
    assert explicit.backends[0].effective_unsigned_payload is False
    explicit = load({"backends": [backend("b1", unsigned_payload=True)]})
    assert explicit.backends[0].effective_unsigned_payload is True


def test_database_driver_is_inferred_from_host() -> None:
    pg = load({"database": {"host": "db", "database": "s3o", "user": "u"}}).database
    assert pg.driver == "postgres"
    assert (
        load({"database": {"dsn": "postgres://u@db/s3o"}}).database.driver == "postgres"
    )
    assert load().database.driver == "sqlite"
    assert DatabaseConfig(host="db").driver == "postgres"


def test_database_name_is_an_alias_of_database() -> None:
    cfg = load({"database": {"host": "db", "name": "s3o", "user": "u"}})
    assert cfg.database.database == "s3o"
    assert issues(
        {"database": {"host": "db", "name": "a", "database": "b", "user": "u"}}
    ) == ["database.name: 'name' and 'database' are the same key; set only one"]


def test_normalisations() -> None:
    cfg = load(
        {
            "server": {"log_level": "DEBUG", "virtual_host_suffix": ".S3.Example.com"},
            "ui": {"path": "/dash/"},
            "rate_limit": {"trusted_proxies": ["10.1.2.3/8", "192.168.0.7"]},
        }
    )
    assert cfg.server.log_level == "debug"
    assert cfg.server.virtual_host_suffix == "s3.example.com"
    assert cfg.ui.path == "/dash"
    assert cfg.rate_limit.trusted_proxies == ("10.0.0.0/8", "192.168.0.7/32")


def test_empty_tls_block_means_plain_http() -> None:
    assert load({"server": {"tls": {}}}).server.tls is None
    tls = load(
        {"server": {"tls": {"cert_file": "c.pem", "key_file": "k.pem"}}}
    ).server.tls
    assert tls is not None
    assert (tls.cert_file, tls.key_file, tls.min_version) == ("c.pem", "k.pem", "1.2")


# --- ${ENV} expansion --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A}", "alpha"),
        ("$A", "alpha"),
        ("x${A}y", "xalphay"),
        ("$A_B", "under"),
        ("$A-B", "alpha-B"),
        ("${UNSET}", ""),
        ("$UNSET!", "!"),
        ("cost: 5$", "cost: 5$"),
        ("a $ b", "a $ b"),
        ("${}", ""),
        ("${A", "A"),
        ("$1x", "x"),
        ("${@}", ""),
        ("$$", ""),
        ("no dollars", "no dollars"),
    ],
)
def test_expand_env_follows_go_os_expand(text: str, expected: str) -> None:
    assert expand_env(text, {"A": "alpha", "A_B": "under"}) == expected


def test_env_variables_are_expanded_before_yaml() -> None:
    text = yaml.safe_dump(BASE).replace("photossecret", "${PHOTO_SECRET}")
    text += "server:\n  listen_addr: ${LISTEN}\n"
    cfg = load_config_from_string(
        text, {"PHOTO_SECRET": "from-env", "LISTEN": "127.0.0.1:9001"}
    )
    assert cfg.buckets[0].credentials[0].secret_access_key == "from-env"
    assert cfg.server.listen_addr == "127.0.0.1:9001"


def test_unset_env_variable_expands_to_empty_and_is_then_reported() -> None:
    text = yaml.safe_dump(BASE).replace("photossecret", "${PHOTO_SECRET}")
    with pytest.raises(ConfigError) as info:
        load_config_from_string(text, {})
    assert [str(e) for e in info.value.errors] == [
        "buckets[0].credentials[0].secret_access_key: is required with access_key_id"
    ]


def test_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3ORCH_TEST_SECRET", "proc-env")
    text = yaml.safe_dump(BASE).replace("photossecret", "$S3ORCH_TEST_SECRET")
    assert (
        load_config_from_string(text).buckets[0].credentials[0].secret_access_key
        == "proc-env"
    )


def test_expansion_is_not_recursive() -> None:
    text = yaml.safe_dump(BASE).replace("photossecret", "'${HASH}'")
    cfg = load_config_from_string(text, {"HASH": "$2a$10$abc", "2a": "no"})
    assert cfg.buckets[0].credentials[0].secret_access_key == "$2a$10$abc"


# --- YAML decoding ----------------------------------------------------------------------------


def test_scalars_decode_by_target_type_like_the_original() -> None:
    text = (
        yaml.safe_dump(BASE).replace("PHOTOSKEY", "0123").replace("photossecret", "no")
    )
    text = text.replace("'0123'", "0123").replace("'no'", "no")
    text += "server:\n  allow_sigv2: off\n  tls:\n    cert_file: c\n    key_file: k\n    min_version: 1.3\n"
    cfg = load_config_from_string(text, {})
    credential = cfg.buckets[0].credentials[0]
    assert (credential.access_key_id, credential.secret_access_key) == ("0123", "no")
    assert cfg.server.allow_sigv2 is False
    assert cfg.server.tls is not None
    assert cfg.server.tls.min_version == "1.3"


def test_null_values_keep_defaults() -> None:
    text = yaml.safe_dump(BASE) + "server:\n  listen_addr:\n  tls: ~\ncache:\n"
    cfg = load_config_from_string(text, {})
    assert cfg.server.listen_addr == "0.0.0.0:9000"
    assert cfg.server.tls is None


def test_anchor_holders_are_keys_too() -> None:
    text = """
buckets:
  - name: photos
    credentials: [{access_key_id: AK, secret_access_key: SK}]
common: &common
  endpoint: http://minio:9000
  bucket: data
  access_key_id: k
  secret_access_key: s
  quota_bytes: 1GB
backends:
  - <<: *common
    name: one
  - <<: *common
    name: two
    quota_bytes: 2GB
"""
    with pytest.raises(ConfigError) as info:
        load_config_from_string(text, {})
    # An anchor holder is still a key, so it must be a known one.
    assert [str(e) for e in info.value.errors] == ["common: unknown key"]


def test_merge_keys_merge_into_entries() -> None:
    text = """
buckets:
  - name: photos
    credentials: [{access_key_id: AK, secret_access_key: SK}]
backends:
  - &first
    name: one
    endpoint: http://minio:9000
    bucket: data
    access_key_id: k
    secret_access_key: s
    quota_bytes: 1GB
  - <<: *first
    name: two
    quota_bytes: 2GB
"""
    cfg = load_config_from_string(text, {})
    assert [(b.name, b.quota_bytes, b.endpoint) for b in cfg.backends] == [
        ("one", GiB, "http://minio:9000"),
        ("two", 2 * GiB, "http://minio:9000"),
    ]


def test_yaml_syntax_error_names_the_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_from_string("server:\n  listen_addr: [\n", {})
    (issue,) = info.value.errors
    assert issue.path == "yaml"
    assert issue.line is not None


def test_duplicate_key_is_an_error() -> None:
    text = yaml.safe_dump(BASE) + "routing_strategy: pack\nrouting_strategy: spread\n"
    with pytest.raises(ConfigError) as info:
        load_config_from_string(text, {})
    assert len(info.value.errors) == 1
    assert str(info.value.errors[0]).startswith(
        "routing_strategy: duplicate key (first set on line"
    )


def test_empty_file_reports_missing_buckets_and_backends() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_from_string("", {})
    assert [str(e) for e in info.value.errors] == [
        "buckets: at least one bucket is required",
        "backends: at least one backend is required",
    ]


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_from_string("- a\n- b\n", {})
    assert str(info.value.errors[0]) == "config: must be a mapping"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"server": {"max_concurrent_requests": "lots"}},
            "server.max_concurrent_requests: must be an integer, got 'lots'",
        ),
        (
            {"server": {"allow_sigv2": "maybe"}},
            "server.allow_sigv2: must be true or false, got 'maybe'",
        ),
        (
            {"server": {"load_shed_threshold": "high"}},
            "server.load_shed_threshold: must be a number, got 'high'",
        ),
        ({"server": []}, "server: must be a mapping"),
        (
            {"server": {"listen_addr": {"host": "x"}}},
            "server.listen_addr: must be a string",
        ),
        ({"buckets": {"name": "x"}}, "buckets: must be a list"),
        (
            {"rate_limit": {"trusted_proxies": "10.0.0.0/8"}},
            "rate_limit.trusted_proxies: must be a list",
        ),
        (
            {"cache": {"ttl": 5}},
            (
                "cache.ttl: invalid duration '5': missing unit; "
                'expected a duration such as "30s", "5m", "1h30m" or "500ms"'
            ),
        ),
        (
            {"cache": {"max_size": "lots"}},
            (
                "cache.max_size: invalid size 'lots': expected a byte count such as 4096, "
                '"10MB" or "1.5GiB" (KB, MB, GB are binary: 1 MB = 1048576 bytes)'
            ),
        ),
    ],
)
def test_wrong_types_are_reported_with_their_path(
    overrides: dict[str, Any], expected: str
) -> None:
    assert expected in issues(overrides)


def test_sizes_and_durations_in_keys() -> None:
    cfg = load(
        {
            "server": {
                "max_object_size": "1GB",
                "spool_memory_limit": "64KiB",
                "admission_wait": "100ms",
            },
            "backends": [backend("b1", quota_bytes="1.5GiB", egress_byte_limit="10GB")],
            "cache": {"max_size": "512MB", "ttl": "1h30m"},
        }
    )
    assert (cfg.server.max_object_size, cfg.server.spool_memory_limit) == (
        GiB,
        64 * KiB,
    )
    assert cfg.server.admission_wait == 0.1
    assert (cfg.backends[0].quota_bytes, cfg.backends[0].egress_byte_limit) == (
        3 * GiB // 2,
        10 * GiB,
    )
    assert (cfg.cache.max_size, cfg.cache.ttl) == (512 * MiB, 5400.0)


# --- unknown keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"serverr": {}}, "serverr: unknown key (did you mean 'server'?)"),
        (
            {"server": {"listen_adr": ":9000"}},
            "server.listen_adr: unknown key (did you mean 'listen_addr'?)",
        ),
        (
            {"backends": [backend("b1"), backend("b2", quota_byte=5)]},
            "backends[1].quota_byte: unknown key (did you mean 'quota_bytes'?)",
        ),
        (
            {"telemetry": {"metrics": {"enabeld": True}}},
            "telemetry.metrics.enabeld: unknown key (did you mean 'enabled'?)",
        ),
        (
            {
                "buckets": [
                    bucket("photos", {"access_key_id": "A", "secret_acces_key": "S"})
                ]
            },
            "buckets[0].credentials[0].secret_acces_key: unknown key (did you mean 'secret_access_key'?)",
        ),
        (
            {"write_path": {"pending_pattern": {"reaper_tik": "1m"}}},
            "write_path.pending_pattern.reaper_tik: unknown key (did you mean 'reaper_tick'?)",
        ),
        ({"zzzz": 1}, "zzzz: unknown key"),
    ],
)
def test_unknown_keys_are_errors_with_a_hint(
    overrides: dict[str, Any], expected: str
) -> None:
    assert expected in issues(overrides)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load(
            {
                "server": {"listen_adr": ":9000"},
                "backends": [backend("b1"), backend("b2", quota_bytes=-1)],
                "routing_strategy": "random",
            }
        )
    errors = [str(e) for e in info.value.errors]
    assert errors == [  # in file order (safe_dump sorts the keys)
        "backends[1].quota_bytes: must be >= 0",
        "routing_strategy: must be 'pack' or 'spread'",
        "server.listen_adr: unknown key (did you mean 'listen_addr'?)",
    ]
    assert str(info.value) == "; ".join(errors)
    assert all(
        isinstance(e, ConfigIssue) and e.line is not None for e in info.value.errors
    )


# --- validation rules -------------------------------------------------------------------------

TWO_CREDS = {"access_key_id": "A", "secret_access_key": "S"}

RULES: list[tuple[str, dict[str, Any], str]] = [
    # buckets
    ("no buckets", {"buckets": []}, "buckets: at least one bucket is required"),
    ("empty name", {"buckets": [bucket("")]}, "buckets[0].name: is required"),
    (
        "slash in name",
        {"buckets": [bucket("a/b")]},
        "buckets[0].name: must not contain '/'",
    ),
    (
        "duplicate bucket",
        {
            "buckets": [
                bucket("photos"),
                bucket("photos", {"access_key_id": "B", "secret_access_key": "S"}),
            ]
        },
        "buckets[1].name: duplicate bucket name (also buckets[0])",
    ),
    (
        "no credentials",
        {"buckets": [{"name": "photos"}]},
        "buckets[0].credentials: at least one credential is required",
    ),
    (
        "key without secret",
        {"buckets": [bucket("photos", {"access_key_id": "A"})]},
        "buckets[0].credentials[0].secret_access_key: is required with access_key_id",
    ),
    (
        "secret without key",
        {"buckets": [bucket("photos", {"secret_access_key": "S"})]},
        "buckets[0].credentials[0].access_key_id: is required with secret_access_key",
    ),
    (
        "empty credential",
        {"buckets": [bucket("photos", {})]},
        "buckets[0].credentials[0]: needs access_key_id and secret_access_key, or token",
    ),
    (
        "access key reused across buckets",
        {"buckets": [bucket("photos", TWO_CREDS), bucket("videos", TWO_CREDS)]},
        "buckets[1].credentials[0].access_key_id: duplicate access key (also buckets[0].credentials[0])",
    ),
    (
        "token reused",
        {
            "buckets": [
                bucket("photos", {"token": "t1"}),
                bucket("videos", {"token": "t1"}),
            ]
        },
        "buckets[1].credentials[0].token: duplicate token (also buckets[0].credentials[0])",
    ),
    (
        "negative multipart cap",
        {"buckets": [bucket("photos", max_multipart_uploads=-1)]},
        "buckets[0].max_multipart_uploads: must be >= 0",
    ),
    # backends and routing
    ("no backends", {"backends": []}, "backends: at least one backend is required"),
    (
        "mixed quotas",
        {"backends": [backend("b1"), backend("b2", quota_bytes=0)]},
        "backends: cannot mix unlimited backends (quota_bytes 0: b2) with limited ones (b1)",
    ),
    (
        "two unlimited, factor 1",
        {"backends": [backend("b1", quota_bytes=0), backend("b2", quota_bytes=0)]},
        "replication.factor: must be >= 2 with 2 unlimited backends (pack routing would only ever use the first)",
    ),
    (
        "factor above backends",
        {"replication": {"factor": 2}},
        "replication.factor: must be <= the number of backends (1)",
    ),
    ("factor zero", {"replication": {"factor": 0}}, "replication.factor: must be > 0"),
    (
        "duplicate backend",
        {"backends": [backend("b1"), backend("b1")]},
        "backends[1].name: duplicate backend name (also backends[0])",
    ),
    (
        "backend without name",
        {"backends": [backend("")]},
        "backends[0].name: is required",
    ),
    (
        "no endpoint",
        {"backends": [backend("b1", endpoint="")]},
        "backends[0].endpoint: is required",
    ),
    (
        "endpoint without scheme",
        {"backends": [backend("b1", endpoint="minio:9000")]},
        "backends[0].endpoint: must be an http:// or https:// URL",
    ),
    (
        "no bucket",
        {"backends": [backend("b1", bucket="")]},
        "backends[0].bucket: is required",
    ),
    (
        "static without secret",
        {"backends": [backend("b1", secret_access_key="")]},
        "backends[0].secret_access_key: is required (credential_source is static)",
    ),
    (
        "static without key",
        {"backends": [backend("b1", access_key_id="")]},
        "backends[0].access_key_id: is required (credential_source is static)",
    ),
    (
        "default_chain with keys",
        {"backends": [backend("b1", credential_source="default_chain")]},
        (
            "backends[0].credential_source: default_chain takes credentials from the environment: "
            "omit access_key_id and secret_access_key"
        ),
    ),
    (
        "unknown credential source",
        {"backends": [backend("b1", credential_source="vault")]},
        "backends[0].credential_source: must be 'static' or 'default_chain'",
    ),
    (
        "negative quota",
        {"backends": [backend("b1", quota_bytes=-1)]},
        "backends[0].quota_bytes: must be >= 0",
    ),
    (
        "negative object cap",
        {"backends": [backend("b1", max_object_size=-1)]},
        "backends[0].max_object_size: must be >= 0",
    ),
    (
        "negative api limit",
        {"backends": [backend("b1", api_request_limit=-1)]},
        "backends[0].api_request_limit: must be >= 0",
    ),
    (
        "negative egress",
        {"backends": [backend("b1", egress_byte_limit="-1MB")]},
        "backends[0].egress_byte_limit: must be >= 0",
    ),
    (
        "negative ingress",
        {"backends": [backend("b1", ingress_byte_limit=-5)]},
        "backends[0].ingress_byte_limit: must be >= 0",
    ),
    (
        "routing strategy",
        {"routing_strategy": "random"},
        "routing_strategy: must be 'pack' or 'spread'",
    ),
    # database
    (
        "driver",
        {"database": {"driver": "mysql"}},
        "database.driver: must be 'sqlite' or 'postgres'",
    ),
    (
        "postgres host",
        {"database": {"driver": "postgres", "database": "d", "user": "u"}},
        "database.host: is required for postgres (or set dsn)",
    ),
    (
        "postgres database",
        {"database": {"host": "db", "user": "u"}},
        "database.database: is required for postgres (or set dsn)",
    ),
    (
        "postgres user",
        {"database": {"host": "db", "database": "d"}},
        "database.user: is required for postgres (or set dsn)",
    ),
    (
        "min above max conns",
        {"database": {"host": "db", "database": "d", "user": "u", "max_conns": 5}},
        "database.min_conns: must be <= max_conns (5)",
    ),
    (
        "ssl mode",
        {
            "database": {
                "host": "db",
                "database": "d",
                "user": "u",
                "ssl_mode": "sometimes",
            }
        },
        "database.ssl_mode: must be one of disable, allow, prefer, require, verify-ca, verify-full",
    ),
    (
        "dsn with sqlite",
        {"database": {"driver": "sqlite", "dsn": "postgres://x"}},
        "database.dsn: is only used with driver postgres",
    ),
    (
        "max conns zero",
        {"database": {"max_conns": 0}},
        "database.max_conns: must be > 0",
    ),
    # server (admission pools, TLS)
    (
        "read header timeout",
        {"server": {"read_header_timeout": "10m"}},
        "server.read_header_timeout: must be <= read_timeout (5m0s)",
    ),
    (
        "backend timeout",
        {"server": {"backend_timeout": "6m"}},
        "server.backend_timeout: must be <= write_timeout (5m0s)",
    ),
    (
        "shed threshold",
        {"server": {"load_shed_threshold": 1}},
        "server.load_shed_threshold: must be below 1 (0 disables shedding)",
    ),
    (
        "negative shed threshold",
        {"server": {"load_shed_threshold": -0.5}},
        "server.load_shed_threshold: must be >= 0",
    ),
    (
        "negative pool",
        {"server": {"max_concurrent_reads": -1}},
        "server.max_concurrent_reads: must be >= 0",
    ),
    (
        "zero timeout",
        {"server": {"idle_timeout": "0s"}},
        "server.idle_timeout: must be > 0",
    ),
    (
        "log level",
        {"server": {"log_level": "trace"}},
        "server.log_level: must be one of debug, info, warn, error",
    ),
    (
        "log format",
        {"server": {"log_format": "xml"}},
        "server.log_format: must be 'json' or 'text'",
    ),
    (
        "backend http client",
        {"server": {"backend_http_client": "curl"}},
        "server.backend_http_client: must be 'lean' or 'twisted'",
    ),
    (
        "listen addr",
        {"server": {"listen_addr": "localhost"}},
        "server.listen_addr: must be host:port (e.g. 0.0.0.0:9000)",
    ),
    (
        "vhost suffix",
        {"server": {"virtual_host_suffix": "s3_example!"}},
        "server.virtual_host_suffix: must be a DNS name such as s3.example.com",
    ),
    (
        "delete concurrency",
        {"server": {"delete_concurrency": 0}},
        "server.delete_concurrency: must be > 0",
    ),
    (
        "spool limit",
        {"server": {"spool_memory_limit": -1}},
        "server.spool_memory_limit: must be >= 0",
    ),
    (
        "tls without key",
        {"server": {"tls": {"cert_file": "c.pem"}}},
        "server.tls.key_file: is required (TLS needs cert_file and key_file)",
    ),
    (
        "tls version",
        {"server": {"tls": {"cert_file": "c", "key_file": "k", "min_version": "1.1"}}},
        "server.tls.min_version: must be '1.2' or '1.3'",
    ),
    # usage flush
    (
        "fast interval",
        {"usage_flush": {"adaptive_enabled": True, "fast_interval": "30s"}},
        "usage_flush.fast_interval: must be < interval (30s)",
    ),
    (
        "threshold 1",
        {"usage_flush": {"adaptive_threshold": 1}},
        "usage_flush.adaptive_threshold: must be between 0 and 1 (exclusive)",
    ),
    (
        "threshold 0",
        {"usage_flush": {"adaptive_threshold": 0}},
        "usage_flush.adaptive_threshold: must be between 0 and 1 (exclusive)",
    ),
    # encryption
    (
        "no key source",
        {"encryption": {"enabled": True}},
        "encryption: needs one key source: master_key, master_key_file or vault",
    ),
    (
        "two key sources",
        {"encryption": {"enabled": True, "master_key": KEY32, "master_key_file": "/k"}},
        "encryption: set exactly one key source, not master_key and master_key_file",
    ),
    (
        "key not base64",
        {"encryption": {"enabled": True, "master_key": "not base64!"}},
        "encryption.master_key: must be base64 (of a 32-byte key)",
    ),
    (
        "short key",
        {
            "encryption": {
                "enabled": True,
                "master_key": base64.b64encode(b"x" * 16).decode(),
            }
        },
        "encryption.master_key: must decode to 32 bytes, not 16",
    ),
    (
        "bad previous key",
        {
            "encryption": {
                "enabled": True,
                "master_key": KEY32,
                "previous_keys": [KEY32, "AAAA"],
            }
        },
        "encryption.previous_keys[1]: must decode to 32 bytes, not 3",
    ),
    (
        "chunk not power of two",
        {"encryption": {"enabled": True, "master_key": KEY32, "chunk_size": 5000}},
        "encryption.chunk_size: must be a power of two from 4KiB to 1MiB",
    ),
    (
        "chunk too big",
        {"encryption": {"enabled": True, "master_key": KEY32, "chunk_size": "2MiB"}},
        "encryption.chunk_size: must be a power of two from 4KiB to 1MiB",
    ),
    (
        "chunk too small",
        {"encryption": {"enabled": True, "master_key": KEY32, "chunk_size": 2048}},
        "encryption.chunk_size: must be a power of two from 4KiB to 1MiB",
    ),
    (
        "vault token and file",
        {
            "encryption": {
                "enabled": True,
                "vault": {
                    "address": "http://v:8200",
                    "token": "t",
                    "token_file": "/f",
                    "key_name": "k",
                },
            }
        },
        "encryption.vault: set exactly one of token or token_file",
    ),
    (
        "vault key name",
        {
            "encryption": {
                "enabled": True,
                "vault": {"address": "http://v:8200", "token": "t"},
            }
        },
        "encryption.vault.key_name: is required",
    ),
    (
        "vault address",
        {"encryption": {"enabled": True, "vault": {"token": "t", "key_name": "k"}}},
        "encryption.vault.address: is required",
    ),
    # lifecycle
    (
        "rule without prefix",
        {"lifecycle": {"rules": [{"expiration_days": 3}]}},
        "lifecycle.rules[0]: needs a prefix or tags",
    ),
    (
        "rule without days",
        {"lifecycle": {"rules": [{"prefix": "tmp/"}]}},
        "lifecycle.rules[0].expiration_days: must be > 0",
    ),
    (
        "rule with zero days",
        {"lifecycle": {"rules": [{"prefix": "tmp/", "expiration_days": 0}]}},
        "lifecycle.rules[0].expiration_days: must be > 0",
    ),
    (
        "duplicate prefix",
        {
            "lifecycle": {
                "rules": [
                    {"prefix": "tmp/", "expiration_days": 1},
                    {"prefix": "tmp/", "expiration_days": 2},
                ]
            }
        },
        "lifecycle.rules[1].prefix: duplicate rule (same as lifecycle.rules[0])",
    ),
    # cache
    (
        "cache object above cache",
        {"cache": {"enabled": True, "max_size": "1MB", "max_object_size": "2MB"}},
        "cache.max_object_size: must be <= max_size",
    ),
    # ui
    (
        "ui admin key",
        {"ui": {"enabled": True, "admin_secret": "s", "session_secret": "x"}},
        "ui.admin_key: is required when the UI is enabled",
    ),
    (
        "ui admin secret",
        {"ui": {"enabled": True, "admin_key": "a", "session_secret": "x"}},
        "ui.admin_secret: is required when the UI is enabled",
    ),
    (
        "ui session secret",
        {"ui": {"enabled": True, "admin_key": "a", "admin_secret": "s"}},
        "ui.session_secret: is required when the UI is enabled",
    ),
    (
        "ui path",
        {"ui": {"path": "ui"}},
        "ui.path: must start with '/' and name a sub-path, e.g. /ui",
    ),
    # rate limit
    (
        "bad cidr",
        {"rate_limit": {"trusted_proxies": ["10.0.0.0/8", "bogus"]}},
        "rate_limit.trusted_proxies[1]: invalid CIDR 'bogus' (e.g. 10.0.0.0/8)",
    ),
    (
        "rate zero",
        {"rate_limit": {"requests_per_sec": 0}},
        "rate_limit.requests_per_sec: must be > 0",
    ),
    # notifications
    (
        "hook without url",
        {"notifications": {"endpoints": [{"events": ["s3:*"]}]}},
        "notifications.endpoints[0].url: is required",
    ),
    (
        "hook url scheme",
        {"notifications": {"endpoints": [{"url": "ftp://x", "events": ["s3:*"]}]}},
        "notifications.endpoints[0].url: must be an http:// or https:// URL",
    ),
    (
        "hook without events",
        {"notifications": {"endpoints": [{"url": "https://x"}]}},
        "notifications.endpoints[0].events: at least one event pattern is required",
    ),
    (
        "hook pattern",
        {
            "notifications": {
                "endpoints": [{"url": "https://x", "events": ["s3:*:Put"]}]
            }
        },
        "notifications.endpoints[0].events[0]: '*' is only allowed at the end",
    ),
    (
        "hook retries",
        {
            "notifications": {
                "endpoints": [{"url": "https://x", "events": ["*"], "max_retries": -1}]
            }
        },
        "notifications.endpoints[0].max_retries: must be >= 0",
    ),
    # the rest
    (
        "tracing endpoint",
        {"telemetry": {"tracing": {"enabled": True}}},
        "telemetry.tracing.endpoint: is required when tracing is enabled",
    ),
    (
        "sample rate",
        {"telemetry": {"tracing": {"sample_rate": 2}}},
        "telemetry.tracing.sample_rate: must be between 0 and 1",
    ),
    (
        "metrics listen",
        {"telemetry": {"metrics": {"listen": "nowhere"}}},
        "telemetry.metrics.listen: must be host:port (e.g. 127.0.0.1:9091)",
    ),
    (
        "rebalance strategy",
        {"rebalance": {"strategy": "random"}},
        "rebalance.strategy: must be 'pack' or 'spread'",
    ),
    (
        "rebalance threshold",
        {"rebalance": {"threshold": 2}},
        "rebalance.threshold: must be between 0 and 1",
    ),
    (
        "breaker threshold",
        {"backend_circuit_breaker": {"failure_threshold": 0}},
        "backend_circuit_breaker.failure_threshold: must be > 0",
    ),
    (
        "compression level",
        {"compression": {"level": "max"}},
        "compression.level: must be one of fastest, default, better, best",
    ),
    (
        "compression chunk",
        {"compression": {"chunk_size": "8KiB"}},
        "compression.chunk_size: must be from 16KiB to 64MiB",
    ),
    (
        "redis address",
        {"redis": {"address": "redis"}},
        "redis.address: must be host:port (e.g. redis:6379)",
    ),
    (
        "reaper tick",
        {"write_path": {"pending_pattern": {"reaper_tick": "0s"}}},
        "write_path.pending_pattern.reaper_tick: must be > 0",
    ),
    (
        "negative scrub interval",
        {"integrity": {"scrubber_interval": "-1h"}},
        "integrity.scrubber_interval: must be >= 0",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "expected"), [r[1:] for r in RULES], ids=[r[0] for r in RULES]
)
def test_validation_rule(overrides: dict[str, Any], expected: str) -> None:
    assert expected in issues(overrides)


VALID: list[tuple[str, dict[str, Any]]] = [
    (
        "two unlimited with factor 2",
        {
            "backends": [backend("b1", quota_bytes=0), backend("b2", quota_bytes=0)],
            "replication": {"factor": 2},
        },
    ),
    ("one unlimited backend", {"backends": [backend("b1", quota_bytes=0)]}),
    (
        "default_chain without keys",
        {
            "backends": [
                backend(
                    "b1",
                    credential_source="default_chain",
                    access_key_id="",
                    secret_access_key="",
                )
            ]
        },
    ),
    ("token credential", {"buckets": [bucket("photos", {"token": "t1"})]}),
    (
        "key pair plus token",
        {
            "buckets": [
                bucket(
                    "photos",
                    {"access_key_id": "A", "secret_access_key": "S", "token": "t"},
                )
            ]
        },
    ),
    ("postgres via dsn", {"database": {"dsn": "postgres://u:p@db/s3o"}}),
    (
        "fast interval ignored when not adaptive",
        {"usage_flush": {"fast_interval": "1m"}},
    ),
    (
        "master key",
        {
            "encryption": {
                "enabled": True,
                "master_key": KEY32,
                "previous_keys": [KEY32],
                "chunk_size": "4KiB",
            }
        },
    ),
    (
        "key file",
        {"encryption": {"enabled": True, "master_key_file": "/etc/s3orch/key"}},
    ),
    (
        "vault",
        {
            "encryption": {
                "enabled": True,
                "vault": {
                    "address": "https://v:8200",
                    "token_file": "/t",
                    "key_name": "k",
                },
            }
        },
    ),
    (
        "disabled encryption is not checked",
        {"encryption": {"master_key": "junk", "chunk_size": 5000}},
    ),
    (
        "tags-only lifecycle rule",
        {
            "lifecycle": {
                "rules": [{"tags": {"retention": "short"}, "expiration_days": 1}]
            }
        },
    ),
    (
        "same prefix, different tags",
        {
            "lifecycle": {
                "rules": [
                    {"prefix": "a/", "expiration_days": 1, "tags": {"k": "1"}},
                    {"prefix": "a/", "expiration_days": 1, "tags": {"k": "2"}},
                ]
            }
        },
    ),
    (
        "ui enabled",
        {
            "ui": {
                "enabled": True,
                "admin_key": "a",
                "admin_secret": "$2a$10$hash",
                "session_secret": "x",
            }
        },
    ),
    (
        "hooks",
        {
            "notifications": {
                "endpoints": [
                    {"url": "https://h", "events": ["s3:ObjectCreated:*", "*"]}
                ]
            }
        },
    ),
    (
        "tls 1.3 with mtls",
        {
            "server": {
                "tls": {
                    "cert_file": "c",
                    "key_file": "k",
                    "min_version": "1.3",
                    "client_ca_file": "ca",
                }
            }
        },
    ),
    ("ipv6 listen", {"server": {"listen_addr": "[::]:9000"}}),
    (
        "zero durations that disable",
        {
            "server": {"shutdown_delay": 0},
            "integrity": {"scrubber_interval": "0"},
            "replication": {"unhealthy_threshold": "0s"},
        },
    ),
]


@pytest.mark.parametrize("overrides", [v[1] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_variants_load(overrides: dict[str, Any]) -> None:
    load(overrides)


def test_lifecycle_rule_tags_are_decoded_as_pairs() -> None:
    cfg = load(
        {
            "lifecycle": {
                "rules": [
                    {
                        "prefix": "a/",
                        "expiration_days": 2,
                        "tags": {"env": "tmp", "x": "1"},
                    }
                ]
            }
        }
    )
    assert cfg.lifecycle.rules == (
        LifecycleRule(
            prefix="a/", expiration_days=2, tags=(("env", "tmp"), ("x", "1"))
        ),
    )


def test_non_s3_bucket_names_are_accepted_with_a_warning() -> None:
    cfg = load({"buckets": [bucket("App_Files")]})
    assert cfg.bucket("App_Files") is not None
    assert [w.path for w in cfg.warnings] == ["buckets[0].name"]
    assert load({"buckets": [bucket("app-files.v2")]}).warnings == ()


def test_decode_errors_are_not_repeated_by_the_rules() -> None:
    errors = issues({"backends": [backend("b1", endpoint=["x"])]})
    assert errors == ["backends[0].endpoint: must be a string"]


# --- lookups ----------------------------------------------------------------------------------


def test_lookup_helpers() -> None:
    cfg = load(
        {
            "buckets": [
                bucket(
                    "photos",
                    {"access_key_id": "PK", "secret_access_key": "ps"},
                    {"token": "tok-photos"},
                ),
                bucket("videos", {"access_key_id": "VK", "secret_access_key": "vs"}),
            ]
        }
    )
    assert cfg.bucket("videos") is cfg.buckets[1]
    assert cfg.bucket("nope") is None
    found = cfg.credential("PK")
    assert (
        found is not None
        and found[0].name == "photos"
        and found[1].secret_access_key == "ps"
    )
    assert cfg.credential("nope") is None
    by_token = cfg.token("tok-photos")
    assert by_token is not None and by_token[0].name == "photos"
    assert cfg.token("tok-other") is None
    assert cfg.token("") is None
    assert cfg.backend("b1") is cfg.backends[0]
    assert cfg.backend("b9") is None


def test_config_is_frozen() -> None:
    cfg = load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.routing_strategy = "spread"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.server.listen_addr = ":1"  # type: ignore[misc]


def test_direct_construction_applies_the_same_derived_defaults() -> None:
    assert ServerConfig().max_concurrent_requests == 1000
    assert (
        ServerConfig(
            max_concurrent_reads=1, max_concurrent_writes=1
        ).max_concurrent_requests
        == 0
    )


# --- secrets ----------------------------------------------------------------------------------

SECRETS = {
    "cred": "SECRET-cred-0001",
    "token": "SECRET-token-0002",
    "backend": "SECRET-backend-0003",
    "dbpw": "SECRET-dbpw-0004",
    "dsn": "postgres://u:SECRET-dsn-0005@db/s3o",
    "ui_secret": "SECRET-ui-0006",
    "session": "SECRET-session-0007",
    "admin_token": "SECRET-admintoken-0008",
    "hook": "SECRET-hook-0009",
    "redis": "SECRET-redis-0010",
    "master": base64.b64encode(b"SECRET-master-key-0011-padding!!").decode(),
    "previous": base64.b64encode(b"SECRET-previous-key-0012-paddin!").decode(),
    "vault": "SECRET-vault-0013",
}


def test_secrets_never_appear_in_repr_or_str() -> None:
    cfg = load(
        {
            "buckets": [
                bucket(
                    "photos",
                    {
                        "access_key_id": "AK",
                        "secret_access_key": SECRETS["cred"],
                        "token": SECRETS["token"],
                    },
                )
            ],
            "backends": [backend("b1", secret_access_key=SECRETS["backend"])],
            "database": {
                "driver": "postgres",
                "password": SECRETS["dbpw"],
                "dsn": SECRETS["dsn"],
            },
            "ui": {
                "admin_key": "admin",
                "admin_secret": SECRETS["ui_secret"],
                "session_secret": SECRETS["session"],
                "admin_token": SECRETS["admin_token"],
            },
            "notifications": {
                "endpoints": [
                    {"url": "https://h", "events": ["*"], "secret": SECRETS["hook"]}
                ]
            },
            "redis": {"address": "r:6379", "password": SECRETS["redis"]},
            "encryption": {
                "master_key": SECRETS["master"],
                "previous_keys": [SECRETS["previous"]],
                "vault": {"token": SECRETS["vault"]},
            },
        }
    )
    assert (
        cfg.buckets[0].credentials[0].secret_access_key == SECRETS["cred"]
    )  # present, just hidden
    assert (
        cfg.encryption.vault is not None
        and cfg.encryption.vault.token == SECRETS["vault"]
    )
    rendered = (
        repr(cfg)
        + str(cfg)
        + repr(cfg.buckets[0].credentials[0])
        + str(cfg.backends[0])
    )
    for name, value in SECRETS.items():
        assert value not in rendered, name
    assert "AK" in repr(cfg.buckets[0].credentials[0])  # access key ids are not secret


def test_errors_do_not_echo_secrets() -> None:
    with pytest.raises(ConfigError) as info:
        load(
            {
                "buckets": [
                    bucket("a", {"token": SECRETS["token"]}),
                    bucket("b", {"token": SECRETS["token"]}),
                ],
                "database": {"driver": "sqlite", "dsn": SECRETS["dsn"]},
                "encryption": {"enabled": True, "master_key": "SECRET-not-base64!"},
            }
        )
    assert len(info.value.errors) == 3
    assert "SECRET" not in str(info.value)


# --- files ------------------------------------------------------------------------------------


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_config(path, {}).buckets[0].name == "photos"
    assert load_config(str(path), {}).backends[0].name == "b1"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml", {})
    (issue,) = info.value.errors
    assert issue.path == "config"
    assert "cannot read" in issue.message and "absent.yaml" in issue.message


ORIGINAL_ENV = {
    "UI_ADMIN_KEY": "admin",
    "UI_ADMIN_SECRET": "admin-secret",
    "UI_SESSION_SECRET": "session-secret",
    "HOOK_SECRET": "hook-secret",
    "REDIS_PASSWORD": "redis-password",
}


def test_original_readme_config_loads_unchanged() -> None:
    cfg = load_config(DATA / "original_config.yaml", ORIGINAL_ENV)
    assert [b.name for b in cfg.buckets] == ["app1-files", "shared-files"]
    found = cfg.credential("READER_ACCESS_KEY")
    assert found is not None and found[0].name == "shared-files"
    (oci,) = cfg.backends
    assert (oci.region, oci.quota_bytes, oci.max_object_size) == (
        "us-phoenix-1",
        20 * GiB,
        50 * MiB,
    )
    assert (oci.force_path_style, oci.unsigned_payload, oci.credential_source) == (
        True,
        True,
        "static",
    )
    assert (
        cfg.telemetry.tracing.endpoint == "localhost:4317"
        and cfg.telemetry.tracing.insecure
    )
    assert cfg.ui.admin_key == "admin" and cfg.ui.session_secret == "session-secret"
    assert cfg.ui.effective_admin_token == "admin"
    assert [(r.prefix, r.expiration_days) for r in cfg.lifecycle.rules] == [
        ("tmp/", 7),
        ("uploads/staging/", 1),
    ]
    assert cfg.database.driver == "sqlite" and cfg.server.max_object_size == 5 * GiB
    assert cfg.warnings == ()


def test_original_readme_extra_blocks_load_unchanged() -> None:
    text = (DATA / "original_config.yaml").read_text() + (
        DATA / "original_extra_blocks.yaml"
    ).read_text()
    cfg = load_config_from_string(text, ORIGINAL_ENV)
    assert (cfg.cache.enabled, cfg.cache.max_size, cfg.cache.max_object_size) == (
        True,
        256 * MiB,
        10 * MiB,
    )
    assert cfg.redis.enabled and cfg.redis.password == "redis-password"
    (hook,) = cfg.notifications.endpoints
    assert (hook.events, hook.timeout, hook.max_retries, hook.secret) == (
        ("s3:ObjectCreated:*", "s3:ObjectRemoved:*"),
        5.0,
        5,
        "hook-secret",
    )
    assert (cfg.reconcile.enabled, cfg.reconcile.interval) == (True, 86400.0)
    assert (
        cfg.backend_circuit_breaker.enabled,
        cfg.backend_circuit_breaker.open_timeout,
    ) == (True, 300.0)


EXAMPLE = REPO / "packaging" / "config.example.yaml"
EXAMPLE_ENV = {
    "APP1_SECRET_KEY": "app1-secret",
    "BACKEND1_SECRET_KEY": "backend-secret",
}


def test_example_config_loads_and_documents_the_real_defaults() -> None:
    cfg = load_config(EXAMPLE, EXAMPLE_ENV)
    defaults = Config()
    for fld in dataclasses.fields(Config):
        if fld.name in ("buckets", "backends", "warnings"):
            continue
        assert getattr(cfg, fld.name) == getattr(defaults, fld.name), fld.name
    assert cfg.warnings == ()


def _schema_keys(cls: type[Any]) -> set[str]:
    keys: set[str] = set()
    hints = typing.get_type_hints(cls)
    for fld in dataclasses.fields(cls):
        if not fld.init or not fld.metadata.get("yaml", True):
            continue
        keys.add(fld.name)
        for tp in (hints[fld.name], *typing.get_args(hints[fld.name])):
            if dataclasses.is_dataclass(tp):
                keys |= _schema_keys(typing.cast(type[Any], tp))
    return keys


def test_example_config_mentions_every_key() -> None:
    text = EXAMPLE.read_text()
    keys = _schema_keys(Config)
    assert {
        "pending_pattern",
        "unsigned_payload",
        "client_ca_file",
        "renew_interval",
        "tags",
    } <= keys
    missing = sorted(
        k for k in keys if not re.search(rf"^\s*(#\s*)?(-\s*)?{k}:", text, re.MULTILINE)
    )
    assert missing == []


# --- units ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4096", 4096),
        (4096, 4096),
        ("0", 0),
        ("10KB", 10 * 1024),
        ("10KiB", 10 * 1024),
        ("256MB", 256 * 1048576),
        ("10MiB", 10 * 1048576),
        ("5GB", 5 * 1024**3),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("2TB", 2 * 1024**4),
        ("7b", 7),
        (" 64 mb ", 64 * 1048576),
        ("-1MB", -1048576),
        (2.0, 2),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["", "MB", "ten", "1.1KB", "10XB", "1e3", "1 2", "0.5"]
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def test_parse_size_rejects_bools_and_fractional_floats() -> None:
    with pytest.raises(TypeError):
        parse_size(True)
    with pytest.raises(ValueError, match="whole number"):
        parse_size(1.5)


UNITS = {
    "": 1,
    "B": 1,
    "KB": KiB,
    "KiB": KiB,
    "MB": MiB,
    "MiB": MiB,
    "GB": GiB,
    "GiB": GiB,
    "TB": TiB,
    "tib": TiB,
}


@given(
    st.integers(min_value=0, max_value=2**40), st.sampled_from(sorted(UNITS.items()))
)
def test_parse_size_with_any_unit(number: int, unit: tuple[str, int]) -> None:
    assert parse_size(f"{number}{unit[0]}") == number * unit[1]


@given(st.integers(min_value=0, max_value=2**62))
def test_format_size_round_trips(size: int) -> None:
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        ("24h", 86400.0),
        ("0s", 0.0),
        ("0", 0.0),
        ("+0", 0.0),
        (0, 0.0),
        ("1m30s500ms", 90.5),
        ("250us", 0.00025),
        ("250\u00b5s", 0.00025),
        ("100ns", 1e-7),
        ("-5s", -5.0),
        (".5s", 0.5),
        ("2.s", 2.0),
    ],
)
def test_parse_duration(text: str | int, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "30", "5x", "1d", "s", ".s", "1h 30m", "-", "1..5s", "99999999999h"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_parse_duration_rejects_bare_numbers() -> None:
    with pytest.raises(ValueError, match="missing unit"):
        parse_duration(30)
    with pytest.raises(TypeError):
        parse_duration(False)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5400, "1h30m0s"),
        (0.5, "500ms"),
        (0, "0s"),
        (30, "30s"),
        (90.5, "1m30.5s"),
        (0.00025, "250\u00b5s"),
        (-2, "-2s"),
    ],
)
def test_format_duration_matches_go(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_format_duration_round_trips(nanos: int) -> None:
    seconds = nanos / 1e9
    assert parse_duration(format_duration(seconds)) == seconds


@given(
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=999),
)
def test_parse_duration_sums_components(
    hours: int, minutes: int, secs: int, millis: int
) -> None:
    nanos = ((hours * 60 + minutes) * 60 + secs) * 10**9 + millis * 10**6
    assert parse_duration(f"{hours}h{minutes}m{secs}s{millis}ms") == nanos / 1e9

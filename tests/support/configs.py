"""Build s3orch config files (s3-orchestrator's config.yaml format, which s3orch loads unchanged) for tests, demo and bench."""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml


@dataclass
class BackendSpec:
    name: str
    endpoint: str
    bucket: str
    access_key: str = "testing"
    secret_key: str = "testing"
    quota_bytes: int = 0
    max_object_size: int = 0
    #: ``unsigned_payload`` of the backend (None: not written, the default "auto").
    unsigned_payload: bool | None = None


@dataclass
class BucketSpec:
    name: str
    access_key: str
    secret_key: str


@dataclass
class GatewayConfig:
    backends: list[BackendSpec]
    buckets: list[BucketSpec] = field(
        default_factory=lambda: [
            BucketSpec("photos", "photoskey", "photossecret"),
            BucketSpec("documents", "docskey", "docssecret"),
        ]
    )
    routing_strategy: str = "pack"
    db_path: str = "{workdir}/s3orch.db"
    #: A whole ``database:`` section (e.g. :func:`tests.support.postgres.database_section`);
    #: None means SQLite at ``db_path``.
    database: dict[str, object] | None = None
    extra_server: dict[str, object] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    def render(self) -> str:
        """YAML text with ``{port}``/``{workdir}`` placeholders for GatewayProcess."""
        limited = [b for b in self.backends if b.quota_bytes]
        doc: dict[str, object] = {
            "server": {"listen_addr": "127.0.0.1:{port}", "backend_timeout": "10s", **self.extra_server},
            "buckets": [
                {
                    "name": b.name,
                    "credentials": [{"access_key_id": b.access_key, "secret_access_key": b.secret_key}],
                }
                for b in self.buckets
            ],
            "database": self.database or {"driver": "sqlite", "path": self.db_path},
            "routing_strategy": self.routing_strategy,
            "backends": [
                {
                    "name": b.name,
                    "endpoint": b.endpoint,
                    "region": "us-east-1",
                    "bucket": b.bucket,
                    "access_key_id": b.access_key,
                    "secret_access_key": b.secret_key,
                    "force_path_style": True,
                    "quota_bytes": b.quota_bytes if limited else 0,
                    **({"max_object_size": b.max_object_size} if b.max_object_size else {}),
                    **({"unsigned_payload": b.unsigned_payload} if b.unsigned_payload is not None else {}),
                }
                for b in self.backends
            ],
            "telemetry": {"metrics": {"enabled": True, "path": "/metrics"}},
            "usage_flush": {"interval": "1s", "fast_interval": "500ms"},
            **self.extra,
        }
        return yaml.safe_dump(doc, sort_keys=False)

"""Encryption metrics (BEHAVIOURS §1.19), on the same registry as :mod:`s3orch.observe.metrics`
(kept apart because that module is at the size limit)."""

from __future__ import annotations

from prometheus_client import Counter

from s3orch.observe.metrics import REGISTRY
from s3orch.observe.multiproc import Gauge

ENCRYPTION_OPERATIONS = Counter(
    "s3o_encryption_operations",
    "Encrypted streams written or read (op: encrypt, decrypt, decrypt_range)",
    ["op"],
    registry=REGISTRY,
)
ENCRYPTION_ERRORS = Counter(
    "s3o_encryption_errors",
    "Encryption failures (op; error_type: key_unwrap, key_wrap, authentication, truncated, vault)",
    ["op", "error_type"],
    registry=REGISTRY,
)
UNKNOWN_KEY_ID = Counter(
    "s3o_encryption_unknown_key_id",
    "Wrapped data keys whose key id is not configured (the primary key was tried)",
    registry=REGISTRY,
)
ENCRYPT_EXISTING_OBJECTS = Counter(
    "s3o_encrypt_existing_objects", "Objects handled by encrypt-existing", ["status"], registry=REGISTRY
)
DECRYPT_EXISTING_OBJECTS = Counter(
    "s3o_decrypt_existing_objects", "Objects handled by decrypt-existing", ["status"], registry=REGISTRY
)
KEY_ROTATION_OBJECTS = Counter(
    "s3o_key_rotation_objects", "Objects handled by rotate-encryption-key", ["status"], registry=REGISTRY
)
PLAINTEXT_COPIES = Gauge(
    "s3o_encryption_plaintext_copies",
    "Objects still stored in plaintext while encryption is on (last bulk pass count)",
    registry=REGISTRY,
)
FLAG_MISMATCH = Counter(
    "s3o_encryption_flag_mismatch",
    "Rows whose encrypted flag disagrees with the stored bytes (component that found it)",
    ["component"],
    registry=REGISTRY,
)

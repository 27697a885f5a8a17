"""Master keys: inline, file, previous keys, unknown key ids, Vault Transit (a recording double of
``hvac`` here; the real OpenBao dev server is in tests/integration/test_encryption_vault.py)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from s3orch.config.model import EncryptionConfig, VaultConfig
from s3orch.crypto.format import DecryptionError
from s3orch.crypto.keys import KeyError_, LocalKeys, VaultKeys, check_token_file, local_keys, wrap_local
from s3orch.crypto.setup import TokenRenewer, build_envelope, key_source, vault_client
from s3orch.observe.metrics import REGISTRY

KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))
B64 = base64.b64encode


def run(coroutine: Any) -> Any:
    results: list[Any] = []
    Deferred.fromCoroutine(coroutine).addBoth(results.append)
    assert results, "did not fire"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def test_inline_master_key_wraps_as_config_0_and_previous_keys_only_unwrap() -> None:
    old = local_keys(EncryptionConfig(enabled=True, master_key=B64(KEY_B).decode()))
    wrapped_old, old_id = run(old.wrap(os.urandom(32)))
    keys = local_keys(EncryptionConfig(enabled=True, master_key=B64(KEY_A).decode(), previous_keys=(B64(KEY_B).decode(),)))
    dek = os.urandom(32)
    wrapped, key_id = run(keys.wrap(dek))
    assert key_id == "config-0" and old_id == "config-0"
    assert run(keys.unwrap(wrapped, "config-0")) == dek
    assert keys.knows("config-1") and not keys.knows("config-2")
    assert len(run(keys.unwrap(wrapped_old, "config-1"))) == 32  # the previous key unwraps...
    # ...and a row still naming config-0 (written when the old key was primary) falls back to it.
    assert len(run(keys.unwrap(wrapped_old, "config-0"))) == 32
    assert not keys.is_current(wrapped_old, "config-0") and keys.is_current(wrapped, "config-0")
    with pytest.raises(DecryptionError):
        run(keys.unwrap(wrap_local(bytes(32), dek), "config-0"))  # no configured key: refused


def test_master_key_file_is_exactly_32_raw_bytes(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(KEY_A)
    keys = local_keys(EncryptionConfig(enabled=True, master_key_file=str(path)))
    assert keys.primary_id == "file-0"
    dek = os.urandom(32)
    assert run(keys.unwrap(run(keys.wrap(dek))[0], "file-0")) == dek
    path.write_bytes(KEY_A + b"\n")
    with pytest.raises(KeyError_):
        local_keys(EncryptionConfig(enabled=True, master_key_file=str(path)))


def test_unknown_key_id_is_warned_tried_with_the_primary_and_counted() -> None:
    keys = LocalKeys({"config-0": KEY_A}, "config-0")
    dek = os.urandom(32)
    before = REGISTRY.get_sample_value("s3o_encryption_unknown_key_id_total") or 0.0
    assert run(keys.unwrap(wrap_local(KEY_A, dek), "file-0")) == dek
    assert REGISTRY.get_sample_value("s3o_encryption_unknown_key_id_total") == before + 1
    with pytest.raises(DecryptionError):  # a really unknown key fails authentication
        run(keys.unwrap(wrap_local(KEY_B, dek), "config-7"))


class FakeTransit:
    """What VaultKeys calls on ``client.secrets.transit``, recording the mount and key."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.failing = False

    def encrypt_data(self, name: str, plaintext: str, mount_point: str) -> dict[str, Any]:
        self.calls.append(("encrypt", name, mount_point))
        if self.failing:
            raise RuntimeError("permission denied")
        return {"data": {"ciphertext": "vault:v1:" + plaintext[::-1]}}

    def decrypt_data(self, name: str, ciphertext: str, mount_point: str) -> dict[str, Any]:
        self.calls.append(("decrypt", name, mount_point))
        if self.failing:
            raise RuntimeError("permission denied")
        return {"data": {"plaintext": ciphertext.removeprefix("vault:v1:")[::-1]}}


class FakeClient:
    def __init__(self) -> None:
        self.transit = FakeTransit()
        self.secrets = SimpleNamespace(transit=self.transit)
        self.auth = SimpleNamespace(token=SimpleNamespace(renew_self=self.renew_self))
        self.token: str | None = "initial"
        self.renewed_with: list[str | None] = []

    def renew_self(self) -> None:
        self.renewed_with.append(self.token)


def test_vault_transit_wraps_under_the_key_name_at_the_mount_off_the_reactor() -> None:
    client = FakeClient()
    threaded: list[str] = []

    def in_thread(call: Any) -> Deferred[Any]:
        threaded.append(call.__name__)
        return succeed(call())

    keys = VaultKeys(client, "s3orch", "transit-x", in_thread)
    dek = os.urandom(32)
    wrapped, key_id = run(keys.wrap(dek))
    assert key_id == "s3orch" and wrapped.startswith(b"vault:v1:")
    assert run(keys.unwrap(wrapped, "s3orch")) == dek
    assert client.transit.calls == [("encrypt", "s3orch", "transit-x"), ("decrypt", "s3orch", "transit-x")]
    assert threaded == ["call", "call"]  # every hvac call went through the thread hook
    client.transit.failing = True
    with pytest.raises(KeyError_, match="permission denied"):  # the service refused: 503, not a bad key
        run(keys.unwrap(wrapped, "s3orch"))
    with pytest.raises(KeyError_, match="permission denied"):
        run(keys.wrap(dek))


def test_token_file_must_be_0600_or_stricter(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("s.secret\n")
    path.chmod(0o644)
    with pytest.raises(KeyError_, match="0600"):
        check_token_file(str(path))
    path.chmod(0o600)
    assert check_token_file(str(path)) == "s.secret"


def test_renewal_every_interval_rereads_the_token_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first")
    path.chmod(0o600)
    client, clock = FakeClient(), Clock()
    vault = VaultConfig(address="http://vault:8200", token_file=str(path), key_name="k", renew_interval=60.0)
    renewer = TokenRenewer(client, vault, lambda call: succeed(call()), clock)
    renewer.start()
    clock.advance(59)
    assert client.renewed_with == []
    clock.advance(1)
    assert client.renewed_with == ["first"]
    path.write_text("second")
    clock.advance(60)
    assert client.renewed_with == ["first", "second"]
    path.chmod(0o640)  # refused: counted, the old token stays, the next tick tries again
    clock.advance(60)
    assert renewer.failures == 1 and client.renewed_with == ["first", "second"]
    renewer.stop()


def test_the_vault_client_gets_the_address_token_and_ca_cert(tmp_path: Path) -> None:
    vault = VaultConfig(address="https://vault.example:8200", token="s.abc", key_name="k", ca_cert="/etc/ca.pem")
    client = vault_client(vault)
    assert client.url == "https://vault.example:8200" and client.token == "s.abc"
    assert client.adapter._kwargs["verify"] == "/etc/ca.pem"


def test_build_envelope_follows_the_switch_and_the_chunk_size(tmp_path: Path) -> None:
    assert build_envelope(EncryptionConfig(), None, None) == (None, None)
    envelope, renewer = build_envelope(
        EncryptionConfig(enabled=True, master_key=B64(KEY_A).decode(), chunk_size=16384), Clock(), None
    )
    assert envelope is not None and envelope.enabled and envelope.chunk_size == 16384 and renewer is None
    made: list[VaultConfig] = []
    config = EncryptionConfig(
        enabled=True, vault=VaultConfig(address="http://v:8200", token="t", key_name="kn", mount_path="m")
    )
    keys, renewer = key_source(config, Clock(), lambda vault: made.append(vault) or FakeClient())
    assert keys.primary_id == "kn" and renewer is not None and made == [config.vault]



def test_start_up_checks_the_key_file_and_the_token_file_mode(tmp_path: Path) -> None:
    from s3orch.crypto.setup import key_file_issues

    key = tmp_path / "key"
    key.write_bytes(b"short")
    issues = key_file_issues(EncryptionConfig(enabled=True, master_key_file=str(key)))
    assert [(i.path, "exactly 32 bytes" in i.message) for i in issues] == [("encryption.master_key_file", True)]
    key.write_bytes(KEY_A)
    assert key_file_issues(EncryptionConfig(enabled=True, master_key_file=str(key))) == []
    token = tmp_path / "token"
    token.write_text("t")
    token.chmod(0o644)
    vault = VaultConfig(address="http://v:8200", token_file=str(token), key_name="k")
    issues = key_file_issues(EncryptionConfig(enabled=True, vault=vault))
    assert [(i.path, "0600" in i.message) for i in issues] == [("encryption.vault.token_file", True)]
    assert key_file_issues(EncryptionConfig(enabled=False, vault=vault)) == []

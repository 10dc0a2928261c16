"""The region's transfer key pair: the DEV file made once next to the local master key, the
wrapping bound to its subject, and the settings that choose it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from profile_store.config import ConfigError, StoreSettings
from profile_store.errors import InvalidRecipient
from profile_store.key_providers import DecryptionFailed, KeyConfigError, generate_local_master_key
from profile_store.transfer.key_pair import Recipient, dev_key_path, load_key_pair


def test_the_dev_key_is_made_once_marked_and_private(tmp_path: Path) -> None:
    master = generate_local_master_key(tmp_path / "mk")
    first = load_key_pair(
        transfer_key_file=None, local_master_key_file=str(master), key_provider="local"
    )
    again = load_key_pair(
        transfer_key_file=None, local_master_key_file=str(master), key_provider="local"
    )
    assert first.kid == again.kid
    path = dev_key_path(master)
    assert path.read_bytes().startswith(b"# DEV ONLY")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # The same file named explicitly is the same key.
    named = load_key_pair(
        transfer_key_file=str(path), local_master_key_file=None, key_provider="kms"
    )
    assert named.kid == first.kid


def test_a_wrapped_key_opens_only_for_its_subject(tmp_path: Path) -> None:
    master = generate_local_master_key(tmp_path / "mk")
    pair = load_key_pair(
        transfer_key_file=None, local_master_key_file=str(master), key_provider="local"
    )
    recipient = Recipient.from_pem(pair.kid, pair.public_pem)
    data_key = bytes(range(32))
    wrapped = recipient.wrap(data_key, account="acme", subject="s1")
    assert pair.unwrap(wrapped, account="acme", subject="s1") == data_key
    for account, subject in (("acme", "s2"), ("other", "s1")):
        with pytest.raises(DecryptionFailed):
            pair.unwrap(wrapped, account=account, subject=subject)
    with pytest.raises(DecryptionFailed):
        pair.unwrap(wrapped[:-1] + bytes([wrapped[-1] ^ 1]), account="acme", subject="s1")
    with pytest.raises(InvalidRecipient):
        Recipient.from_pem("0" * 32, pair.public_pem)  # kid of another key


def test_no_transfer_key_without_a_file_for_kms(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError, match="PROFILE_STORE_TRANSFER_KEY_FILE"):
        load_key_pair(transfer_key_file=None, local_master_key_file=None, key_provider="kms")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(KeyConfigError, match="cannot load"):
        load_key_pair(transfer_key_file=str(bad), local_master_key_file=None, key_provider="kms")


def test_fence_cache_s_is_at_most_one_second(tmp_path: Path) -> None:
    env = {
        "PROFILE_STORE_REGION": "eu-west-1",
        "PROFILE_STORE_TABLE": "profiles",
        "PROFILE_STORE_ASSERTION_SECRET": "0123456789abcdef0123",
        "PROFILE_STORE_LOCAL_MASTER_KEY_FILE": str(tmp_path / "mk"),
    }
    assert StoreSettings.from_env(env).fence_cache_s == 1.0
    assert (
        StoreSettings.from_env({**env, "PROFILE_STORE_FENCE_CACHE_S": "0.25"}).fence_cache_s == 0.25
    )
    for bad in ("2", "0", "-1"):
        with pytest.raises(ConfigError, match="fence_cache_s"):
            StoreSettings.from_env({**env, "PROFILE_STORE_FENCE_CACHE_S": bad})

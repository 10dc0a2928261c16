"""Key providers: the local (dev) provider as pure tests, the KMS provider against moto."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from profile_store import key_providers
from profile_store.key_providers import (
    DecryptionFailed,
    KeyConfigError,
    KeyContext,
    KeyServiceError,
    KeyServiceUnavailable,
    KmsKeyProvider,
    LocalKeyProvider,
)
from residency_contract.settings import ConfigError
from residency_dev.dynamodb_local import free_port

from .conftest import REGION, aws_client

CTX = KeyContext(region=REGION, account="acme", subject="p-1")


# --- local provider -------------------------------------------------------------------------


async def test_local_round_trip(local_provider: LocalKeyProvider) -> None:
    made = await local_provider.generate_data_key(CTX)
    assert len(made.plaintext) == 32 and made.plaintext not in made.wrapped
    assert made.provider == "local" and made.key_id == local_provider.key_id
    assert "plaintext" not in repr(made)
    got = await local_provider.unwrap_data_key(made.wrapped, CTX, key_id=made.key_id)
    assert got == made.plaintext


@pytest.mark.parametrize(
    "other",
    [
        KeyContext(region=REGION, account="acme", subject="p-2"),
        KeyContext(region=REGION, account="evil", subject="p-1"),
        KeyContext(region="us-east-1", account="acme", subject="p-1"),
    ],
    ids=["other-subject", "other-account", "other-region"],
)
async def test_local_wrap_is_bound_to_its_context(
    local_provider: LocalKeyProvider, other: KeyContext
) -> None:
    made = await local_provider.generate_data_key(CTX)
    with pytest.raises(DecryptionFailed):
        await local_provider.unwrap_data_key(made.wrapped, other, key_id=made.key_id)


@pytest.mark.parametrize("position", [0, 1, 13, -1])
async def test_local_tampered_wrap_fails(local_provider: LocalKeyProvider, position: int) -> None:
    made = await local_provider.generate_data_key(CTX)
    bad = bytearray(made.wrapped)
    bad[position] ^= 0x01
    with pytest.raises(DecryptionFailed):
        await local_provider.unwrap_data_key(bytes(bad), CTX, key_id=made.key_id)


async def test_local_other_master_key_is_named(tmp_path: Path, local_provider: Any) -> None:
    other = LocalKeyProvider(key_providers.generate_local_master_key(tmp_path / "other.key"))
    made = await other.generate_data_key(CTX)
    assert other.key_id != local_provider.key_id
    with pytest.raises(KeyServiceError, match="master key"):
        await local_provider.unwrap_data_key(made.wrapped, CTX, key_id=made.key_id)


@pytest.mark.parametrize(
    "content",
    [
        base64.b64encode(b"k" * 16).decode(),
        base64.b64encode(b"k" * 33).decode(),
        (b"k" * 31).hex(),
        (b"k" * 64).hex(),
        "not a key at all!",
        "",
    ],
    ids=["b64-16", "b64-33", "hex-31", "hex-64", "garbage", "empty"],
)
def test_local_refuses_wrong_length_or_format(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(content)
    with pytest.raises(KeyConfigError, match="PROFILE_STORE_LOCAL_MASTER_KEY_FILE") as info:
        LocalKeyProvider(path)
    assert isinstance(info.value, ConfigError)  # so the app's start-up check reports it


@pytest.mark.parametrize(
    "encode", [lambda k: base64.b64encode(k).decode() + "\n", lambda k: f"  {k.hex()}\n"]
)
async def test_local_accepts_base64_and_hex(tmp_path: Path, encode: Any) -> None:
    raw = bytes(range(32))
    a, b = tmp_path / "a.key", tmp_path / "b.key"
    a.write_text(base64.b64encode(raw).decode())
    b.write_text(encode(raw))
    first, second = LocalKeyProvider(a), LocalKeyProvider(b)
    assert first.key_id == second.key_id
    made = await first.generate_data_key(CTX)
    assert await second.unwrap_data_key(made.wrapped, CTX, key_id=made.key_id) == made.plaintext


def test_local_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError, match="cannot read"):
        LocalKeyProvider(tmp_path / "absent.key")


def test_generate_master_key_is_private_and_never_overwrites(tmp_path: Path) -> None:
    path = key_providers.generate_local_master_key(tmp_path / "m.key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(base64.b64decode(path.read_text().strip())) == 32
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        key_providers.generate_local_master_key(path)
    assert path.read_bytes() == before


def test_provider_from_settings_needs_its_setting() -> None:
    with pytest.raises(KeyConfigError, match="LOCAL_MASTER_KEY_FILE"):
        key_providers.provider_from_settings(
            SimpleNamespace(key_provider="local", local_master_key_file=None)
        )
    with pytest.raises(KeyConfigError, match="KMS client"):
        key_providers.provider_from_settings(
            SimpleNamespace(key_provider="kms", kms_key_id="alias/x", region=REGION)
        )


# --- error conversion (the one boundary) ----------------------------------------------------


def _client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "Decrypt",
    )


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_client_error("InvalidCiphertextException"), DecryptionFailed),
        (_client_error("IncorrectKeyException"), DecryptionFailed),
        (_client_error("ThrottlingException"), KeyServiceUnavailable),
        (_client_error("DependencyTimeoutException", 503), KeyServiceUnavailable),
        (_client_error("KMSInternalException", 500), KeyServiceUnavailable),
        (_client_error("Whatever", 502), KeyServiceUnavailable),
        (_client_error("AccessDeniedException"), KeyServiceError),
        (_client_error("DisabledException"), KeyServiceError),
        (_client_error("NotFoundException"), KeyServiceError),
        (EndpointConnectionError(endpoint_url="http://x"), KeyServiceUnavailable),
        (ReadTimeoutError(endpoint_url="http://x"), KeyServiceUnavailable),
        (TimeoutError(), KeyServiceUnavailable),
    ],
)
def test_service_errors_are_converted(exc: Exception, expected: type[Exception]) -> None:
    assert type(key_providers.service_error(exc, "op")) is expected


# --- KMS provider ---------------------------------------------------------------------------


def _stub_kms(region: str = REGION, arn: str | None = None) -> Any:
    async def describe_key(KeyId: str) -> dict[str, Any]:
        return {"KeyMetadata": {"Arn": arn}}

    return SimpleNamespace(meta=SimpleNamespace(region_name=region), describe_key=describe_key)


@pytest.mark.parametrize(
    "key_id",
    [
        "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws:kms:us-east-1:123456789012:alias/profiles",
    ],
)
def test_kms_refuses_key_arn_from_another_region(key_id: str) -> None:
    with pytest.raises(KeyConfigError, match="key is in us-east-1, this store serves eu-west-1"):
        KmsKeyProvider(key_id, REGION, _stub_kms())


def test_kms_refuses_client_for_another_region() -> None:
    with pytest.raises(KeyConfigError, match="client is for region us-east-1"):
        KmsKeyProvider("alias/profiles", REGION, _stub_kms(region="us-east-1"))


def test_kms_refuses_something_that_only_looks_like_an_arn() -> None:
    with pytest.raises(KeyConfigError, match="not a KMS ARN"):
        KmsKeyProvider("arn:aws:s3:::bucket", REGION, _stub_kms())


async def test_kms_alias_resolving_to_another_region_is_refused_at_start() -> None:
    arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    provider = KmsKeyProvider("alias/profiles", REGION, _stub_kms(arn=arn))
    with pytest.raises(KeyConfigError, match="key is in us-east-1"):
        await provider.start()


async def test_kms_round_trip_against_moto(kms: Any) -> None:
    arn = (await kms.create_key())["KeyMetadata"]["Arn"]
    provider = KmsKeyProvider(arn, REGION, kms)
    await provider.start()
    made = await provider.generate_data_key(CTX)
    assert len(made.plaintext) == 32 and made.provider == "kms" and made.key_id == arn
    assert await provider.unwrap_data_key(made.wrapped, CTX, key_id=arn) == made.plaintext
    rewrapped = await provider.wrap_data_key(made.plaintext, CTX)
    assert await provider.unwrap_data_key(rewrapped, CTX, key_id=arn) == made.plaintext
    other = KeyContext(region=REGION, account="acme", subject="p-2")
    with pytest.raises(DecryptionFailed):
        await provider.unwrap_data_key(made.wrapped, other, key_id=arn)


async def test_kms_alias_is_resolved_once_to_its_arn(kms: Any) -> None:
    key = (await kms.create_key())["KeyMetadata"]
    await kms.create_alias(AliasName="alias/profiles-test", TargetKeyId=key["KeyId"])
    provider = KmsKeyProvider("alias/profiles-test", REGION, kms)
    await provider.start()
    assert provider.key_id == key["Arn"]
    made = await provider.generate_data_key(CTX)
    assert made.key_id == key["Arn"]
    assert await provider.unwrap_data_key(made.wrapped, CTX, key_id=key["Arn"]) == made.plaintext


async def test_kms_refuses_a_record_wrapped_under_another_key(kms: Any) -> None:
    first = (await kms.create_key())["KeyMetadata"]["Arn"]
    second = (await kms.create_key())["KeyMetadata"]["Arn"]
    made = await KmsKeyProvider(first, REGION, kms).generate_data_key(CTX)
    with pytest.raises(KeyServiceError, match="wrapped under"):
        await KmsKeyProvider(second, REGION, kms).unwrap_data_key(made.wrapped, CTX, key_id=first)


async def test_kms_unknown_key_is_a_service_error(kms: Any) -> None:
    arn = "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    with pytest.raises(KeyServiceError, match="NotFoundException"):
        await KmsKeyProvider(arn, REGION, kms).generate_data_key(CTX)


async def test_kms_unreachable_is_unavailable() -> None:
    arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    async with aws_client("kms", f"http://127.0.0.1:{free_port()}") as client:
        provider = KmsKeyProvider(arn, REGION, client)
        with pytest.raises(KeyServiceUnavailable):
            await provider.generate_data_key(CTX)
        with pytest.raises(KeyServiceUnavailable):
            await provider.unwrap_data_key(b"x" * 64, CTX, key_id=arn)

"""Key and decryption failures become clear JSON answers without details (errors.from_crypto)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from profile_store.app import create_app
from profile_store.config import StoreSettings
from profile_store.handlers import SERVICE
from profile_store.key_providers import (
    DecryptionFailed,
    GeneratedKey,
    KeyContext,
    KeyServiceUnavailable,
    LocalKeyProvider,
    generate_local_master_key,
)
from tests.store.conftest import BASE, Api, unique_profile


class BrokenProvider:
    """A key service that is down (503) or hands back keys that do not authenticate (500)."""

    name = "local"
    key_id = "broken"

    def __init__(self, inner: LocalKeyProvider, failure: Exception) -> None:
        self.inner = inner
        self.failure = failure
        self.broken = False

    async def start(self) -> None:
        return None

    async def generate_data_key(self, ctx: KeyContext) -> GeneratedKey:
        if self.broken:
            raise self.failure
        return await self.inner.generate_data_key(ctx)

    async def wrap_data_key(self, plaintext: bytes, ctx: KeyContext) -> bytes:
        return await self.inner.wrap_data_key(plaintext, ctx)

    async def unwrap_data_key(self, wrapped: bytes, ctx: KeyContext, *, key_id: str) -> bytes:
        if self.broken:
            raise self.failure
        return await self.inner.unwrap_data_key(wrapped, ctx, key_id=key_id)


async def _pair(aiohttp_client: Any, settings: StoreSettings, failure: Exception) -> tuple:
    provider = BrokenProvider(LocalKeyProvider(settings.local_master_key_file or ""), failure)
    client = await aiohttp_client(create_app(settings, key_provider=provider))
    return provider, Api(client)


DOWN = KeyServiceUnavailable("KMS GenerateDataKey: ThrottlingException secret-detail")
BAD = DecryptionFailed("document 'CUR' of subject 'p' failed secret-detail")


async def test_key_service_down_is_503_and_bad_key_is_500(
    aiohttp_client: Any, settings: StoreSettings
) -> None:
    for failure, status, code in [
        (DOWN, 503, "key_service_unavailable"),
        (BAD, 500, "encryption_error"),
    ]:
        provider, api = await _pair(aiohttp_client, settings, failure)
        pid = (await api.create_profile(unique_profile()))["id"]
        provider.broken = True
        api.client.app[SERVICE].keys.clear_cache()  # the cached key would hide the failure
        got, body, headers = await api.call("GET", f"{BASE}/profiles/{pid}")
        assert (got, body["error"]) == (status, code), body
        assert "secret-detail" not in body["message"] and pid not in body["message"]
        if status == 503:
            assert headers["Retry-After"] == "1"
            got, body, _ = await api.call("POST", f"{BASE}/profiles", json_body=unique_profile())
            assert (got, body["error"]) == (503, "key_service_unavailable")


async def test_another_master_key_cannot_read(
    aiohttp_client: Any, settings: StoreSettings, tmp_path: Path
) -> None:
    api = Api(await aiohttp_client(create_app(settings)))
    pid = (await api.create_profile())["id"]
    other_key = generate_local_master_key(tmp_path / "other.key")
    other = dataclasses.replace(settings, local_master_key_file=str(other_key))
    stranger = Api(await aiohttp_client(create_app(other)))
    status, body, _ = await stranger.call("GET", f"{BASE}/profiles/{pid}")
    assert status == 500 and body == {
        "error": "encryption_error",
        "message": "stored data could not be decrypted or encrypted",
    }

"""Profile System settings: one frozen dataclass, read once at start, validated with clear messages.

Each setting comes from, in order: the environment variable ``PROFILE_STORE_<NAME>``, the TOML
file named by ``PROFILE_STORE_CONFIG`` (top-level keys, lower-case names), the default. A bad or
missing value stops the start with a ``ConfigError`` naming the setting and its env var. The
reading and the casts are ``residency_contract.settings``, shared with the edge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from residency_contract.settings import (
    ConfigError,
    ConfigSource,
    optional_str,
    positive,
    region_name,
    secret_bytes,
    upper_str,
)

__all__ = ["ConfigError", "StoreSettings"]


@dataclass(frozen=True, slots=True)
class StoreSettings:
    region: str
    table: str
    assertion_secret: bytes
    dynamodb_endpoint: str | None = None  # unset: AWS's regional endpoint
    host: str = "127.0.0.1"
    port: int = 8001
    instance_id: str = "store"
    max_body_bytes: int = 256 * 1024
    require_pitr: bool = True
    assertion_max_age_s: float = 30.0
    ddb_connect_timeout_s: float = 1.0
    ddb_read_timeout_s: float = 3.0
    ddb_max_attempts: int = 2
    update_retries: int = 32
    # A write's transaction is re-sent with the same ClientRequestToken on a timeout, throttling
    # or 5xx, at most ``write_attempts`` times and for at most ``write_budget_s`` after its first
    # send (keep it below the edge's read_timeout_s, so the answer still reaches the client).
    write_attempts: int = 4
    write_budget_s: float = 8.0
    # How long a create's Idempotency-Key record (key -> created id) is kept.
    idempotency_ttl_s: int = 86400
    key_provider: str = "local"
    local_master_key_file: str | None = None
    kms_key_id: str | None = None
    kms_endpoint: str | None = None
    log_level: str = "INFO"
    # Account moves (fence.py, transfer/). How long a store trusts its view of an
    # account's fence marker for reads (writes always check it in their transaction).
    fence_cache_s: float = 1.0
    # The region's transfer RSA key pair (PEM, private). Unset with key_provider=local: a DEV
    # key generated next to the local master key. Production: a KMS asymmetric key (seam in
    # transfer/key_pair.py), until then a file provisioned like any other secret.
    transfer_key_file: str | None = None
    # Bodies of the transfer endpoints (import pages) may be larger than the API's.
    transfer_max_body_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StoreSettings:
        pos_i, pos_f = positive(int), positive(float)
        casts: dict[str, Callable[[Any], Any]] = {
            "region": region_name,
            "table": str,
            "dynamodb_endpoint": optional_str,
            "assertion_secret": secret_bytes,
            "host": str,
            "port": pos_i,
            "instance_id": str,
            "max_body_bytes": pos_i,
            "require_pitr": bool,
            "assertion_max_age_s": pos_f,
            "ddb_connect_timeout_s": pos_f,
            "ddb_read_timeout_s": pos_f,
            "ddb_max_attempts": pos_i,
            "update_retries": pos_i,
            "write_attempts": pos_i,
            "write_budget_s": pos_f,
            "idempotency_ttl_s": pos_i,
            "key_provider": str,
            "local_master_key_file": optional_str,
            "kms_key_id": optional_str,
            "kms_endpoint": optional_str,
            "log_level": upper_str,
            "fence_cache_s": pos_f,
            "transfer_key_file": optional_str,
            "transfer_max_body_bytes": pos_i,
        }
        settings = ConfigSource("PROFILE_STORE_", environ).load(cls, casts)
        if not 3 <= len(settings.table) <= 255:
            raise ConfigError("setting 'table' (PROFILE_STORE_TABLE) must be 3-255 characters")
        if settings.idempotency_ttl_s < 600:
            raise ConfigError(
                "setting 'idempotency_ttl_s' (PROFILE_STORE_IDEMPOTENCY_TTL_S) must be at least "
                "600: an Idempotency-Key must outlive DynamoDB's 10-minute token window"
            )
        if settings.fence_cache_s > 1.0:
            raise ConfigError(
                "setting 'fence_cache_s' (PROFILE_STORE_FENCE_CACHE_S) must be at most 1: "
                "after a move's flip the source must stop serving reads within a second"
            )
        if settings.key_provider not in {"local", "kms"}:
            raise ConfigError("setting 'key_provider' (PROFILE_STORE_KEY_PROVIDER): local or kms")
        if settings.key_provider == "kms" and not settings.kms_key_id:
            raise ConfigError("key_provider=kms needs PROFILE_STORE_KMS_KEY_ID")
        if settings.key_provider == "local" and not settings.local_master_key_file:
            raise ConfigError(
                "key_provider=local needs setting 'local_master_key_file' "
                "(PROFILE_STORE_LOCAL_MASTER_KEY_FILE); make one with "
                "'profile-store generate-local-key PATH' (dev/tests only; production uses kms)"
            )
        return settings

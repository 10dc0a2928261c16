"""Profile System settings: one frozen dataclass, read once at start, validated with clear messages.

Each setting comes from, in order: the environment variable ``PROFILE_STORE_<NAME>``, the TOML
file named by ``PROFILE_STORE_CONFIG`` (top-level keys, lower-case names), the default. A bad or
missing value stops the start with a ``ConfigError`` naming the setting and its env var.

``ConfigSource`` is the small env+TOML reader with casts (in the spirit of starlette's
``config.py``); the edge reuses it with its own prefix.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
D = TypeVar("D")

_UNSET: Any = object()
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")


class ConfigError(ValueError):
    """Configuration is invalid; the message names the setting and how to set it."""


def _to_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


class ConfigSource:
    """Reads typed settings from env vars (``{prefix}NAME``) and an optional TOML file."""

    def __init__(self, prefix: str, environ: Mapping[str, str] | None = None) -> None:
        self.prefix = prefix
        self.environ = os.environ if environ is None else environ
        self.file_values: dict[str, Any] = {}
        path = self.environ.get(f"{prefix}CONFIG")
        if path:
            try:
                with Path(path).open("rb") as f:
                    self.file_values = tomllib.load(f)
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"{prefix}CONFIG={path}: cannot read TOML ({exc})") from None

    def env_name(self, name: str) -> str:
        return f"{self.prefix}{name.upper()}"

    def get(self, name: str, cast: Callable[[Any], T], default: Any = _UNSET) -> T:
        env = self.env_name(name)
        if env in self.environ:
            raw: Any = self.environ[env]
        elif name in self.file_values:
            raw = self.file_values[name]
        elif default is not _UNSET:
            return default  # type: ignore[no-any-return]
        else:
            raise ConfigError(f"setting {name!r} is required: set {env} or {name} in the file")
        try:
            if cast is bool and isinstance(raw, str):
                return _to_bool(raw)  # type: ignore[return-value]
            return cast(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"setting {name!r} ({env}) is invalid: {exc}") from None

    def load(self, cls: type[D], casts: Mapping[str, Callable[[Any], Any]], **given: Any) -> D:
        """Build the settings dataclass ``cls``: every field not in ``given`` is read with its
        cast from ``casts``, its default being the field's own (no second copy to drift)."""
        values = dict(given)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in values:
                default = _UNSET if f.default is dataclasses.MISSING else f.default
                values[f.name] = self.get(f.name, casts[f.name], default)
        return cls(**values)

    def raw_table(self, name: str) -> dict[str, Any]:
        """A TOML table (for structured settings such as region pools); empty if absent."""
        value = self.file_values.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"setting {name!r} in {self.prefix}CONFIG must be a table")
        return value


def positive(kind: Callable[[Any], T]) -> Callable[[Any], T]:
    def cast(raw: Any) -> T:
        value = kind(raw)
        if value <= 0:  # type: ignore[operator]
            raise ValueError(f"must be > 0, got {value}")
        return value

    return cast


def region_name(raw: Any) -> str:
    value = str(raw).strip()
    if not _REGION.match(value):
        raise ValueError(f"{value!r} is not an AWS region name such as eu-west-1")
    return value


def optional_str(raw: Any) -> str | None:
    return str(raw) or None


def upper_str(raw: Any) -> str:
    return str(raw).upper()


def secret_bytes(raw: Any) -> bytes:
    value = str(raw)
    if len(value) < 16:
        raise ValueError("secret must be at least 16 characters")
    return value.encode()


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
    key_provider: str = "local"
    local_master_key_file: str | None = None
    kms_key_id: str | None = None
    kms_endpoint: str | None = None
    log_level: str = "INFO"

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
            "key_provider": str,
            "local_master_key_file": optional_str,
            "kms_key_id": optional_str,
            "kms_endpoint": optional_str,
            "log_level": upper_str,
        }
        settings = ConfigSource("PROFILE_STORE_", environ).load(cls, casts)
        if not 3 <= len(settings.table) <= 255:
            raise ConfigError("setting 'table' (PROFILE_STORE_TABLE) must be 3-255 characters")
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

"""The settings reader both processes use: env vars, then a TOML file, then defaults, with casts.

``ConfigSource(prefix)`` reads ``{prefix}NAME`` from the environment, then top-level keys of the
TOML file named by ``{prefix}CONFIG`` (lower-case names), then the field's default, and casts
each value (in the spirit of starlette's ``config.py``). A bad or missing value is a
``ConfigError`` naming the setting and its env var, so a process refuses to start with a
message an operator can act on. Each package keeps its own frozen settings dataclass
(``profile_store.config.StoreSettings``, ``edge_router.config.EdgeSettings``) and loads it
with ``ConfigSource.load``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .protocol import REGION_PATTERN

__all__ = [
    "ConfigError",
    "ConfigSource",
    "optional_str",
    "positive",
    "region_name",
    "secret_bytes",
    "upper_str",
]

T = TypeVar("T")
D = TypeVar("D")

_UNSET: Any = object()


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
            if f.init and f.name not in values:  # (a field derived from the others: not read)
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
    if not REGION_PATTERN.match(value):
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

"""The structured settings of the edge: region pools and user-token issuers.

Each is a table of tables, from the TOML file (``[regions."<name>"]``,
``[token_issuers."<name>"]``) or, when set, from an env var holding the same structure as JSON
(``EDGE_REGIONS_JSON``, ``EDGE_TOKEN_ISSUERS_JSON``). ``config.EdgeSettings`` reads them with
``regions`` and ``issuers``; every error names the setting.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarl import URL

from residency_contract.settings import ConfigError, ConfigSource, region_name, secret_bytes


def _tables(
    src: ConfigSource, environ: Mapping[str, str], setting: str, env_var: str
) -> Mapping[str, Any]:
    """The setting's table of tables: the JSON in ``env_var`` when set, else the TOML's."""
    raw_json = environ.get(env_var)
    if not raw_json:
        return src.raw_table(setting)
    try:
        table = json.loads(raw_json)
    except ValueError as exc:
        raise ConfigError(f"setting {setting!r} ({env_var}) is not JSON: {exc}") from None
    if not isinstance(table, dict):
        raise ConfigError(f"setting {setting!r} ({env_var}) must be an object")
    return table


_INSTANCE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class InstanceSettings:
    name: str
    url: str  # scheme://host:port, no path


@dataclass(frozen=True, slots=True)
class RegionSettings:
    name: str
    instances: tuple[InstanceSettings, ...]
    assertion_secret: bytes
    table: str
    dynamodb_endpoint: str | None = None


# Signature algorithms an issuer may allow: asymmetric only. "none" and the HMAC family are
# never accepted: with a public key set, an HS* token would be "signed" with public material.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_CLAIM = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class IssuerSettings:
    """One identity provider whose user tokens the edge accepts (``token_issuers``)."""

    name: str
    issuer: str  # the tokens' iss, exactly
    audiences: tuple[str, ...]
    jwks_file: str | None = None
    jwks_url: str | None = None
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    account_claim: str = "account"
    user_claim: str = "userId"


def _secret_env(region: str) -> str:
    return "EDGE_REGION_SECRET_" + region.upper().replace("-", "_")


def _instance(region: str, index: int, raw: Any) -> InstanceSettings:
    where = f"regions.{region}.instances[{index}]"
    if isinstance(raw, Mapping):
        url, name = raw.get("url"), raw.get("name")
    else:
        url, name = raw, None
    if not isinstance(url, str):
        raise ConfigError(f"setting {where!r} must be a URL string or a table with url=")
    parsed = URL(url)
    if parsed.scheme not in {"http", "https"} or not parsed.host or parsed.port is None:
        raise ConfigError(f"setting {where!r}: {url!r} must be http(s)://host:port")
    if parsed.path not in {"", "/"} or parsed.query_string or parsed.fragment:
        raise ConfigError(f"setting {where!r}: {url!r} must not carry a path or query")
    base = f"{parsed.scheme}://{parsed.host}:{parsed.port}"
    name = str(name) if name is not None else f"{parsed.host}:{parsed.port}"
    if not _INSTANCE_NAME.match(name):
        raise ConfigError(f"setting {where!r}: instance name {name!r} must match [A-Za-z0-9_.:-]")
    return InstanceSettings(name=name, url=base)


def regions(src: ConfigSource, environ: Mapping[str, str]) -> tuple[RegionSettings, ...]:
    table = _tables(src, environ, "regions", "EDGE_REGIONS_JSON")
    if not table:
        raise ConfigError(
            "setting 'regions' is required: [regions.\"<region>\"] tables in EDGE_CONFIG "
            "or EDGE_REGIONS_JSON"
        )
    regions = []
    seen_names: set[str] = set()
    for raw_name, spec in table.items():
        try:
            name = region_name(raw_name)
        except ValueError as exc:
            raise ConfigError(f"setting 'regions': {exc}") from None
        if not isinstance(spec, Mapping):
            raise ConfigError(f"setting 'regions.{name}' must be a table")
        instances_raw = spec.get("instances")
        if not isinstance(instances_raw, list) or not instances_raw:
            raise ConfigError(f"setting 'regions.{name}.instances' must be a non-empty list")
        instances = tuple(_instance(name, i, raw) for i, raw in enumerate(instances_raw))
        for inst in instances:
            if inst.name in seen_names:
                raise ConfigError(f"setting 'regions.{name}.instances': name {inst.name!r} repeats")
            seen_names.add(inst.name)
        secret_raw = environ.get(_secret_env(name), spec.get("assertion_secret"))
        if secret_raw is None:
            raise ConfigError(
                f"setting 'regions.{name}.assertion_secret' is required "
                f"(or env {_secret_env(name)})"
            )
        try:
            secret = secret_bytes(secret_raw)
        except ValueError as exc:
            raise ConfigError(f"setting 'regions.{name}.assertion_secret': {exc}") from None
        table_name = spec.get("table")
        if not isinstance(table_name, str) or not 3 <= len(table_name) <= 255:
            raise ConfigError(f"setting 'regions.{name}.table' must be a 3-255 character name")
        endpoint = spec.get("dynamodb_endpoint") or None
        if endpoint is not None and not str(endpoint).startswith(("http://", "https://")):
            raise ConfigError(f"setting 'regions.{name}.dynamodb_endpoint' must be an http(s) URL")
        regions.append(
            RegionSettings(
                name=name,
                instances=instances,
                assertion_secret=secret,
                table=table_name,
                dynamodb_endpoint=str(endpoint) if endpoint else None,
            )
        )
    return tuple(regions)


def _str_list(where: str, raw: Any) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(f"setting {where!r} must be a non-empty string or list of strings")
    return tuple(items)


def _issuer(name: str, spec: Any) -> IssuerSettings:
    where = f"token_issuers.{name}"
    if not isinstance(spec, Mapping):
        raise ConfigError(f"setting {where!r} must be a table")
    iss = spec.get("issuer")
    if not isinstance(iss, str) or not iss:
        raise ConfigError(f"setting '{where}.issuer' (the tokens' iss) is required")
    raw_aud = spec.get("audiences", spec.get("audience"))
    if raw_aud is None:
        raise ConfigError(f"setting '{where}.audiences' is required")
    audiences = _str_list(f"{where}.audiences", raw_aud)
    jwks_file, jwks_url = spec.get("jwks_file") or None, spec.get("jwks_url") or None
    if (jwks_file is None) == (jwks_url is None):
        raise ConfigError(f"setting {where!r}: exactly one of jwks_file or jwks_url")
    if jwks_file is not None and not Path(str(jwks_file)).is_file():
        raise ConfigError(f"setting '{where}.jwks_file': {jwks_file} is not a readable file")
    if jwks_url is not None and not str(jwks_url).startswith(("http://", "https://")):
        raise ConfigError(f"setting '{where}.jwks_url' must be an http(s) URL")
    algorithms = _str_list(f"{where}.algorithms", spec.get("algorithms", ["RS256", "ES256"]))
    refused = set(algorithms) - ASYMMETRIC_ALGORITHMS
    if refused:
        raise ConfigError(
            f"setting '{where}.algorithms': {sorted(refused)} not allowed; asymmetric only "
            f"({', '.join(sorted(ASYMMETRIC_ALGORITHMS))})"
        )
    claims = {}
    for claim, default in (("account_claim", "account"), ("user_claim", "userId")):
        value = spec.get(claim, default)
        if not isinstance(value, str) or not _CLAIM.match(value):
            raise ConfigError(f"setting '{where}.{claim}' must be a claim name")
        claims[claim] = value
    return IssuerSettings(
        name=name,
        issuer=iss,
        audiences=audiences,
        jwks_file=str(jwks_file) if jwks_file else None,
        jwks_url=str(jwks_url) if jwks_url else None,
        algorithms=algorithms,
        **claims,
    )


def issuers(src: ConfigSource, environ: Mapping[str, str]) -> tuple[IssuerSettings, ...]:
    table = _tables(src, environ, "token_issuers", "EDGE_TOKEN_ISSUERS_JSON")
    return tuple(_issuer(str(name), spec) for name, spec in table.items())

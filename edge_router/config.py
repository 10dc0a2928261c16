"""Edge settings: one frozen dataclass read once at start; bad config stops the start.

Scalar settings come from ``EDGE_<NAME>`` env vars, then top-level keys of the TOML file named
by ``EDGE_CONFIG``, then defaults (``residency_contract.settings.ConfigSource`` does the reading).
Region pools are structured, so they come from the TOML table ``[regions."<name>"]`` or, when
set, from ``EDGE_REGIONS_JSON`` holding the same structure::

    [regions."eu-west-1"]
    instances = ["http://127.0.0.1:8101", "http://127.0.0.1:8102"]   # or {name=, url=} tables
    assertion_secret = "..."        # or env EDGE_REGION_SECRET_EU_WEST_1 (wins over the file)
    table = "profiles"              # the region's Profile System table (registry set-region)
    dynamodb_endpoint = "http://127.0.0.1:8000"   # optional

User-token issuers (``VtexIdclientAutCookie``, ``user_token.py``) are tables too, from
``[token_issuers."<name>"]`` or ``EDGE_TOKEN_ISSUERS_JSON``; none configured = app keys only::

    [token_issuers."vtex-id"]
    issuer = "https://id.example.com"   # the tokens' iss
    audiences = ["profile-system"]      # accepted aud values
    jwks_url = "https://id.example.com/.well-known/jwks.json"   # or jwks_file = "/path"
    algorithms = ["RS256", "ES256"]     # asymmetric only (default these two)
    account_claim = "account"           # the claim naming the account (default)
    user_claim = "userId"               # the claim naming the user id (default)

Every error names the setting and how to set it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from residency_contract.settings import (
    ConfigError,
    ConfigSource,
    optional_str,
    positive,
    region_name,
    upper_str,
)

from .config_tables import (
    InstanceSettings,
    IssuerSettings,
    RegionSettings,
    issuers,
    regions,
)

__all__ = [
    "ConfigError",
    "EdgeSettings",
    "InstanceSettings",
    "IssuerSettings",
    "RegionSettings",
    "Timeouts",
]

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,62})(\.[a-z0-9][a-z0-9-]{0,62})*$")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Every time bound on the edge's HTTP, in seconds, as one value (``EdgeSettings.timeouts``,
    built from the ``*_timeout_s`` settings and checked with them)::

        connect       an upstream TCP connect                                  (-> 502/503)
        read          the longest a store may stay silent within an answer    (-> 504)
        total         one request, its head to the last byte of its answer, every attempt
                      included                           (-> 504; 408 if its body was late)
        idle          a pooled socket to a store unused this long is closed; well under
                      aiohttp's server keep-alive (75 s), so the store rarely closes a socket
                      the edge is about to reuse (not a setting)
        request_head  a request head must arrive whole within this of its first byte (-> 408)
        request_body  the longest pause between body bytes of a request          (-> 408)
        send          the longest an answer may wait for a client that does not read it
        keepalive     an idle client connection is closed after this
    """

    connect: float = 1.0
    read: float = 10.0
    total: float = 30.0
    idle: float = 30.0
    request_head: float = 30.0
    request_body: float = 30.0
    send: float = 30.0
    keepalive: float = 75.0


def _suffixes(raw: Any) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    out = []
    for item in items:
        value = str(item).strip().lower().strip(".")
        if not value:
            continue
        if not _HOSTNAME.match(value):
            raise ValueError(f"{value!r} is not a host name")
        out.append(value)
    if not out:
        raise ValueError("at least one host suffix is needed")
    # Longest first, so "a.b.example.com" picks the most specific suffix.
    return tuple(sorted(set(out), key=len, reverse=True))


def _non_negative(raw: Any) -> float:
    value = float(raw)
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"{raw!r} must be >= 0")
    return value


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    regions: tuple[RegionSettings, ...]
    host: str = "0.0.0.0"  # noqa: S104 (the edge is the public entry point)
    port: int = 8080
    admin_host: str = "0.0.0.0"  # noqa: S104
    admin_port: int = 9090
    host_suffixes: tuple[str, ...] = ("vtexcommercestable.com.br", "localhost")
    registry_table: str = "account-registry"
    registry_endpoint: str | None = None
    registry_region: str = "us-east-1"
    registry_connect_timeout_s: float = 1.0
    registry_read_timeout_s: float = 2.0
    registry_max_attempts: int = 2
    # The circuit breaker around the registry (breaker.py): this many failed reads in a row
    # open it; open, no read starts for registry_breaker_open_s, then one probe read.
    registry_breaker_failures: int = 3
    registry_breaker_open_s: float = 5.0
    # The longest a request waits for a registry read (an account or key it has no usable
    # answer for): then 503 registry_unavailable, and the read counts as failed for the breaker.
    registry_wait_s: float = 1.0
    # The registry's change log (registry/poller.py): read every registry_poll_interval_s (0: not
    # at all, the cache TTL alone bounds how old an answer is), from the last poll minus
    # registry_change_overlap_s (writers' clock skew and commit latency); a failing read backs
    # off, doubling up to registry_poll_max_backoff_s. Each change is read once more
    # registry_change_settle_s later (0: not): a global table's replica may receive the change
    # item before the items the change wrote.
    registry_poll_interval_s: float = 0.25
    registry_change_overlap_s: float = 10.0
    registry_poll_max_backoff_s: float = 2.0
    registry_change_settle_s: float = 2.0
    cache_size: int = 10_000
    cache_ttl_s: float = 30.0
    negative_ttl_s: float = 5.0
    # How long a known answer may be used past its TTL while the registry is failing, and
    # (stale_while_revalidate_s, at most as long; unset = the same) served at once while one
    # background read refreshes it although the registry answers.
    stale_if_error_s: float = 300.0
    stale_while_revalidate_s: float | None = None
    # The HTTP timeouts, as set (see ``Timeouts`` for each); the code reads ``timeouts``.
    connect_timeout_s: float = 1.0
    read_timeout_s: float = 10.0
    total_timeout_s: float = 30.0
    request_head_timeout_s: float = 30.0
    request_body_timeout_s: float = 30.0
    send_timeout_s: float = 30.0
    keepalive_timeout_s: float = 75.0
    max_body_bytes: int = 256 * 1024
    buffer_body_bytes: int = 64 * 1024
    max_concurrent_requests: int = 1024
    upstream_pool_limit: int = 100
    rate_limit_rps: float = 200.0
    rate_limit_burst: int = 400
    health_interval_s: float = 2.0
    health_timeout_s: float = 1.0
    # Probes failed in a row before an instance is down: one slow probe (its DynamoDB busy
    # for a second) must not take a whole region out while its requests still succeed.
    health_failures_to_down: int = 2
    eject_cooldown_s: float = 5.0
    eject_consecutive_5xx: int = 3
    max_attempts: int = 2
    retry_after_s: int = 1
    shutdown_timeout_s: float = 10.0
    workers: int = 1
    backlog: int = 2048  # capped by the kernel at net.core.somaxconn (server.py warns)
    access_log: bool = True
    log_level: str = "INFO"
    via: str = "edge-router"
    # The public listener: "raw" (wire.EdgeRunner, the production one) or "web" (aiohttp.web's
    # own server running the same pipeline; kept so the bench can measure one against the other).
    listener: str = "raw"
    # User tokens (user_token.py): the issuers, the clock skew allowed on exp/nbf, the
    # verification cache (a token is re-verified at least every token_cache_ttl_s), and the
    # key sets' fetch bound, refresh rate limit (an unknown kid refreshes at most this often)
    # and age (a set older than this is refreshed before the next verification).
    token_issuers: tuple[IssuerSettings, ...] = ()
    token_leeway_s: float = 30.0
    token_cache_size: int = 10_000
    token_cache_ttl_s: float = 60.0
    jwks_timeout_s: float = 2.0
    jwks_refresh_min_s: float = 30.0
    jwks_max_age_s: float = 300.0
    timeouts: Timeouts = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "timeouts",
            Timeouts(
                connect=self.connect_timeout_s,
                read=self.read_timeout_s,
                total=self.total_timeout_s,
                request_head=self.request_head_timeout_s,
                request_body=self.request_body_timeout_s,
                send=self.send_timeout_s,
                keepalive=self.keepalive_timeout_s,
            ),
        )

    def region(self, name: str) -> RegionSettings | None:
        for r in self.regions:
            if r.name == name:
                return r
        return None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EdgeSettings:
        import os

        env = os.environ if environ is None else environ
        src = ConfigSource("EDGE_", env)
        pos_f, pos_i = positive(float), positive(int)
        casts: dict[str, Callable[[Any], Any]] = {
            "host": str,
            "port": pos_i,
            "admin_host": str,
            "admin_port": pos_i,
            "host_suffixes": _suffixes,
            "registry_table": str,
            "registry_endpoint": optional_str,
            "registry_region": region_name,
            "registry_connect_timeout_s": pos_f,
            "registry_read_timeout_s": pos_f,
            "registry_max_attempts": pos_i,
            "registry_breaker_failures": pos_i,
            "registry_breaker_open_s": pos_f,
            "registry_wait_s": pos_f,
            "registry_poll_interval_s": _non_negative,
            "registry_change_overlap_s": pos_f,
            "registry_poll_max_backoff_s": pos_f,
            "registry_change_settle_s": _non_negative,
            "cache_size": pos_i,
            "cache_ttl_s": pos_f,
            "negative_ttl_s": pos_f,
            "stale_if_error_s": pos_f,
            "stale_while_revalidate_s": _non_negative,
            "connect_timeout_s": pos_f,
            "read_timeout_s": pos_f,
            "total_timeout_s": pos_f,
            "request_head_timeout_s": pos_f,
            "request_body_timeout_s": pos_f,
            "send_timeout_s": pos_f,
            "keepalive_timeout_s": pos_f,
            "max_body_bytes": pos_i,
            "buffer_body_bytes": pos_i,
            "max_concurrent_requests": pos_i,
            "upstream_pool_limit": pos_i,
            "rate_limit_rps": pos_f,
            "rate_limit_burst": pos_i,
            "health_interval_s": pos_f,
            "health_timeout_s": pos_f,
            "health_failures_to_down": pos_i,
            "eject_cooldown_s": pos_f,
            "eject_consecutive_5xx": pos_i,
            "max_attempts": pos_i,
            "retry_after_s": pos_i,
            "shutdown_timeout_s": pos_f,
            "workers": pos_i,
            "backlog": pos_i,
            "access_log": bool,
            "log_level": upper_str,
            "via": str,
            "listener": str,
            "token_leeway_s": _non_negative,
            "token_cache_size": pos_i,
            "token_cache_ttl_s": pos_f,
            "jwks_timeout_s": pos_f,
            "jwks_refresh_min_s": _non_negative,
            "jwks_max_age_s": pos_f,
        }
        s = src.load(cls, casts, regions=regions(src, env), token_issuers=issuers(src, env))
        s.validate()
        return s

    def validate(self) -> None:
        """Cross-setting checks; also run by tests that build settings directly."""
        if not self.regions:
            raise ConfigError("setting 'regions' must name at least one region")
        if not 3 <= len(self.registry_table) <= 255:
            raise ConfigError("setting 'registry_table' (EDGE_REGISTRY_TABLE): 3-255 characters")
        if self.buffer_body_bytes > self.max_body_bytes:
            raise ConfigError(
                "setting 'buffer_body_bytes' (EDGE_BUFFER_BODY_BYTES) must be <= max_body_bytes"
            )
        if self.total_timeout_s < self.connect_timeout_s:
            raise ConfigError(
                "setting 'total_timeout_s' (EDGE_TOTAL_TIMEOUT_S) must be >= connect_timeout_s"
            )
        if self.negative_ttl_s > self.cache_ttl_s:
            raise ConfigError(
                "setting 'negative_ttl_s' (EDGE_NEGATIVE_TTL_S) must be <= cache_ttl_s"
            )
        swr = self.stale_while_revalidate_s
        if swr is not None and not 0 <= swr <= self.stale_if_error_s:
            raise ConfigError(
                "setting 'stale_while_revalidate_s' (EDGE_STALE_WHILE_REVALIDATE_S) must be "
                "between 0 and stale_if_error_s"
            )
        if self.registry_breaker_failures < 1 or self.registry_breaker_open_s <= 0:
            raise ConfigError(
                "settings 'registry_breaker_failures' (EDGE_REGISTRY_BREAKER_FAILURES) must be "
                ">= 1 and 'registry_breaker_open_s' (EDGE_REGISTRY_BREAKER_OPEN_S) > 0"
            )
        poll = self.registry_poll_interval_s
        if not 0 <= poll <= 60:
            raise ConfigError(
                "setting 'registry_poll_interval_s' (EDGE_REGISTRY_POLL_INTERVAL_S) must be "
                "between 0 (off) and 60 seconds; at most 0.5 keeps registry changes within 1 s"
            )
        if poll and self.registry_change_overlap_s < max(1.0, 2 * poll):
            raise ConfigError(
                "setting 'registry_change_overlap_s' (EDGE_REGISTRY_CHANGE_OVERLAP_S) must be "
                ">= 1 s and >= twice registry_poll_interval_s (it absorbs writers' clock skew)"
            )
        if not 0 <= self.registry_change_settle_s <= 60:
            raise ConfigError(
                "setting 'registry_change_settle_s' (EDGE_REGISTRY_CHANGE_SETTLE_S) must be "
                "between 0 (no second read) and 60 seconds"
            )
        if poll and self.registry_poll_max_backoff_s < poll:
            raise ConfigError(
                "setting 'registry_poll_max_backoff_s' (EDGE_REGISTRY_POLL_MAX_BACKOFF_S) must "
                "be >= registry_poll_interval_s"
            )
        if self.rate_limit_burst < 1:
            raise ConfigError("setting 'rate_limit_burst' (EDGE_RATE_LIMIT_BURST) must be >= 1")
        if self.listener not in {"raw", "web"}:
            raise ConfigError("setting 'listener' (EDGE_LISTENER): raw or web")
        if self.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError("setting 'log_level' (EDGE_LOG_LEVEL): DEBUG, INFO, WARNING, ERROR")
        if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", self.via):
            raise ConfigError("setting 'via' (EDGE_VIA) must be a short token")
        names = [r.name for r in self.regions]
        if len(set(names)) != len(names):
            raise ConfigError("setting 'regions' names a region twice")
        issuers = [i.issuer for i in self.token_issuers]
        if len(set(issuers)) != len(issuers):
            raise ConfigError("setting 'token_issuers' names the same issuer (iss) twice")

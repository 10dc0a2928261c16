"""The bench's accounts (one per region, with API keys) and the request mix wrk sends for them."""

from __future__ import annotations

from dataclasses import dataclass

from bench.wrk import RequestSpec

PROFILE_PATH = "/api/storage/profile-system/profiles/{id}"


@dataclass(frozen=True)
class Account:
    name: str
    region: str
    profile_id: str
    app_key: str
    app_token: str

    @property
    def host(self) -> str:
        return f"{self.name}.localhost"


DEFAULT_ACCOUNTS = (
    Account(
        "acme-us",
        "us-east-1",
        "7f3c2a10-0000-4000-8000-000000000001",
        "vtexappkey-acme-us-bench",
        "bench-token-acme-us-0123456789",
    ),
    Account(
        "acme-eu",
        "eu-west-1",
        "7f3c2a10-0000-4000-8000-000000000002",
        "vtexappkey-acme-eu-bench",
        "bench-token-acme-eu-0123456789",
    ),
)


def request_mix(
    accounts: tuple[Account, ...] = DEFAULT_ACCOUNTS, with_credentials: bool = True
) -> list[RequestSpec]:
    """``GET /api/storage/profile-system/profiles/<id>`` alternating the accounts (by Host)."""
    mix = []
    for a in accounts:
        headers = {"Host": a.host}
        if with_credentials:
            headers["X-VTEX-API-AppKey"] = a.app_key
            headers["X-VTEX-API-AppToken"] = a.app_token
        mix.append(
            RequestSpec(
                path=PROFILE_PATH.format(id=a.profile_id),
                headers=headers,
                expect_region=a.region,
                label=a.name,
            )
        )
    return mix

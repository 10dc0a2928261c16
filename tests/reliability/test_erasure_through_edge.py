"""Erasure as a client makes it: through the edge, to the account's home region only."""

from __future__ import annotations

import pytest

from .conftest import STATS, Client, Pii
from .stack import ACCOUNT_OF, API, REGIONS, ReliabilityStack, auth_headers

pytestmark = pytest.mark.slow

EU = "eu-west-1"
ACCOUNT = ACCOUNT_OF[EU]
RIGHTS = "/api/user-rights"


def region_requests(stack: ReliabilityStack, region: str) -> float:
    """Requests counted by one region's stores themselves, whatever the operation."""
    return sum(n for sp in stack.stores[region] for n in stack.store_metrics(sp).values())


async def test_erasure_is_routed_to_the_home_region_and_erases(
    stack: ReliabilityStack, client: Client, pii: Pii
) -> None:
    STATS.fault("erasure through the edge")
    h = auth_headers(ACCOUNT, host=False)  # the rights API is called on a shared host, with ?an=
    profile = pii.profile()
    created = await client.call("POST", f"{API}/profiles?an={ACCOUNT}", headers=h, json=profile)
    assert created.status == 201, created.body
    pid = created.body["id"]
    others = {r: region_requests(stack, r) for r in REGIONS if r != EU}

    erased = await client.call(
        "POST",
        f"{RIGHTS}/createAndProcessDeleteUserData?an={ACCOUNT}",
        headers=h,
        json={"email": profile["email"]},
    )
    assert erased.status == 200, erased.body
    assert erased.headers["X-Data-Region"] == EU
    assert erased.body["status"] == "Completed" and erased.body["requestType"] == "Removal"
    assert erased.body["email"] != profile["email"]  # answered masked

    gone = await client.call("GET", f"{API}/profiles/{pid}?an={ACCOUNT}", headers=h, expect=(404,))
    assert gone.status == 404
    status = await client.call(
        "GET", f"{RIGHTS}/requests/{erased.body['uuid']}?an={ACCOUNT}", headers=h
    )
    assert status.status == 200 and status.body["status"] == "Completed", status.body
    again = await client.call(
        "POST", f"{API}/profiles?an={ACCOUNT}", headers=h, json=profile, expect=(409,)
    )
    assert (again.status, again.body["error"]) == (409, "subject_suppressed")
    # nothing of this went to another region: their stores counted no request meanwhile
    assert {r: region_requests(stack, r) for r in others} == others

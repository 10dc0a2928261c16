"""The stores' transfer endpoints (``residency_contract.protocol.transfer_path``), called by
the mover directly.

One ``RegionStores`` per region, from the edge's settings: its store instances and its
assertion secret. Every request is signed for that region with the ``move`` role
(``principal mover:{job}``), the signature covering method and target like the edge's.
Requests take the region's instances in turn (an instance that just failed is passed over). A
5xx answer, a refused or broken connection or a timeout is retried on the region's next
instance after a backoff (bounded attempts, each with a bounded timeout); a 4xx answer is the
store's decision and is raised at once as ``StoreRefused`` with its stable code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from edge_router.config import RegionSettings
from residency_contract.assertion import MOVER_ROLE, sign
from residency_contract.protocol import ASSERTION_HEADER, TRANSFER_PREFIX, transfer_path

log = logging.getLogger("residency_ops.move")
MOVE_ROLES = frozenset({MOVER_ROLE})


class StoreRefused(Exception):
    """The store answered 4xx: ``status`` and its JSON ``error`` code."""

    def __init__(self, region: str, op: str, status: int, code: str) -> None:
        super().__init__(f"{region} store refused {op}: {status} {code}")
        self.status = status
        self.code = code


class StoreUnavailable(Exception):
    """No instance of the region answered within the attempts."""


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int = 6
    backoff_s: float = 0.2  # doubled each attempt, with jitter, capped by max_backoff_s
    max_backoff_s: float = 3.0
    timeout_s: float = 30.0  # one attempt, connect to last byte
    connect_timeout_s: float = 2.0
    skip_failed_s: float = 10.0  # an instance that failed is passed over this long


class RegionStores:
    def __init__(
        self,
        region: RegionSettings,
        session: aiohttp.ClientSession,
        *,
        job_id: str,
        retry: Retry = Retry(),
    ) -> None:
        self.region = region
        self.name = region.name
        self._session = session
        self._principal = f"mover:{job_id}"
        self._retry = retry
        self._next = 0  # the instance the next request starts at (round robin)
        self._failed_at: dict[int, float] = {}  # instance index -> its last failure (monotonic)

    def _pick(self) -> int:
        """The next instance in turn, skipping one that failed within ``skip_failed_s``: the
        move's work is spread over the region's instances (each is one process), and a dead
        one costs one failed attempt, not one per call. All failed: the next in turn."""
        n = len(self.region.instances)
        now = time.monotonic()
        for k in range(n):
            i = (self._next + k) % n
            if now - self._failed_at.get(i, -1e9) > self._retry.skip_failed_s:
                break
        else:
            i = self._next % n
        self._next = i + 1
        return i

    async def call(
        self, method: str, account: str, op: str, body: Any = None, *, in_path: bool = True
    ) -> Any:
        """``method`` ``/_residency/transfer/{account}/{op}`` (``in_path`` False: without the
        account in the path, still signed for it) -> the JSON answer."""
        target = transfer_path(account, op) if in_path else f"{TRANSFER_PREFIX}/{op}"
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        r = self._retry
        timeout = aiohttp.ClientTimeout(total=r.timeout_s, connect=r.connect_timeout_s)
        last = ""
        for attempt in range(r.attempts):
            index = self._pick()
            instance = self.region.instances[index]
            headers = {
                ASSERTION_HEADER: sign(
                    self.region.assertion_secret,
                    account=account,
                    region=self.name,
                    principal=self._principal,
                    roles=MOVE_ROLES,
                    method=method,
                    target=target,
                ),
            }
            if data is not None:
                headers["Content-Type"] = "application/json"
            try:
                async with self._session.request(
                    method, instance.url + target, data=data, headers=headers, timeout=timeout
                ) as resp:
                    raw = await resp.read()
                    if resp.status < 400:
                        return json.loads(raw) if raw else None
                    code = _code(raw)
                    if resp.status < 500:
                        raise StoreRefused(self.name, op, resp.status, code)
                    last = f"{resp.status} {code}"
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                last = type(exc).__name__
            self._failed_at[index] = time.monotonic()
            if attempt + 1 < r.attempts:
                delay = min(r.max_backoff_s, r.backoff_s * 2**attempt) * (0.5 + random.random())
                log.warning(
                    "move: %s %s on %s failed (%s); retrying in %.1fs",
                    op,
                    self.name,
                    instance.name,
                    last,
                    delay,
                )
                await asyncio.sleep(delay)
        raise StoreUnavailable(f"{self.name} stores did not answer {op} ({last})")

    # -- the contract's endpoints --------------------------------------------------------------

    async def public_key(self, account: str) -> dict[str, Any]:
        # Signed for the account being moved: an assertion names one, and this is the one.
        return dict(await self.call("GET", account, "public-key", in_path=False))

    async def fence(self, account: str, state: str, generation: int, peer: str) -> Any:
        body = {"state": state, "generation": generation, "peer": peer}
        return await self.call("POST", account, "fence", body)

    async def changes_start(self, account: str) -> Any:
        return (await self.call("POST", account, "changes/start", {}))["checkpoint"]

    async def changes(self, account: str, checkpoint: Any) -> dict[str, Any]:
        return await self.call("POST", account, "changes", {"checkpoint": checkpoint})

    async def export(
        self, account: str, segment: int, total: int, cursor: str | None, limit: int, recipient: Any
    ) -> dict[str, Any]:
        body = {
            "segment": segment,
            "total_segments": total,
            "cursor": cursor,
            "limit": limit,
            "recipient": recipient,
        }
        return await self.call("POST", account, "export", body)

    async def export_keys(self, account: str, keys: list[list[str]], recipient: Any) -> Any:
        return await self.call(
            "POST", account, "export-keys", {"keys": keys, "recipient": recipient}
        )

    async def import_(self, account: str, items: list[Any], delete: list[list[str]]) -> Any:
        return await self.call("POST", account, "import", {"items": items, "delete": delete})

    async def digests(
        self, account: str, segment: int, total: int, cursor: str | None, limit: int
    ) -> dict[str, Any]:
        body = {"segment": segment, "total_segments": total, "cursor": cursor, "limit": limit}
        return await self.call("POST", account, "digests", body)

    async def digests_of(self, account: str, keys: list[list[str]]) -> dict[str, Any]:
        """The digests endpoint's keys form: ``digests`` and ``kinds`` of exactly these keys."""
        return dict(await self.call("POST", account, "digests", {"keys": keys}))

    async def purge(
        self, account: str, generation: int, role: str, cursor: str | None, limit: int
    ) -> tuple[dict[str, int], str | None]:
        """One bounded step of the purge: what it deleted, and the next step's cursor
        (``None``: the account is gone from this region)."""
        body = {"generation": generation, "role": role, "cursor": cursor, "limit": limit}
        out = await self.call("POST", account, "purge", body)
        return dict(out.get("deleted", {})), out.get("cursor")

    async def audit(
        self, account: str, event: str, generation: int, peer: str, counts: Any, job: str
    ) -> None:
        body = {
            "event": event,
            "generation": generation,
            "peer": peer,
            "counts": counts,
            "job": job,
        }
        await self.call("POST", account, "audit", body)


def _code(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return "non_json_answer"
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) and len(code) <= 64 else "unknown"

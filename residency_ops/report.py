"""Proof of residency: where every account's items are, against the registry's home region.

Each configured region's store table is scanned directly (a parallel Scan of ``segments``
segments per table, only the key attributes read), the way ``registry set-region``'s
``account_has_data`` reads it: the operator tools never import the store; the key forms are
``residency_contract.tables``. Items are classified by their partition key::

    A#{account}#...    the account's data (its kind is the next label: P, K, R, DK, AUDIT, ...)
    FENCE#{account}    a move's fence marker (state incoming|frozen|moved_out): not data
    MOVED#{account}    a move's record kept in the source after the purge: not data
    anything else      counted as ``other`` (no account's data, reported, never a finding)

An item of account A in a region that is not A's home in the registry is *foreign*; so is every
item of an account the registry does not know (it has no home). ``Findings.foreign_items`` > 0
is what makes ``residency-ops residency report`` exit 1. Nothing personal leaves here: account
names, region names, key labels and counts only.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from edge_router.config import RegionSettings
from edge_router.errors import RegistryError
from residency_contract.tables import (
    DATA_PREFIX,
    FENCE_PREFIX,
    MOVED_PREFIX,
    data_prefix,
    fence_pk,
    moved_pk,
)

DATA, FENCE, MOVED, OTHER = "data", "fence", "moved", "other"
PAGE_LIMIT = 1000  # items per Scan page: progress moves, pages stay well under 1 MB of keys


def classify(pk: str) -> tuple[str, str, str]:
    """(what, account, kind label) of one partition key; account "" for ``other``."""
    if pk.startswith(DATA_PREFIX):
        account, sep, rest = pk[len(DATA_PREFIX) :].partition("#")
        if sep and account:
            return DATA, account, rest.split("#", 1)[0] or "?"
    elif pk.startswith(FENCE_PREFIX):
        return FENCE, pk[len(FENCE_PREFIX) :], FENCE
    elif pk.startswith(MOVED_PREFIX):
        return MOVED, pk[len(MOVED_PREFIX) :], MOVED
    return OTHER, "", OTHER


@dataclass
class AccountFindings:
    account: str
    home: str | None  # None: not in the registry
    items: dict[str, int] = field(default_factory=dict)  # region -> data items
    kinds: dict[str, dict[str, int]] = field(default_factory=dict)  # region -> label -> n
    fences: dict[str, str] = field(default_factory=dict)  # region -> fence state
    moved: dict[str, int] = field(default_factory=dict)  # region -> MOVED# records

    @property
    def foreign(self) -> dict[str, int]:
        return {r: n for r, n in self.items.items() if r != self.home}

    @property
    def ok(self) -> bool:
        return not self.foreign

    def as_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "home": self.home,
            "regions": dict(sorted(self.items.items())),
            "foreign": dict(sorted(self.foreign.items())),
            "kinds": {r: dict(sorted(k.items())) for r, k in sorted(self.kinds.items())},
            "fences": dict(sorted(self.fences.items())),
            "moved_records": dict(sorted(self.moved.items())),
            "ok": self.ok,
        }


@dataclass
class Findings:
    accounts: dict[str, AccountFindings] = field(default_factory=dict)
    scanned: dict[str, int] = field(default_factory=dict)  # region -> items read
    other: dict[str, int] = field(default_factory=dict)  # region -> items of no account
    seconds: float = 0.0

    @property
    def foreign_by_region(self) -> dict[str, int]:
        out: Counter[str] = Counter({r: 0 for r in self.scanned})
        for acc in self.accounts.values():
            out.update(acc.foreign)
        return dict(sorted(out.items()))

    @property
    def foreign_items(self) -> int:
        return sum(self.foreign_by_region.values())

    def summary(self) -> dict[str, Any]:
        with_data = [a for a in self.accounts.values() if a.items]
        return {
            "summary": {
                "accounts": len(self.accounts),
                "accounts_with_data": len(with_data),
                "accounts_foreign": sum(1 for a in with_data if not a.ok),
                "accounts_unregistered": sum(1 for a in with_data if a.home is None),
                "foreign_items": self.foreign_items,
                "foreign_by_region": self.foreign_by_region,
                "items_scanned": dict(sorted(self.scanned.items())),
                "other_items": dict(sorted(self.other.items())),
                "seconds": round(self.seconds, 3),
                "ok": self.foreign_items == 0,
            }
        }


class _Tally:
    """What the segments of every region add up to (one event loop: no locking)."""

    def __init__(self, homes: Mapping[str, str], only: str | None) -> None:
        self.findings = Findings()
        self._homes = homes
        self._only = only
        for name, home in homes.items():
            if only is None or name == only:
                self.findings.accounts[name] = AccountFindings(name, home)

    def _account(self, name: str) -> AccountFindings:
        acc = self.findings.accounts.get(name)
        if acc is None:
            acc = self.findings.accounts[name] = AccountFindings(name, self._homes.get(name))
        return acc

    def add(self, region: str, items: Iterable[Mapping[str, Any]]) -> int:
        n = 0
        f = self.findings
        for item in items:
            n += 1
            what, name, label = classify(item.get("pk", {}).get("S", ""))
            if self._only is not None and name != self._only:
                continue
            if what == OTHER:
                f.other[region] = f.other.get(region, 0) + 1
                continue
            acc = self._account(name)
            if what == DATA:
                acc.items[region] = acc.items.get(region, 0) + 1
                kinds = acc.kinds.setdefault(region, {})
                kinds[label] = kinds.get(label, 0) + 1
            elif what == FENCE:
                acc.fences[region] = item.get("state", {}).get("S", "?")
            else:
                acc.moved[region] = acc.moved.get(region, 0) + 1
        f.scanned[region] = f.scanned.get(region, 0) + n
        return n


Progress = Callable[[str, int], None]  # (region, items read since the last call)


def _scan_args(table: str, only: str | None) -> dict[str, Any]:
    args: dict[str, Any] = {
        "TableName": table,
        # Keys only, plus the fence marker's state: the report never reads a document.
        "ProjectionExpression": "pk, #s",
        "ExpressionAttributeNames": {"#s": "state"},
        "Limit": PAGE_LIMIT,
    }
    if only is not None:
        args["FilterExpression"] = "begins_with(pk, :data) OR pk IN (:fence, :moved)"
        args["ExpressionAttributeValues"] = {
            ":data": {"S": data_prefix(only)},
            ":fence": {"S": fence_pk(only)},
            ":moved": {"S": moved_pk(only)},
        }
    return args


async def _scan_region(
    region: RegionSettings,
    tally: _Tally,
    *,
    segments: int,
    only: str | None,
    progress: Progress,
    timeout_s: float,
    on_total: Callable[[str, int | None], None],
) -> None:
    config = AioConfig(
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"max_attempts": 5, "mode": "adaptive"},  # a long scan rides out throttling
        max_pool_connections=max(10, segments),
    )
    try:
        async with get_session().create_client(
            "dynamodb",
            region_name=region.name,
            endpoint_url=region.dynamodb_endpoint,
            config=config,
        ) as client:
            described = await client.describe_table(TableName=region.table)
            on_total(region.name, described.get("Table", {}).get("ItemCount"))

            async def segment(i: int) -> None:
                args = {**_scan_args(region.table, only), "Segment": i, "TotalSegments": segments}
                while True:
                    page = await client.scan(**args)
                    progress(region.name, tally.add(region.name, page.get("Items", [])))
                    if "LastEvaluatedKey" not in page:
                        return
                    args["ExclusiveStartKey"] = page["LastEvaluatedKey"]

            await asyncio.gather(*(segment(i) for i in range(segments)))
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise RegistryError(f"cannot scan {region.name} table {region.table}: {code}") from exc
    except (BotoCoreError, OSError) as exc:
        raise RegistryError(
            f"cannot scan {region.name} table {region.table}: {type(exc).__name__}"
        ) from exc


async def scan(
    regions: Iterable[RegionSettings],
    homes: Mapping[str, str],
    *,
    only: str | None = None,
    segments: int = 4,
    progress: Progress = lambda _r, _n: None,
    on_total: Callable[[str, int | None], None] = lambda _r, _n: None,
    timeout_s: float = 10.0,
) -> Findings:
    """Scan every region's table (all at once, ``segments`` parallel segments each) and
    compare with ``homes`` (account -> home region from the registry). ``only``: one account."""
    started = time.monotonic()
    tally = _Tally(homes, only)
    regions = list(regions)
    for region in regions:
        tally.findings.scanned[region.name] = 0
    await asyncio.gather(
        *(
            _scan_region(
                r,
                tally,
                segments=segments,
                only=only,
                progress=progress,
                timeout_s=timeout_s,
                on_total=on_total,
            )
            for r in regions
        )
    )
    tally.findings.seconds = time.monotonic() - started
    return tally.findings


def write_metrics(findings: Findings, path: str) -> None:
    """The findings as a Prometheus textfile (node_exporter's textfile collector reads it)."""
    r = CollectorRegistry()
    foreign = Gauge(
        "residency_foreign_items",
        "Items of an account in a region that is not its registry home, at the last report",
        ["region"],
        registry=r,
    )
    items = Gauge("residency_items", "Account data items found per region", ["region"], registry=r)
    markers = Gauge(
        "residency_move_markers",
        "Move markers per region (FENCE#, MOVED#)",
        ["region", "kind"],
        registry=r,
    )
    by_region: dict[str, int] = defaultdict(int)
    fences: dict[str, int] = defaultdict(int)
    moved: dict[str, int] = defaultdict(int)
    for acc in findings.accounts.values():
        for region, n in acc.items.items():
            by_region[region] += n
        for region in acc.fences:
            fences[region] += 1
        for region, n in acc.moved.items():
            moved[region] += n
    for region in findings.scanned:
        foreign.labels(region).set(findings.foreign_by_region.get(region, 0))
        items.labels(region).set(by_region.get(region, 0))
        markers.labels(region, FENCE).set(fences.get(region, 0))
        markers.labels(region, MOVED).set(moved.get(region, 0))
    s = findings.summary()["summary"]
    for name, help_, value in (
        ("residency_report_accounts_scanned", "Accounts in the report", s["accounts"]),
        (
            "residency_report_accounts_foreign",
            "Accounts with a foreign item",
            s["accounts_foreign"],
        ),
        (
            "residency_report_accounts_unregistered",
            "Accounts with data but no registry entry",
            s["accounts_unregistered"],
        ),
        ("residency_report_duration_seconds", "How long the report took", findings.seconds),
        ("residency_report_last_run_timestamp_seconds", "When the report ended", time.time()),
    ):
        Gauge(name, help_, registry=r).set(value)
    write_to_textfile(path, r)

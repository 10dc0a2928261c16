"""``residency-ops residency report [--account A]``: prove where every account's data is.

Reads the registry (home regions) and scans every configured region's store table
(``report``), then prints one finding per account and a summary:

* stdout a terminal: a line per account and the summary, for people; otherwise JSON lines (one
  object per account, then ``{"summary": ...}``), for scripts.
* progress on stderr: a tqdm bar per region (items read, rate) on a terminal, otherwise a JSON
  line per region at most every ``PROGRESS_EVERY_S`` and at the end.
* ``--metrics-file PATH``: the findings as a Prometheus textfile (``residency_foreign_items``
  {region}, ``residency_report_accounts_scanned``, ...), for node_exporter's textfile collector.

Exit status: 0 no foreign item; 1 some item is outside its account's home region (or belongs
to an account the registry does not know); 2 the report could not be made (a table or the
registry unreadable): no proof either way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, TextIO

from edge_router.config import EdgeSettings
from edge_router.errors import RegistryError
from edge_router.resolve import valid_account

from ..registry_writer import RegistryWriter
from ..report import Findings, scan, write_metrics

PROGRESS_EVERY_S = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="residency_command", required=True)
    p = sub.add_parser("report", help="where each account's items are vs its home region")
    p.add_argument("--account", default=None, help="only this account")
    p.add_argument("--segments", type=int, default=4, help="parallel Scan segments per table")
    p.add_argument("--metrics-file", default=None, help="write the findings in Prometheus format")
    p.add_argument("--json", action="store_true", help="JSON lines even on a terminal")


class _Progress:
    """Items read per region: tqdm bars on a terminal, throttled JSON lines otherwise."""

    def __init__(self, regions: list[str], stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._counts = dict.fromkeys(regions, 0)
        self._last = dict.fromkeys(regions, 0.0)
        self._started = time.monotonic()
        self._bars: dict[str, Any] = {}
        if self._tty:
            from tqdm import tqdm  # the ``ops`` extra: only a terminal draws bars

            self._bars = {
                r: tqdm(desc=r, unit=" items", position=i, file=stream, dynamic_ncols=True)
                for i, r in enumerate(regions)
            }

    def total(self, region: str, approx: int | None) -> None:
        bar = self._bars.get(region)
        if bar is not None and approx:
            bar.total = approx  # DescribeTable's count: updated every few hours, an estimate
            bar.refresh()

    def __call__(self, region: str, n: int) -> None:
        self._counts[region] += n
        bar = self._bars.get(region)
        if bar is not None:
            bar.update(n)
            return
        now = time.monotonic()
        if now - self._last[region] >= PROGRESS_EVERY_S:
            self._last[region] = now
            self._line(region, now)

    def _line(self, region: str, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        n = self._counts[region]
        progress = {"region": region, "items": n, "items_per_s": round(n / elapsed, 1)}
        print(json.dumps({"progress": progress}), file=self._stream, flush=True)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        if not self._tty:
            now = time.monotonic()
            for region in self._counts:
                self._line(region, now)


def _text(findings: Findings, out: TextIO) -> None:
    for acc in sorted(findings.accounts.values(), key=lambda a: a.account):
        where = ", ".join(f"{r}: {n}" for r, n in sorted(acc.items.items())) or "no items"
        verdict = (
            "ok" if acc.ok else "FOREIGN " + ", ".join(f"{r}: {n}" for r, n in acc.foreign.items())
        )
        marks = "".join(f"  fence[{r}]={s}" for r, s in sorted(acc.fences.items()))
        marks += "".join(f"  moved[{r}]={n}" for r, n in sorted(acc.moved.items()))
        home = acc.home or "(not registered)"
        print(f"{acc.account:<24} home={home:<14} {where}  {verdict}{marks}", file=out)
    s = findings.summary()["summary"]
    print(
        f"\n{s['accounts']} accounts, {sum(s['items_scanned'].values())} items read in "
        f"{s['seconds']:.1f}s; {s['foreign_items']} foreign items in "
        f"{s['accounts_foreign']} accounts ({s['accounts_unregistered']} not registered); "
        + ("OK" if s["ok"] else "RESIDENCY VIOLATED"),
        file=out,
    )


async def _homes(settings: EdgeSettings, only: str | None) -> dict[str, str]:
    async with RegistryWriter.from_settings(settings) as reg:
        if only is not None:
            record = await reg.get_account(only)
            return {only: record.region} if record is not None else {}
        return {r.name: r.region for r in await reg.list_accounts()}


async def _report(settings: EdgeSettings, args: argparse.Namespace) -> Findings:
    homes = await _homes(settings, args.account)
    progress = _Progress([r.name for r in settings.regions], sys.stderr)
    try:
        return await scan(
            settings.regions,
            homes,
            only=args.account,
            segments=args.segments,
            progress=progress,
            on_total=progress.total,
        )
    finally:
        progress.close()


def run(settings: EdgeSettings, args: argparse.Namespace) -> int:
    if args.account is not None and not valid_account(args.account):
        print("residency-ops residency: --account is not a valid account name", file=sys.stderr)
        return 2
    if not 1 <= args.segments <= 1000:
        print("residency-ops residency: --segments must be 1-1000", file=sys.stderr)
        return 2
    try:
        findings = asyncio.run(_report(settings, args))
    except RegistryError as exc:
        print(f"residency-ops residency: {exc}; no proof either way", file=sys.stderr)
        return 2
    if args.metrics_file:
        write_metrics(findings, args.metrics_file)
    out = sys.stdout
    if out.isatty() and not args.json:
        _text(findings, out)
    else:
        for acc in sorted(findings.accounts.values(), key=lambda a: a.account):
            print(json.dumps(acc.as_json(), separators=(",", ":")), file=out)
        print(json.dumps(findings.summary(), separators=(",", ":")), file=out, flush=True)
    return 0 if findings.foreign_items == 0 else 1

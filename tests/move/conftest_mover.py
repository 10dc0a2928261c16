"""The mover's fixtures (helper move-edge): a fake store region implementing the transfer
contract (``/_residency/transfer``, docs in briefs/move_contract.md) in memory, a real registry
table on DynamoDB Local, and edge settings pointing at both.

The fake is a real aiohttp server on a free port that verifies the ``move`` assertion exactly
as a store does; its table is a dict of DynamoDB-JSON items, its change stream a list of keys,
data keys are "wrapped" strings naming the region, so a test can see a key re-wrapped rather
than copied. Test files import these fixtures by name (``from .conftest_mover import ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from edge_router.config import EdgeSettings
from residency_contract import assertion as pa
from residency_contract.protocol import ASSERTION_HEADER
from residency_ops.commands import account as move_cli
from residency_ops.registry_writer import RegistryWriter
from tests.edge.conftest import SECRETS, dead_url, make_settings, serve_on_free_port

SOURCE, DEST = "us-east-1", "eu-west-1"
ACCOUNT = "shop"
T = "/_residency/transfer"


class Refuse(Exception):
    def __init__(self, status: int, code: str) -> None:
        self.status, self.code = status, code


@dataclass
class Hold:
    """A transfer call kept waiting: ``reached`` once it arrived, answered after ``release``."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def kind_of(pk: str, sk: str) -> str:
    part = pk.split("#")[2] if pk.count("#") >= 2 else ""
    return {"P": "profile", "DK": "data_key", "R": "prospect", "K": "altkey"}.get(part, "other")


@dataclass
class FakeRegion:
    region: str
    items: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    fence: dict[str, Any] | None = None
    log: list[tuple[str, str]] = field(default_factory=list)
    audits: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    fail_next: int = 0  # answer 503 to this many transfer calls
    holds: dict[str, Hold] = field(default_factory=dict)  # op -> its next call is held
    refusals: dict[str, Refuse] = field(default_factory=dict)  # op -> its next call refused
    corrupt_import: bool = False  # the destination alters every profile it imports
    digest_keys_form: bool = True  # the digests endpoint's keys form (contract change)
    keyed_digests: int = 0  # keys digested through it
    trimmed_before: int = 0  # the change stream no longer has positions below this

    @property
    def kid(self) -> str:
        return f"kid-{self.region}"

    def hold(self, op: str) -> Hold:
        """The next ``op`` call waits, in flight, until the returned hold is released."""
        self.holds[op] = Hold()
        return self.holds[op]

    # -- what the application does (writes go through the fence, like the store's) ----------

    def write(self, account: str, pk_tail: str, value: str, sk: str = "D") -> None:
        if self.fence is not None:
            state = self.fence["state"]
            raise (
                Refuse(503, "account_moving")
                if state == "frozen"
                else Refuse(421, "residency_mismatch")
            )
        pk = f"A#{account}#{pk_tail}"
        self.items[(pk, sk)] = {"pk": {"S": pk}, "sk": {"S": sk}, "v": {"S": value}}
        self.log.append((pk, sk))

    def delete(self, account: str, pk_tail: str, sk: str = "D") -> None:
        pk = f"A#{account}#{pk_tail}"
        self.items.pop((pk, sk), None)
        self.log.append((pk, sk))

    def seed(self, account: str, profiles: int) -> None:
        for i in range(profiles):
            self.write(account, f"P#{i:05d}", f"doc-{i}")
        for s in range(3):
            pk = f"A#{account}#DK#subj{s}"
            self.items[(pk, "K")] = {
                "pk": {"S": pk},
                "sk": {"S": "K"},
                "wrappedKey": {"S": f"wrapped:{self.region}:subj{s}"},
            }

    def of(self, account: str) -> dict[tuple[str, str], dict[str, Any]]:
        return {k: v for k, v in self.items.items() if k[0].startswith(f"A#{account}#")}

    # -- the contract --------------------------------------------------------------------------

    def _export(self, item: dict[str, Any], recipient: dict[str, Any]) -> dict[str, Any]:
        if "wrappedKey" not in item:
            return item
        subject = item["wrappedKey"]["S"].rsplit(":", 1)[1]
        out = {k: v for k, v in item.items() if k != "wrappedKey"}
        out["transferKey"] = {"S": f"for:{recipient['kid']}:{subject}"}
        return out

    def _segment(self, account: str, seg: int, total: int) -> list[tuple[str, str]]:
        def h(k: tuple[str, str]) -> int:
            return int(hashlib.sha256("\0".join(k).encode()).hexdigest(), 16)

        return sorted(k for k in self.of(account) if h(k) % total == seg)

    def handle(self, op: str, account: str, body: dict[str, Any]) -> Any:
        if op == "fence":
            gen = int(body["generation"])
            if self.fence is not None and gen < self.fence["generation"]:
                raise Refuse(409, "stale_generation")
            if body["state"] == "none":
                self.fence = None
            else:
                self.fence = {"state": body["state"], "generation": gen, "peer": body["peer"]}
            return {"state": body["state"], "generation": gen}
        if op == "changes/start":
            return {"checkpoint": {"seq": len(self.log)}}
        if op == "changes":
            start = int(body["checkpoint"]["seq"])
            if start < self.trimmed_before:
                raise Refuse(409, "checkpoint_trimmed")
            end = min(len(self.log), start + 25)  # paged, like the real one
            keys = sorted({k for k in self.log[start:end] if k[0].startswith(f"A#{account}#")})
            return {
                "keys": [list(k) for k in keys],
                "checkpoint": {"seq": end},
                "more": end < len(self.log),
            }
        if op == "digests" and "keys" in body:
            if not self.digest_keys_form:
                raise Refuse(400, "invalid_field")
            self.keyed_digests += len(body["keys"])
            asked = [(pk, sk) for pk, sk in body["keys"]]
            return {
                "digests": {"\0".join(k): self.digest(k) for k in asked if k in self.items},
                "kinds": {"\0".join(k): kind_of(*k) for k in asked},
                "missing": [list(k) for k in asked if k not in self.items],
            }
        if op in ("export", "digests"):
            keys = self._segment(account, int(body["segment"]), int(body["total_segments"]))
            # The cursor is the last key returned, like DynamoDB's ExclusiveStartKey: writes
            # during the scan never shift it.
            after = tuple(body["cursor"].split("\0")) if body["cursor"] else None
            rest = [k for k in keys if after is None or k > after]
            page = rest[: int(body["limit"])]
            cursor = "\0".join(page[-1]) if len(rest) > len(page) else None
            counts: dict[str, int] = {}
            for k in page:
                counts[kind_of(*k)] = counts.get(kind_of(*k), 0) + 1
            if op == "export":
                items = [self._export(self.items[k], body["recipient"]) for k in page]
                return {"items": items, "cursor": cursor, "counts": counts}
            return {
                "digests": {"\0".join(k): self.digest(k) for k in page},
                "counts": counts,
                "cursor": cursor,
            }
        if op == "export-keys":
            items, missing = [], []
            for pk, sk in body["keys"]:
                if (pk, sk) in self.items:
                    items.append(self._export(self.items[(pk, sk)], body["recipient"]))
                else:
                    missing.append([pk, sk])
            return {"items": items, "missing": missing}
        if op == "import":
            if self.fence is None or self.fence["state"] != "incoming":
                raise Refuse(409, "not_incoming")
            for item in body["items"]:
                item = dict(item)
                if "transferKey" in item:
                    kid, subject = item.pop("transferKey")["S"].split(":")[1:]
                    assert kid == self.kid, "a data key wrapped for another region"
                    item["wrappedKey"] = {"S": f"wrapped:{self.region}:{subject}"}
                if self.corrupt_import and kind_of(item["pk"]["S"], "") == "profile":
                    item["v"] = {"S": "corrupted"}
                self.items[(item["pk"]["S"], item["sk"]["S"])] = item
            for pk, sk in body["delete"]:
                self.items.pop((pk, sk), None)
            return {"written": len(body["items"]), "deleted": len(body["delete"])}
        if op == "purge":
            need = "moved_out" if body["role"] == "source" else "incoming"
            f = self.fence
            if (
                f is None
                or f["state"] != need
                or (need == "moved_out" and f["generation"] != body["generation"])
            ):
                raise Refuse(409, f"not_{need}")
            # A step deletes at most "limit" items, every data key before anything else.
            deleted: dict[str, int] = {}
            todo = sorted(self.of(account), key=lambda k: kind_of(*k) != "data_key")
            for k in todo[: int(body["limit"])]:
                deleted[kind_of(*k)] = deleted.get(kind_of(*k), 0) + 1
                del self.items[k]
            return {"deleted": deleted, "cursor": "more" if self.of(account) else None}
        if op == "audit":
            # One record per job and event, however often it is asked (the contract).
            if not any((a["job"], a["event"]) == (body["job"], body["event"]) for a in self.audits):
                self.audits.append(body)
            return {}
        raise Refuse(404, "not_found")

    def digest(self, k: tuple[str, str]) -> str:
        item = {n: v for n, v in self.items[k].items() if n != "wrappedKey"}
        if "wrappedKey" in self.items[k]:
            item["marker"] = {"S": "data_key:" + self.items[k]["wrappedKey"]["S"].rsplit(":", 1)[1]}
        return hashlib.sha256(json.dumps(item, sort_keys=True).encode()).hexdigest()

    def app(self) -> web.Application:
        app = web.Application()

        async def any_(request: web.Request) -> web.Response:
            try:
                asrt = pa.verify(
                    request.headers.get(ASSERTION_HEADER),
                    key=SECRETS[self.region],
                    region=self.region,
                    method=request.method,
                    target=request.raw_path,
                    max_age_s=30,
                )
            except pa.AssertionError_ as exc:
                return web.json_response({"error": exc.code}, status=401)
            if "move" not in asrt.roles:
                return web.json_response({"error": "forbidden"}, status=403)
            tail = request.match_info["tail"]
            if tail == "public-key":
                return web.json_response({"kid": self.kid, "alg": "RSA-OAEP-256", "pem": "PEM"})
            account, _, op = tail.partition("/")
            if account != asrt.account:
                return web.json_response({"error": "forbidden"}, status=403)
            self.calls.append(op)
            hold = self.holds.pop(op, None)
            if hold is not None:
                hold.reached.set()
                await hold.release.wait()
            refusal = self.refusals.pop(op, None)
            if refusal is not None:
                return web.json_response({"error": refusal.code}, status=refusal.status)
            if self.fail_next:
                self.fail_next -= 1
                return web.json_response({"error": "unavailable"}, status=503)
            body = await request.json() if request.can_read_body else {}
            try:
                return web.json_response(self.handle(op, account, body))
            except Refuse as exc:
                return web.json_response({"error": exc.code}, status=exc.status)

        app.router.add_route("*", T + "/{tail:.*}", any_)
        return app


@dataclass
class MoverWorld:
    source: FakeRegion
    dest: FakeRegion
    settings: EdgeSettings
    registry: RegistryWriter

    def args(self, *argv: str) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        move_cli.add_arguments(parser)
        return parser.parse_args(list(argv))

    async def meta(self) -> dict[str, Any]:
        items = await self.registry.account_items(ACCOUNT)
        return next(dict(i) for i in items if i["sk"]["S"] == "META")


@pytest.fixture
async def world(ddb_endpoint: str) -> AsyncIterator[MoverWorld]:
    """Two fake regions (the source's first instance dead: the mover fails over), a registry
    table on DynamoDB Local with ``shop`` in the source region."""
    source, dest = FakeRegion(SOURCE), FakeRegion(DEST)
    runners = []
    urls: dict[str, list[str]] = {}
    for fake, extra in ((source, [dead_url()]), (dest, [])):
        runner, port = await serve_on_free_port(fake.app())
        runners.append(runner)
        urls[fake.region] = [*extra, f"http://127.0.0.1:{port}"]
    table = f"registry-{uuid.uuid4().hex[:8]}"
    settings = make_settings(urls, registry_endpoint=ddb_endpoint, registry_table=table)
    try:
        async with RegistryWriter(table=table, endpoint=ddb_endpoint, region="us-east-1") as reg:
            await reg.create_table()
            assert await reg.create_account(ACCOUNT, SOURCE)
            yield MoverWorld(source, dest, settings, reg)
    finally:
        for runner in runners:
            await runner.cleanup()

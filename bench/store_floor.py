"""The store's CPU floor: a minimal aiohttp + aiobotocore service doing exactly the DynamoDB
calls of a profile GET, create and PATCH, with items of the same sizes, and nothing else.

What a Profile System instance costs above this is the cost of our own code (assertion check,
validation, envelope encryption, masking, metrics, the layers between them): the bench reports
the store's CPU per operation as a ratio to this service's, measured in the same run on the same
DynamoDB Local. Same stack on purpose: ``aiohttp.web`` under uvloop with no access log, one
aiobotocore client with the store's timeouts, retries and pool size but otherwise botocore's
defaults (what a minimal service gets: parameter validation on, the SDK's own User-Agent; what
the store turns off there counts as the store's gain), consistent reads and
``ReturnConsumedCapacity=TOTAL`` like ``Repository.call``, writers of one item queued on a lock
in the process like ``Core.retrying``.

The calls, entry for entry (``tests/bench/test_store_floor.py`` compares them with the store's):

* GET    GetItem of the profile's CUR item;
* create TransactWriteItems: CUR, its version, the subject's data key, the email and document
  alternative keys, the suppression ConditionCheck, the custom-schema ConditionCheck;
* PATCH  GetItem of CUR, then TransactWriteItems: CUR (conditional on the version read), its
  version, the suppression and the custom-schema ConditionChecks.

No crypto (the sealed document is filler of the sealed length: JSON + 1 + nonce + tag), no
masking, no validation. It answers the store's JSON shapes with the document it was sent (or a
stand-in of the seeded shape on GET), so response sizes are alike too.

    python -m bench.store_floor --port P --endpoint URL --table T --account A --region R
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import uuid
import weakref
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

API = "/api/storage/profile-system"
# The sealed document's overhead (crypto.seal_document): format byte + 12-byte nonce + 16 tag.
_SEAL_OVERHEAD = 1 + 12 + 16
_WRAPPED_KEY_BYTES = 61  # a local-provider wrapped data key (keys.LocalKeyProvider)
_KEY_ID = "local:" + "0" * 16
_FILLER = os.urandom(64 * 1024)
# The principal the edge asserts for the bench's key (author of what it writes).
_AUTHOR = "vtexappkey-demo-us-LOCALDEMO"
# A GET answers this stand-in: the floor cannot open the sealed document it reads.
_STAND_IN = {
    "firstName": "Bench",
    "lastName": "User0",
    "email": "b****.************.*@*******.***",
    "document": "***********",
    "documentType": "CPF",
}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _dumps(body: Any) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _sealed(doc: dict[str, Any]) -> dict[str, bytes]:
    size = len(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode())
    return {"B": _FILLER[: size + _SEAL_OVERHEAD]}


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Floor:
    def __init__(self, client: Any, table: str, account: str) -> None:
        self.client = client
        self.table = table
        self.account = account
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _checks(self, email: str) -> list[dict[str, Any]]:
        """The suppression, custom-schema and fence ConditionChecks of every profile write."""
        email_hex = hashlib.sha256(email.encode()).hexdigest()
        return [
            {
                "ConditionCheck": {
                    "TableName": self.table,
                    "Key": {
                        "pk": _s(f"A#{self.account}#SUPPRESS#{email_hex}"),
                        "sk": _s("S"),
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "ConditionCheck": {
                    "TableName": self.table,
                    "Key": {"pk": _s(f"A#{self.account}#SCHEMA"), "sk": _s("CUSTOM")},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                # The account's fence marker (profile_store/fence.py): every account write
                # carries it, so a move can freeze and fence the account atomically.
                "ConditionCheck": {
                    "TableName": self.table,
                    "Key": {"pk": _s(f"FENCE#{self.account}"), "sk": _s("F")},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]

    def _pair(self, pk: str, attrs: dict[str, Any], doc: dict[str, Any], vid: str) -> list[Any]:
        blob = _sealed(doc)
        current = {"pk": _s(pk), "sk": _s("CUR"), **attrs, "doc": blob}
        version = {"pk": _s(pk), "sk": _s(f"V#{vid}"), **attrs, "doc": blob}
        return [current, version]

    async def get(self, pid: str) -> dict[str, Any] | None:
        out = await self.client.get_item(
            TableName=self.table,
            Key={"pk": _s(f"A#{self.account}#P#{pid}"), "sk": _s("CUR")},
            ConsistentRead=True,
            ReturnConsumedCapacity="TOTAL",
        )
        item: dict[str, Any] | None = out.get("Item")
        return item

    async def create(self, doc: dict[str, Any]) -> dict[str, Any]:
        pid, vid, stamp = str(uuid.uuid4()), str(uuid.uuid4()), _now()
        pk = f"A#{self.account}#P#{pid}"
        hashes = {
            kind: hashlib.sha256(str(doc.get(kind, "")).encode()).hexdigest()
            for kind in ("email", "document")
        }
        attrs = {
            "entityType": _s("profile"),
            "id": _s(pid),
            "version": _s(vid),
            "author": _s(_AUTHOR),
            "createdAt": _s(stamp),
            "updatedAt": _s(stamp),
            "emailHash": _s(hashes["email"]),
            "documentHash": _s(hashes["document"]),
        }
        current, version = self._pair(pk, attrs, doc, vid)
        entries: list[dict[str, Any]] = [
            {"Put": {"Item": current, "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"Item": version, "ConditionExpression": "attribute_not_exists(pk)"}},
            {
                "Put": {
                    "Item": {
                        "pk": _s(f"A#{self.account}#DK#{pid}"),
                        "sk": _s("DK"),
                        "wrapped": {"B": _FILLER[:_WRAPPED_KEY_BYTES]},
                        "provider": _s("local"),
                        "keyId": _s(_KEY_ID),
                        "createdAt": _s(stamp[:19] + "Z"),
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
        for kind, hex_digest in hashes.items():
            entries.append(
                {
                    "Put": {
                        "Item": {
                            "pk": _s(f"A#{self.account}#K#{kind}#{hex_digest}"),
                            "sk": _s("K"),
                            "profileId": _s(pid),
                        },
                        "ConditionExpression": (
                            "attribute_not_exists(pk) OR profileId = :pid OR expiresAt < :now"
                        ),
                        "ExpressionAttributeValues": {
                            ":pid": _s(pid),
                            ":now": {"N": str(int(datetime.now(UTC).timestamp()))},
                        },
                    }
                }
            )
        for entry in entries:
            entry["Put"]["TableName"] = self.table
        entries += self._checks(str(doc.get("email", "")))
        await self.client.transact_write_items(
            TransactItems=entries, ReturnConsumedCapacity="TOTAL"
        )
        return {"id": pid, "document": doc, "meta": _meta(current)}

    async def patch(self, pid: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        lock = self._locks.get(pid)
        if lock is None:
            lock = self._locks[pid] = asyncio.Lock()
        async with lock:
            old = await self.get(pid)
            if old is None:
                return None
            doc = {**_STAND_IN, **patch}
            vid = str(uuid.uuid4())
            attrs = {k: v for k, v in old.items() if k not in {"pk", "sk", "doc"}}
            attrs["version"], attrs["updatedAt"] = _s(vid), _s(_now())
            current, version = self._pair(old["pk"]["S"], attrs, doc, vid)
            entries: list[dict[str, Any]] = [
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": current,
                        "ConditionExpression": "version = :v",
                        "ExpressionAttributeValues": {":v": old["version"]},
                    }
                },
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": version,
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                *self._checks(_STAND_IN["email"]),
            ]
            await self.client.transact_write_items(
                TransactItems=entries, ReturnConsumedCapacity="TOTAL"
            )
            return {"id": pid, "document": doc, "meta": _meta(current)}


CLIENT: web.AppKey[Any] = web.AppKey("client", object)
FLOOR: web.AppKey[Floor] = web.AppKey("floor", Floor)


def _meta(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": item["version"]["S"],
        "author": item["author"]["S"],
        "creationDate": item["createdAt"]["S"],
        "lastUpdate": item["updatedAt"]["S"],
    }


async def get_profile(request: web.Request) -> web.Response:
    pid = request.match_info["id"]
    item = await request.app[FLOOR].get(pid)
    if item is None:
        return web.json_response({"error": "not_found"}, status=404)
    body = [{"id": pid, "document": _STAND_IN, "meta": _meta(item)}]
    return web.json_response(body, dumps=_dumps)


async def create_profile(request: web.Request) -> web.Response:
    doc = json.loads(await request.read())
    return web.json_response(await request.app[FLOOR].create(doc), status=201, dumps=_dumps)


async def patch_profile(request: web.Request) -> web.Response:
    patch = json.loads(await request.read())
    body = await request.app[FLOOR].patch(request.match_info["id"], patch)
    if body is None:
        return web.json_response({"error": "not_found"}, status=404)
    return web.json_response(body, dumps=_dumps)


async def readyz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


def create_app(*, endpoint: str | None, table: str, account: str, region: str) -> web.Application:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    from profile_store.config import StoreSettings

    # A store's default timeouts, retries and pool; botocore's defaults for everything else.
    defaults = StoreSettings(region=region, table=table, assertion_secret=b"floor-not-a-secret")
    config = AioConfig(
        connect_timeout=defaults.ddb_connect_timeout_s,
        read_timeout=defaults.ddb_read_timeout_s,
        retries={"max_attempts": defaults.ddb_max_attempts, "mode": "standard"},
        max_pool_connections=64,
    )

    async def client_ctx(app: web.Application) -> Any:
        async with get_session().create_client(
            "dynamodb", region_name=region, endpoint_url=endpoint, config=config
        ) as client:
            app[CLIENT] = client
            app[FLOOR] = Floor(client, table, account)
            yield

    app = web.Application()
    app.router.add_get(f"{API}/profiles/{{id}}", get_profile)
    app.router.add_post(f"{API}/profiles", create_profile)
    app.router.add_patch(f"{API}/profiles/{{id}}", patch_profile)
    app.router.add_get("/readyz", readyz)
    app.cleanup_ctx.append(client_ctx)
    return app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.store_floor", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--endpoint", help="DynamoDB endpoint (DynamoDB Local)")
    ap.add_argument("--table", required=True)
    ap.add_argument("--account", required=True)
    ap.add_argument("--region", required=True)
    args = ap.parse_args(argv)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # the store runs without it too
        pass
    app = create_app(
        endpoint=args.endpoint, table=args.table, account=args.account, region=args.region
    )
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""PITR tooling: functions and CLI against moto, and DynamoDB Local's missing API."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiobotocore.session import get_session

from profile_store import pitr
from profile_store.__main__ import main
from residency_dev.dynamodb_local import free_port

from .conftest import FAST, REGION, create_table


async def test_status_enable_and_window(moto_ddb: Any, moto_table: str) -> None:
    assert await pitr.pitr_status(moto_ddb, moto_table) == "disabled"
    state = await pitr.enable_pitr(moto_ddb, moto_table, verify_timeout_s=10)
    assert state.enabled and state.table == moto_table
    assert state.earliest_restorable is not None and state.latest_restorable is not None
    assert await pitr.pitr_status(moto_ddb, moto_table) == "enabled"


@pytest.mark.parametrize("when", ["latest", "window"])
async def test_restore_into_a_new_table(moto_ddb: Any, moto_table: str, when: str) -> None:
    await moto_ddb.put_item(
        TableName=moto_table, Item={"pk": {"S": "A#acme#P#p-1"}, "sk": {"S": "PROFILE"}}
    )
    state = await pitr.enable_pitr(moto_ddb, moto_table, verify_timeout_s=10)
    to: Any = "latest" if when == "latest" else state.latest_restorable
    target = f"{moto_table}-restored"
    result = await pitr.restore_to_point_in_time(moto_ddb, moto_table, target, to)
    assert result.target_table == target and result.source_table == moto_table
    described = (await moto_ddb.describe_table(TableName=target))["Table"]
    assert described["TableName"] == target
    assert described["RestoreSummary"]["SourceTableArn"].endswith(f"/{moto_table}")


async def test_restore_never_overwrites(moto_ddb: Any, moto_table: str) -> None:
    await pitr.enable_pitr(moto_ddb, moto_table, verify_timeout_s=10)
    existing = await create_table(moto_ddb)
    with pytest.raises(pitr.PitrRefused):
        await pitr.restore_to_point_in_time(moto_ddb, moto_table, existing, "latest")
    with pytest.raises(pitr.PitrRefused, match="new table"):
        await pitr.restore_to_point_in_time(moto_ddb, moto_table, moto_table, "latest")


async def test_missing_table_is_refused(moto_ddb: Any) -> None:
    with pytest.raises(pitr.PitrRefused, match="TableNotFoundException"):
        await pitr.pitr_status(moto_ddb, "no-such-table")


async def test_unreachable_endpoint_is_unavailable() -> None:
    async with get_session().create_client(
        "dynamodb", region_name=REGION, endpoint_url=f"http://127.0.0.1:{free_port()}", config=FAST
    ) as client:
        with pytest.raises(pitr.PitrUnavailable):
            await pitr.pitr_status(client, "profiles")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("latest", "latest"),
        (" LATEST ", "latest"),
        ("2026-05-01T12:00:00Z", datetime(2026, 5, 1, 12, tzinfo=UTC)),
        (
            "2026-05-01T14:00:00+02:00",
            datetime(2026, 5, 1, 14, tzinfo=timezone(timedelta(hours=2))),
        ),
    ],
)
def test_parse_restore_time(raw: str, expected: Any) -> None:
    assert pitr.parse_restore_time(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [("2026-05-01T12:00:00", "time zone"), ("yesterday", "ISO-8601"), ("", "ISO-8601")],
)
def test_parse_restore_time_refuses(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pitr.parse_restore_time(raw)


# --- CLI: profile-store pitr (sync tests: main() runs its own event loop) -------------------


def _table_on(endpoint: str) -> str:
    async def make() -> str:
        async with get_session().create_client(
            "dynamodb", region_name=REGION, endpoint_url=endpoint, config=FAST
        ) as client:
            return await create_table(client)

    return asyncio.run(make())


def _table_exists(endpoint: str, name: str) -> bool:
    async def check() -> bool:
        async with get_session().create_client(
            "dynamodb", region_name=REGION, endpoint_url=endpoint, config=FAST
        ) as client:
            names = (await client.list_tables())["TableNames"]
            return name in names

    return asyncio.run(check())


def test_cli_show_enable_restore(moto_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    table = _table_on(moto_endpoint)
    common = ["--table", table, "--region", REGION, "--endpoint-url", moto_endpoint]

    assert main(["pitr", "show", *common]) == 0
    assert "point-in-time recovery: disabled" in capsys.readouterr().out

    assert main(["pitr", "enable", *common]) == 0
    assert f"point-in-time recovery enabled on {table}" in capsys.readouterr().out

    # Options also work before the sub-command.
    assert main(["pitr", *common, "show"]) == 0
    out = capsys.readouterr().out
    assert "point-in-time recovery: enabled" in out and "latest restorable:" in out

    target = f"{table}-r"
    assert main(["pitr", "restore", *common, "--to", "latest", "--target-table", target]) == 0
    assert f"restoring {table} into {target}" in capsys.readouterr().out
    assert _table_exists(moto_endpoint, target)

    iso = datetime.now(UTC).isoformat()
    assert main(["pitr", "restore", *common, "--to", iso, "--target-table", f"{table}-t"]) == 0
    assert _table_exists(moto_endpoint, f"{table}-t")


def test_cli_reads_settings_from_the_environment(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    table = _table_on(moto_endpoint)
    monkeypatch.setenv("PROFILE_STORE_TABLE", table)
    monkeypatch.setenv("PROFILE_STORE_REGION", REGION)
    monkeypatch.setenv("PROFILE_STORE_DYNAMODB_ENDPOINT", moto_endpoint)
    assert main(["pitr", "show"]) == 0
    assert f"table: {table}" in capsys.readouterr().out


def test_cli_refuses_a_time_without_zone(moto_endpoint: str) -> None:
    args = ["restore", "--table", "profiles", "--region", REGION, "--endpoint-url", moto_endpoint]
    with pytest.raises(SystemExit) as info:
        main(["pitr", *args, "--to", "2026-05-01T12:00:00", "--target-table", "profiles-r"])
    assert info.value.code == 2


def test_cli_missing_table_is_exit_1(
    moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["show", "--table", "no-such-table", "--region", REGION, "--endpoint-url", moto_endpoint]
    assert main(["pitr", *args]) == 1
    assert "TableNotFoundException" in capsys.readouterr().err


# --- DynamoDB Local: no PITR API ------------------------------------------------------------


async def test_dynamodb_local_is_an_unsupported_endpoint(ddb_endpoint: str) -> None:
    async with get_session().create_client(
        "dynamodb", region_name=REGION, endpoint_url=ddb_endpoint, config=FAST
    ) as client:
        table = await create_table(client)
        assert await pitr.pitr_status(client, table) == "unsupported-endpoint"
        with pytest.raises(pitr.PitrUnsupported, match="DynamoDB Local"):
            await pitr.enable_pitr(client, table, verify_timeout_s=1)
        await client.delete_table(TableName=table)


@pytest.mark.parametrize(
    "command", [["show"], ["enable"], ["restore", "--to", "latest", "--target-table", "x-r"]]
)
def test_cli_on_dynamodb_local_exits_2(
    ddb_endpoint: str, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--table", "profiles", "--region", REGION, "--endpoint-url", ddb_endpoint]
    assert main(["pitr", *command, *args]) == 2
    assert pitr.UNSUPPORTED_MESSAGE in capsys.readouterr().err

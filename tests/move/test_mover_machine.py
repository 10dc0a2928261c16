"""The move state machine against fake stores (the transfer contract in memory) and a real
registry table on DynamoDB Local: a whole move, a crash after every step then resume, abort
before the flip, abort after it refused (and a refused abort leaves a running move alone), a
verify mismatch that stops in ``moving``."""

from __future__ import annotations

import asyncio
import io
import json
from collections import Counter
from typing import Any

import pytest

from residency_ops.commands import account as move_cli
from residency_ops.move.options import MoveOptions
from residency_ops.move.progress import Progress

from .conftest_mover import ACCOUNT, DEST, SOURCE, Hold, MoverWorld, Refuse, kind_of

PROFILES = 60
BOUND = 30.0  # the longest any wait of these tests may take (a loaded 2-core machine)
# Small pages and an eager saver, so every step (and several pages per segment) happens.
OPTIONS = MoveOptions(
    export_limit=7,
    keys_per_export=5,
    purge_limit=9,
    save_every_s=0.0,
    settle_s=0.05,
    propagation_s=0.0,
)

# Every point where the mover calls its hook, in order (a segment's pages repeat).
STEPS = [
    "incoming",
    "fenced_incoming",
    "bulk_copy",
    "checkpoint",
    "segment_page:0",
    "catch_up",
    "scanned",
    "moving",
    "registry_moving",
    "fenced_frozen",
    "verify",
    "flip",
    "dest_open",
    "fence",
    "fenced_moved_out",
    "clean",
    "purge_page",
    "purged",
    "audit_dest",
    "done",
]


class Crash(Exception):
    pass


def crash_at(step: str) -> Any:
    fired = []

    def hook(name: str) -> None:
        if name == step and not fired:
            fired.append(name)
            raise Crash(step)

    return hook


async def run(w: MoverWorld, *argv: str, hook: Any = None) -> tuple[int, list[dict[str, Any]]]:
    out = io.StringIO()
    code = await move_cli.execute(
        w.settings, w.args(*argv), progress=Progress(out, tick_s=0.0), hook=hook, options=OPTIONS
    )
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


async def status(w: MoverWorld, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert await move_cli.execute(w.settings, w.args("status", ACCOUNT)) == 0
    return json.loads(capsys.readouterr().out.splitlines()[-1])


def seeded(w: MoverWorld) -> dict[tuple[str, str], dict[str, Any]]:
    w.source.seed(ACCOUNT, PROFILES)
    w.source.write("other", "P#1", "not moved")  # another account in the same table
    return dict(w.source.of(ACCOUNT))


def expected_in_dest(source_items: dict[tuple[str, str], Any]) -> dict[tuple[str, str], Any]:
    """The source's items as the destination must hold them: data keys wrapped by its own."""
    out = {}
    for k, item in source_items.items():
        if "wrappedKey" in item:
            subject = item["wrappedKey"]["S"].rsplit(":", 1)[1]
            item = {**item, "wrappedKey": {"S": f"wrapped:{DEST}:{subject}"}}
        out[k] = item
    return out


async def assert_moved(w: MoverWorld, source_items: dict[tuple[str, str], Any]) -> None:
    assert w.dest.of(ACCOUNT) == expected_in_dest(source_items)
    assert w.source.of(ACCOUNT) == {}  # crypto-shredded and deleted
    assert w.source.of("other") != {}  # nothing else touched
    assert w.source.fence == {"state": "moved_out", "generation": 1, "peer": DEST}
    assert w.dest.fence is None
    meta = await w.meta()
    assert meta["region"]["S"] == DEST and meta["generation"]["N"] == "1"
    assert "moving" not in meta
    events = {a["event"] for a in w.source.audits} | {a["event"] for a in w.dest.audits}
    assert events == {"move_out", "move_in"}
    assert all(a["generation"] == 1 for a in w.source.audits + w.dest.audits)
    # the record of what the source purged: every item it held, whatever crashed on the way
    (out,) = [a for a in w.source.audits if a["event"] == "move_out"]
    assert out["counts"] == dict(Counter(kind_of(*k) for k in source_items))


async def test_a_whole_move(world: MoverWorld) -> None:
    w = world
    items = seeded(w)
    code, lines = await run(w, "move", ACCOUNT, "--to", DEST, "--segments", "3")
    assert code == 0, lines[-1]
    await assert_moved(w, items)
    last = lines[-1]
    assert last["result"] == "done" and last["phase"] == "done"
    assert last["counts"]["copied"] == len(items)
    assert last["verified"] == {"data_key": 3, "profile": PROFILES}
    assert isinstance(last["freeze_s"], float) and 0 <= last["freeze_s"] < 10
    phases = [ln["phase"] for ln in lines if ln.get("event") == "phase"]
    assert phases == ["planned", "incoming", "bulk_copy", "catch_up", "moving", "verify",
                      "flip", "fence", "clean", "done"]  # fmt: skip
    assert any(ln.get("event") == "flipped" for ln in lines)
    # the edges are told of the two META changes only, not of the job's progress saves
    changes = [c.kind for c in await w.registry.changes_since("0") if c.account == ACCOUNT]
    assert changes[-2:] == ["move", "flip"] and "move" not in changes[:-2], changes
    # the source's first instance is dead: every call failed over to the second
    assert "fence" in w.source.calls


async def test_writes_during_the_copy_are_replayed(world: MoverWorld) -> None:
    w = world
    seeded(w)

    def writer(step: str) -> None:
        if step == "segment_page:0":  # the scan is under way: the account is still writable
            w.source.write(ACCOUNT, f"P#new{len(w.source.log)}", "written during the copy")
            w.source.write(ACCOUNT, "P#00001", "changed during the copy")
            w.source.delete(ACCOUNT, "P#00002")
        if step == "registry_moving":  # an edge with a stale cache, before the fence
            w.source.write(ACCOUNT, "P#late", "just before the freeze")
        if step == "fenced_frozen":
            with pytest.raises(Refuse) as refused:
                w.source.write(ACCOUNT, "P#frozen", "refused")
            assert (refused.value.status, refused.value.code) == (503, "account_moving")

    def snapshot(step: str) -> None:
        writer(step)
        if step == "verify":
            final.update(w.source.of(ACCOUNT))

    final: dict[tuple[str, str], Any] = {}
    code, lines = await run(w, "move", ACCOUNT, "--to", DEST, hook=snapshot)
    assert code == 0, lines[-1]
    assert (f"A#{ACCOUNT}#P#late", "D") in final and (f"A#{ACCOUNT}#P#00002", "D") not in final
    await assert_moved(w, final)
    assert lines[-1]["counts"]["replayed"] >= 3 and lines[-1]["counts"]["deleted"] >= 1


@pytest.mark.parametrize("step", STEPS[:-1])
async def test_a_crash_after_any_step_is_resumed(world: MoverWorld, step: str) -> None:
    w = world
    items = seeded(w)
    with pytest.raises(Crash):
        await run(w, "move", ACCOUNT, "--to", DEST, hook=crash_at(step))
    # crashed: the account stays readable where the registry points
    meta = await w.meta()
    home = w.dest if meta["region"]["S"] == DEST else w.source
    if step not in ("purged", "audit_dest"):
        assert home.of(ACCOUNT), f"no copy readable in the home region after a crash at {step}"
    if meta["region"]["S"] == SOURCE:
        assert w.source.of(ACCOUNT) == items  # untouched before the flip
    # a second move is refused while this one is unfinished
    assert (await run(w, "move", ACCOUNT, "--to", DEST))[0] == 2
    code, lines = await run(w, "resume", ACCOUNT)
    assert code == 0, lines[-1]
    await assert_moved(w, items)


@pytest.mark.parametrize(
    "step", ["incoming", "catch_up", "fenced_frozen", "verify", "flip", "dest_open"]
)
async def test_abort_before_the_flip(
    world: MoverWorld, step: str, capsys: pytest.CaptureFixture[str]
) -> None:
    w = world
    items = seeded(w)
    with pytest.raises(Crash):
        await run(w, "move", ACCOUNT, "--to", DEST, hook=crash_at(step))
    code, lines = await run(w, "abort", ACCOUNT)
    assert code == 0, lines[-1]
    assert lines[-1]["phase"] == "aborted"
    assert w.source.of(ACCOUNT) == items and w.source.fence is None  # source untouched
    assert w.dest.of(ACCOUNT) == {}  # partial copy purged
    # and the destination stays fenced: not the account's home (a stale edge's write there,
    # even one older than an earlier move out of it, is refused)
    assert w.dest.fence is not None and w.dest.fence["state"] == "moved_out"
    meta = await w.meta()
    assert meta["region"]["S"] == SOURCE and meta.get("generation", {"N": "0"})["N"] == "0"
    assert "moving" not in meta
    assert [a["event"] for a in w.source.audits] == ["move_aborted"]
    w.source.write(ACCOUNT, "P#after", "writable again")
    assert (await status(w, capsys))["phase"] == "aborted"
    # and the account can be moved again
    code, _ = await run(w, "move", ACCOUNT, "--to", DEST)
    assert code == 0
    assert (f"A#{ACCOUNT}#P#after", "D") in w.dest.of(ACCOUNT)


async def test_abort_after_the_flip_is_refused(world: MoverWorld) -> None:
    w = world
    items = seeded(w)
    with pytest.raises(Crash):
        await run(w, "move", ACCOUNT, "--to", DEST, hook=crash_at("fenced_moved_out"))
    assert (await run(w, "abort", ACCOUNT))[0] == 2
    assert (await w.meta())["region"]["S"] == DEST
    assert (await run(w, "resume", ACCOUNT))[0] == 0
    await assert_moved(w, items)
    assert (await run(w, "abort", ACCOUNT))[0] == 2  # done: nothing to abort


async def refused_while_held(
    w: MoverWorld,
    capsys: pytest.CaptureFixture[str],
    running: asyncio.Future[tuple[int, list[dict[str, Any]]]],
    hold: Hold,
    command: str,
    why: str,
) -> tuple[int, list[dict[str, Any]]]:
    """While ``running``'s call is held mid-flight, ``command`` on the account is refused
    (exit 2, ``why`` on stderr) and leaves the job's phase as it was; then the call goes on,
    and ``running``'s own outcome is returned."""
    try:
        await asyncio.wait_for(hold.reached.wait(), BOUND)
        phase = (await status(w, capsys))["phase"]
        assert (await asyncio.wait_for(run(w, command, ACCOUNT), BOUND))[0] == 2
        assert why in capsys.readouterr().err
        assert (await status(w, capsys))["phase"] == phase
    finally:
        hold.release.set()
    return await asyncio.wait_for(running, BOUND)


@pytest.mark.parametrize(("phase", "held_call"), [("fence", "fence"), ("clean", "purge")])
async def test_a_refused_abort_leaves_the_running_move_alone(
    world: MoverWorld, phase: str, held_call: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator's ``abort`` while the move runs past its flip is refused, and changes
    nothing: the running mover is not taken over and finishes the move by itself."""
    w = world
    items = seeded(w)
    held: list[Hold] = []
    entered = asyncio.Event()

    def hook(step: str) -> None:
        if step == phase and not held:  # the job is in ``phase``: its next call waits
            held.append(w.source.hold(held_call))
            entered.set()

    mover = asyncio.ensure_future(run(w, "move", ACCOUNT, "--to", DEST, hook=hook))
    await asyncio.wait_for(entered.wait(), BOUND)
    why = "abort is only possible before the flip"
    code, lines = await refused_while_held(w, capsys, mover, held[0], "abort", why)
    assert code == 0 and lines[-1]["result"] == "done", lines[-1]
    await assert_moved(w, items)


async def test_a_refused_resume_leaves_a_running_abort_alone(
    world: MoverWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    items = seeded(world)
    with pytest.raises(Crash):
        await run(world, "move", ACCOUNT, "--to", DEST, hook=crash_at("catch_up"))
    hold = world.source.hold("fence")  # the abort's first source call: writes allowed again
    aborting = asyncio.ensure_future(run(world, "abort", ACCOUNT))
    why = "job is aborting; nothing to run"
    code, lines = await refused_while_held(world, capsys, aborting, hold, "resume", why)
    assert code == 0 and lines[-1]["phase"] == "aborted", lines[-1]
    assert world.source.of(ACCOUNT) == items and world.dest.of(ACCOUNT) == {}


@pytest.mark.parametrize(("phase", "refused_call"), [("fence", "fence"), ("clean", "purge")])
async def test_a_move_stopped_after_the_flip_says_resume_finishes_it(
    world: MoverWorld, phase: str, refused_call: str, capsys: pytest.CaptureFixture[str]
) -> None:
    items = seeded(world)

    def hook(step: str) -> None:
        if step == phase:  # the source refuses the phase's next call, once
            world.source.refusals[refused_call] = Refuse(409, "not_moved_out")

    capsys.readouterr()
    code, lines = await run(world, "move", ACCOUNT, "--to", DEST, hook=hook)
    assert code == 1 and lines[-1]["phase"] == phase
    err = capsys.readouterr().err
    assert f"account resume {ACCOUNT}' finishes it" in err, err
    assert (await run(world, "resume", ACCOUNT))[0] == 0
    await assert_moved(world, items)


async def test_a_verify_mismatch_stops_in_moving(
    world: MoverWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    w = world
    items = seeded(w)
    w.dest.corrupt_import = True
    code, lines = await run(w, "move", ACCOUNT, "--to", DEST)
    assert code == 1 and lines[-1]["result"] == "failed"
    job = await status(w, capsys)
    assert job["phase"] == "moving"
    assert "verify failed" in job["error"] and "different content" in job["error"]
    assert "A#" not in job["error"] and "doc-" not in job["error"]  # no key, no value
    meta = await w.meta()
    assert meta["region"]["S"] == SOURCE and meta["moving"]["BOOL"] is True  # writes refused
    assert w.source.fence is not None and w.source.fence["state"] == "frozen"
    assert w.source.of(ACCOUNT) == items
    # the operator gives up: abort restores writes at the source
    assert (await run(w, "abort", ACCOUNT))[0] == 0
    assert "moving" not in await w.meta() and w.source.fence is None


async def test_refusals(world: MoverWorld, capsys: pytest.CaptureFixture[str]) -> None:
    w = world
    seeded(w)
    assert (await run(w, "move", ACCOUNT, "--to", "ap-south-1"))[0] == 2
    assert (await run(w, "move", ACCOUNT, "--to", SOURCE))[0] == 2
    assert (await run(w, "move", "nobody", "--to", DEST))[0] == 2
    assert (await run(w, "move", "Bad_Name", "--to", DEST))[0] == 2
    assert (await run(w, "move", ACCOUNT, "--to", DEST, "--segments", "0"))[0] == 2
    assert (await run(w, "resume", ACCOUNT))[0] == 2  # no job yet
    capsys.readouterr()
    assert await move_cli.execute(w.settings, w.args("status", ACCOUNT)) == 2
    assert "no move job" in capsys.readouterr().err
    assert w.dest.calls == [] and w.source.fence is None


async def test_store_failures_are_retried_and_counted(world: MoverWorld, tmp_path: Any) -> None:
    w = world
    items = seeded(w)
    w.source.fail_next = 2  # two 503s: retried on the next instance after a backoff
    w.dest.fail_next = 1
    metrics = tmp_path / "moves.prom"
    code, _ = await run(w, "move", ACCOUNT, "--to", DEST, "--metrics-file", str(metrics))
    assert code == 0
    await assert_moved(w, items)
    text = metrics.read_text()
    assert 'edge_account_moves_total{result="done"} 1.0' in text
    code, _ = await run(w, "move", ACCOUNT, "--to", DEST, "--metrics-file", str(metrics))
    assert code == 2  # already there
    text = metrics.read_text()
    assert 'result="done"} 1.0' in text and 'result="refused"} 1.0' in text


@pytest.mark.parametrize("keys_form", [True, False])
async def test_verify_inside_the_freeze_digests_only_changed_keys(
    world: MoverWorld, keys_form: bool
) -> None:
    """The full digest scan runs before the freeze, and the keys changed after it are
    digested again while the account is still writable; inside the freeze only the keys
    changed since then -- or, with stores that lack the keys form, a full scan."""
    w = world
    seeded(w)
    w.source.digest_keys_form = w.dest.digest_keys_form = keys_form

    def hook(step: str) -> None:
        if step == "scanned":  # after the pre-freeze scan, the account is still writable
            w.source.write(ACCOUNT, "P#00003", "changed after the scan")
            w.source.delete(ACCOUNT, "P#00004")
        if step == "registry_moving":  # a stale edge's write, just before the fence
            w.source.write(ACCOUNT, "P#00005", "changed in the freeze")

    code, lines = await run(w, "move", ACCOUNT, "--to", DEST, hook=hook)
    assert code == 0, lines[-1]
    assert lines[-1]["verified"] == {"data_key": 3, "profile": PROFILES - 1}
    counts = lines[-1]["counts"]
    if keys_form:
        assert counts["redigested"] >= 2  # the writes after the scan, before the freeze
        assert counts["verified_incrementally"] == 1  # only the freeze's own write
        assert w.source.keyed_digests == counts["redigested"] + counts["verified_incrementally"]
    else:
        assert counts["verified_incrementally"] == 0 and "redigested" not in counts


async def test_a_difference_made_inside_the_freeze_is_caught(
    world: MoverWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    w = world
    seeded(w)

    def hook(step: str) -> None:
        if step == "registry_moving":  # a last write, replayed in the final catch-up ...
            w.source.write(ACCOUNT, "P#00005", "the last write")
            w.dest.corrupt_import = True  # ... and imported wrong

    code, _ = await run(w, "move", ACCOUNT, "--to", DEST, hook=hook)
    assert code == 1
    job = await status(w, capsys)
    assert job["phase"] == "moving" and "1 keys with different content" in job["error"]


async def test_a_trimmed_change_stream_restarts_the_copy(world: MoverWorld) -> None:
    """Resumed after the stream dropped its checkpoint's records: purge, copy again."""
    w = world
    seeded(w)
    with pytest.raises(Crash):
        await run(w, "move", ACCOUNT, "--to", DEST, hook=crash_at("catch_up"))
    w.source.delete(ACCOUNT, "P#00007")  # a change the trimmed stream no longer has
    w.source.trimmed_before = len(w.source.log)
    items = dict(w.source.of(ACCOUNT))
    code, lines = await run(w, "resume", ACCOUNT)
    assert code == 0, lines[-1]
    assert lines[-1]["counts"]["restarts"] == 1
    await assert_moved(w, items)  # the deleted profile is not in the destination

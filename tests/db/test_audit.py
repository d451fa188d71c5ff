"""Audit-grade history on a real PostgreSQL: the chain PostgreSQL computes, the
append-only guard, tampering found at the right seq, and exports checked offline."""

from __future__ import annotations

import asyncio
import io
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from pgbridge import PostgresStreamBridge, RetentionPolicy, StreamStatus
from pgbridge.audit.chain import GENESIS, link_hash
from pgbridge.audit.export import verify_export
from pgbridge.durable_streams.messages import MESSAGE_EVENT
from pgbridge.durable_streams.streams import StreamConfig
from tests.support.helpers import collect
from tests.support.sql_helpers import backdate_run, connected, guard_lifted

RUN = "run"


async def publish_run(bridge: PostgresStreamBridge, count: int = 10, run_id: str = RUN) -> list[str]:
    ids = [await bridge.publish(run_id, "token", {"n": i, "text": "héllo ✓"}) for i in range(count)]
    return ids


async def verdict(bridge: PostgresStreamBridge, run_id: str = RUN) -> tuple[bool, int | None, str | None]:
    report = await bridge.verify(run_id)
    return report.ok, report.broken_at, report.problem


# -- the chain PostgreSQL computes ------------------------------------------------


async def test_every_stored_hash_is_the_documented_link_hash(bridge: PostgresStreamBridge, dsn: str) -> None:
    await publish_run(bridge, 3)
    await bridge.publish_terminal(RUN, StreamStatus.ENDED, {"ok": True})
    async with connected(dsn) as conn:
        rows = await conn.fetch(
            "SELECT seq, created_ms, event, data::text AS data, hash FROM run_events ORDER BY seq"
        )
        last_hash = await conn.fetchval("SELECT last_hash FROM run_streams")
    prev = GENESIS
    for row in rows:
        prev = link_hash(prev, RUN, row["seq"], row["created_ms"], row["event"], row["data"])
        assert row["hash"] == prev
    assert last_hash == prev


async def test_a_published_run_verifies(bridge: PostgresStreamBridge) -> None:
    await publish_run(bridge)
    await bridge.publish_end(RUN)
    assert await verdict(bridge) == (True, None, None)
    assert (await bridge.verify(RUN)).events_checked == 11


async def test_a_dead_lettered_run_verifies(bridge: PostgresStreamBridge, dsn: str) -> None:
    await publish_run(bridge, 2)
    await backdate_run(dsn, RUN, 601)
    await bridge.run_retention(RetentionPolicy(ended_run_ttl=None, tombstone_ttl=None))
    assert await verdict(bridge) == (True, None, None)


async def test_concurrent_publishers_leave_a_chain_that_verifies(make_bridge: object) -> None:
    bridges = [await make_bridge() for _ in range(3)]  # type: ignore[operator]
    await asyncio.gather(*(publish_run(b, 30) for b in bridges))
    assert await verdict(bridges[0]) == (True, None, None)


async def test_retention_keeps_the_chain_verifiable_from_the_first_retained_event(
    bridge: PostgresStreamBridge,
) -> None:
    await publish_run(bridge, 10)
    await bridge.run_retention(RetentionPolicy(max_events_per_run=4, ended_run_ttl=None, tombstone_ttl=None))
    assert await verdict(bridge) == (True, None, None)
    await publish_run(bridge, 3)  # the chain goes on after a trim
    assert await verdict(bridge) == (True, None, None)


async def test_a_tombstone_and_a_run_trimmed_to_nothing_verify(bridge: PostgresStreamBridge) -> None:
    await publish_run(bridge, 5)
    await bridge.run_retention(RetentionPolicy(max_events_per_run=0, ended_run_ttl=None, tombstone_ttl=None))
    assert await verdict(bridge) == (True, None, None)
    await publish_run(bridge, 2)
    assert await verdict(bridge) == (True, None, None)


async def test_a_run_id_that_never_existed_is_no_such_run_not_a_broken_chain(
    bridge: PostgresStreamBridge,
) -> None:
    report = await bridge.verify("never")
    assert (report.ok, report.broken_at, report.problem, report.verdict) == (
        False,
        None,
        "no such run",
        "no such run",
    )
    assert report.deletion is None and "never" in (report.detail or "")


# -- deleted runs: the record revision 0009 keeps ------------------------------------------


async def test_a_stream_deleted_through_the_api_verifies_as_deleted_with_its_head_and_count(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    config = StreamConfig("application/json")
    await bridge.streams.create("stream", config, [(MESSAGE_EVENT, str(i)) for i in range(3)])
    async with connected(dsn) as conn:
        row = await conn.fetchrow("SELECT last_hash, created_at FROM run_streams WHERE run_id = 'stream'")
    assert await bridge.streams.delete("stream") == "deleted"
    report = await bridge.verify("stream")
    assert (report.ok, report.broken_at, report.problem) == (False, None, "deleted")
    assert report.verdict == "deleted" and not report.broken
    deletion = report.deletion
    assert deletion is not None
    assert (deletion.run_id, deletion.via, deletion.status) == ("stream", "api", "active")
    assert (deletion.last_seq, deletion.events_deleted, deletion.last_hash) == (3, 3, row["last_hash"])
    assert deletion.started_at == row["created_at"] and deletion.deleted_at >= row["created_at"]
    assert report.to_json()["deletion"] == deletion.to_json()
    assert deletion.to_json()["last_hash"] == row["last_hash"].hex()


async def test_deletion_records_are_append_only(bridge: PostgresStreamBridge, dsn: str) -> None:
    await bridge.streams.create("stream", StreamConfig("application/json"), [(MESSAGE_EVENT, "1")])
    await bridge.streams.delete("stream")
    for statement in (
        "UPDATE run_deletions SET via = 'nothing'",
        "DELETE FROM run_deletions",
        "TRUNCATE run_deletions",
    ):
        async with connected(dsn) as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(statement)
    assert (await bridge.verify("stream")).verdict == "deleted"


async def test_verify_command_says_deleted_and_no_such_run(bridge: PostgresStreamBridge, dsn: str) -> None:
    await bridge.streams.create("gone", StreamConfig("application/json"), [(MESSAGE_EVENT, "1")])
    async with connected(dsn) as conn:
        last_hash = await conn.fetchval("SELECT last_hash FROM run_streams WHERE run_id = 'gone'")
    await bridge.streams.delete("gone")
    await publish_run(bridge, 2, "kept")
    code, out, err = await cli("verify", "--dsn", dsn, "kept", "gone", "nope")
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "ok" in lines["kept"]
    assert "deleted" in lines["gone"] and "by api" in lines["gone"] and last_hash.hex() in lines["gone"]
    assert "last seq 1" in lines["gone"]
    assert "no such run" in lines["nope"]
    assert "BROKEN" not in out and "None" not in out
    assert code == 1 and "3 run(s) checked, 0 broken, 1 deleted, 1 not found" in err
    code, out, _ = await cli("verify", "--dsn", dsn, "--json", "gone")
    assert code == 1 and '"verdict": "deleted"' in out and '"via": "api"' in out


# -- tampering, done in SQL by the owner with the guard lifted ------------------------------


async def tamper(dsn: str, *statements: str) -> None:
    async with connected(dsn) as conn, guard_lifted(conn):
        for statement in statements:
            await conn.execute(statement)


async def test_an_event_edited_in_sql_is_found_at_its_seq(bridge: PostgresStreamBridge, dsn: str) -> None:
    await publish_run(bridge)
    await tamper(dsn, """UPDATE run_events SET data = '{"n": "forged"}' WHERE seq = 5""")
    assert await verdict(bridge) == (False, 5, "edited")


async def test_an_event_deleted_in_sql_is_found_missing_at_its_seq(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await publish_run(bridge)
    await tamper(dsn, "DELETE FROM run_events WHERE seq = 5")
    assert await verdict(bridge) == (False, 5, "missing")


async def test_an_event_inserted_in_sql_is_found_where_it_went_in(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await publish_run(bridge)
    await tamper(
        dsn,
        "UPDATE run_events SET seq = seq + 1000000 WHERE seq >= 5",
        "UPDATE run_events SET seq = seq - 999999 WHERE seq > 1000000",
        "INSERT INTO run_events (run_id, seq, created_ms, event, data, hash) "
        """SELECT run_id, 5, created_ms, 'token', '{"n": "intruder"}', hash FROM run_events WHERE seq = 4""",
        "UPDATE run_streams SET last_seq = last_seq + 1",
    )
    assert await verdict(bridge) == (False, 5, "inserted")


async def test_events_reordered_in_sql_are_found(bridge: PostgresStreamBridge, dsn: str) -> None:
    await publish_run(bridge)
    await tamper(
        dsn,
        """
        UPDATE run_events AS a SET created_ms = b.created_ms, event = b.event, data = b.data, hash = b.hash
        FROM run_events AS b
        WHERE (a.seq, b.seq) IN ((5, 6), (6, 5))
        """,
    )
    assert await verdict(bridge) == (False, 5, "reordered")


async def test_newest_events_of_an_ended_run_deleted_in_sql_are_found_missing(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await publish_run(bridge)
    await bridge.publish_end(RUN)  # an ended run's row holds its head exactly
    await tamper(dsn, "DELETE FROM run_events WHERE seq > 7")
    assert await verdict(bridge) == (False, 8, "missing")


async def test_events_of_an_open_run_deleted_in_sql_up_to_its_rows_head_are_found_missing(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    # An open run's row holds its head as of its last write (revision 0012: at most 255 events
    # behind): a deletion that reaches below it is found; newer events have only the chain.
    await bridge.publish_many(RUN, [("token", {"n": n}) for n in range(300)])  # the row: seq 300
    await publish_run(bridge, 5)  # 301..305, not in the row
    await tamper(dsn, "DELETE FROM run_events WHERE seq > 297")
    assert await verdict(bridge) == (False, 298, "missing")


# -- the guard ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE run_events SET data = '1'",
        "DELETE FROM run_events WHERE seq = 1",
        "TRUNCATE run_events",
    ],
)
async def test_the_guard_refuses_rewriting_history_even_to_the_owner(
    bridge: PostgresStreamBridge, dsn: str, statement: str
) -> None:
    await publish_run(bridge, 3)
    async with connected(dsn) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(statement)
    assert await verdict(bridge) == (True, None, None)


def as_role(dsn: str, role: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


@pytest_asyncio.fixture
async def runtime_role(dsn: str) -> AsyncIterator[str]:
    """A least-privilege role with the grants docs/audit.md lists; yields its DSN."""
    role = f"pgbridge_rt_{uuid.uuid4().hex[:8]}"
    async with connected(dsn) as conn:
        await conn.execute(f"CREATE ROLE {role} LOGIN")
        await conn.execute(
            f"""
            GRANT USAGE ON SCHEMA public TO {role};
            GRANT SELECT ON alembic_version TO {role};
            GRANT SELECT, INSERT, UPDATE, DELETE ON run_streams TO {role};
            GRANT SELECT, INSERT ON run_events TO {role};
            GRANT EXECUTE ON FUNCTION pgbridge_trim_run_prefixes(text[], bigint[], bigint[]) TO {role};
            GRANT SELECT, INSERT, UPDATE ON retention_last_pass TO {role};
            GRANT SELECT, INSERT ON run_deletions TO {role};
            GRANT SELECT ON pgbridge_runs, pgbridge_events TO {role};
            """
        )
    yield as_role(dsn, role)
    async with connected(dsn) as conn:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize(
    "statements",
    [
        ["UPDATE run_events SET data = '1'"],
        ["DELETE FROM run_events"],
        ["SET pgbridge.retention = 'on'", "DELETE FROM run_events"],
        ["ALTER TABLE run_events DISABLE TRIGGER run_events_append_only"],
        ["DROP TRIGGER run_events_append_only ON run_events"],
        ["SET session_replication_role = replica"],
        ["TRUNCATE run_events"],
        ["ALTER TABLE run_events ADD COLUMN note text"],
        ["DROP TABLE run_events"],
        ["CREATE INDEX ON run_events (event)"],
        ["CREATE TABLE public.shadow (a int)"],
        ["UPDATE alembic_version SET version_num = '0001'"],
        ["DELETE FROM run_deletions"],
        ["ALTER TABLE run_streams DISABLE TRIGGER run_streams_record_deletion"],
    ],
    ids=[
        "update",
        "delete",
        "delete with the setting",
        "disable trigger",
        "drop trigger",
        "replica mode",
        "truncate",
        "alter table",
        "drop table",
        "create index",
        "create table",
        "rewrite the schema revision",
        "delete a deletion record",
        "delete runs unrecorded",
    ],
)
async def test_the_runtime_role_can_neither_rewrite_history_nor_change_the_schema(
    runtime_role: str, statements: list[str]
) -> None:
    async with PostgresStreamBridge(runtime_role) as bridge:
        await publish_run(bridge, 3)
    conn = await asyncpg.connect(runtime_role)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            for statement in statements:
                await conn.execute(statement)
    finally:
        await conn.close()


async def test_the_runtime_role_publishes_reads_and_runs_retention(runtime_role: str) -> None:
    async with PostgresStreamBridge(runtime_role) as bridge:
        await publish_run(bridge, 6)
        await bridge.publish_end(RUN)
        report = await bridge.run_retention(
            RetentionPolicy(max_events_per_run=2, ended_run_ttl=None, tombstone_ttl=None)
        )
        assert report.events_deleted == 5
        assert len(await collect(bridge.subscribe(RUN, last_event_id="0-0"))) == 1 + 2  # gap + kept
        assert await verdict(bridge) == (True, None, None)


async def test_the_runtime_role_deletes_tombstones_and_their_records_stay(
    runtime_role: str, dsn: str
) -> None:
    async with PostgresStreamBridge(runtime_role) as bridge:
        await publish_run(bridge, 2)
        await bridge.publish_end(RUN)
        await backdate_run(dsn, RUN, 40 * 86400)
        report = await bridge.run_retention(RetentionPolicy(ended_run_ttl=86400, tombstone_ttl=86400))
        assert report.runs_deleted == 1
        deleted = await bridge.verify(RUN)
    assert deleted.deletion is not None and (deleted.deletion.via, deleted.deletion.last_seq) == (
        "retention",
        3,
    )


async def test_a_runtime_role_that_may_not_record_the_pass_still_runs_retention(
    runtime_role: str, dsn: str
) -> None:
    async with connected(dsn) as conn:
        role = urlsplit(runtime_role).username
        await conn.execute(f"REVOKE INSERT, UPDATE ON retention_last_pass FROM {role}")
    async with PostgresStreamBridge(runtime_role) as bridge:
        await publish_run(bridge, 3)
        report = await bridge.run_retention(RetentionPolicy(max_events_per_run=1))
    assert report.events_deleted == 2
    async with connected(dsn) as conn:
        assert await conn.fetchval("SELECT count(*) FROM retention_last_pass") == 0


# -- export, offline -----------------------------------------------------------------------


async def test_an_export_verifies_offline_and_matches_the_database(bridge: PostgresStreamBridge) -> None:
    ids = await publish_run(bridge, 5)
    await bridge.publish_end(RUN)
    out = io.StringIO()
    assert await bridge.export(RUN, out) == 6
    lines = out.getvalue().splitlines()
    assert len(lines) == 7 and '"format":"pgbridge-chain-v1"' in lines[0]
    assert ids[0] in lines[1]
    assert verify_export(lines).ok


# -- the commands ----------------------------------------------------------------------------


async def cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pgbridge.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_verify_command_reports_each_run_and_fails_when_one_is_broken(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await publish_run(bridge, 4, "good")
    await publish_run(bridge, 4, "bad")
    code, out, _ = await cli("verify", "--dsn", dsn, "good")
    assert code == 0 and "good" in out and "ok" in out
    await tamper(dsn, """UPDATE run_events SET data = '"x"' WHERE run_id = 'bad' AND seq = 2""")
    code, out, err = await cli("verify", "--dsn", dsn, "--all")
    assert code == 1
    assert "BROKEN at seq 2: edited" in out and "2 run(s) checked, 1 broken" in err
    code, out, _ = await cli("verify", "--dsn", dsn, "--json", "bad")
    assert code == 1 and '"problem": "edited"' in out and '"broken_at": 2' in out


async def test_export_then_verify_file_checks_a_run_without_the_database(
    bridge: PostgresStreamBridge, dsn: str, tmp_path: Path
) -> None:
    await publish_run(bridge, 4)
    export = tmp_path / "run.jsonl"
    code, _, err = await cli("export", "--dsn", dsn, RUN, "--output", str(export))
    assert code == 0, err
    code, out, _ = await cli("verify", "--file", str(export))
    assert code == 0 and "ok" in out
    lines = export.read_text().splitlines()
    lines[2] = lines[2].replace('\\"n\\":1', '\\"n\\":7')
    export.write_text("\n".join(lines) + "\n")
    code, out, _ = await cli("verify", "--file", str(export))
    assert code == 1 and "BROKEN at seq 2: edited" in out


async def test_verify_without_runs_says_what_to_give(dsn: str) -> None:
    code, _, err = await cli("verify", "--dsn", dsn)
    assert code == 2 and "--all" in err

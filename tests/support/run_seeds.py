"""Realistic runs for the inspection tests and the SQL cookbook: an agent's
life, told in events, with the times moved into the past by SQL.

Runs are published through the bridge (so every row is what pgbridge really
writes), then their times are set: the run's start, its end or last
activity, and its events spread evenly between the two. Times are set, never
waited for, so no test depends on timing. (Setting ``created_ms`` breaks the
runs' hash chains; these tests do not verify them.)
"""

from __future__ import annotations

from dataclasses import dataclass

from pgbridge import PostgresStreamBridge, RetentionPolicy, StreamStatus
from tests.support.sql_helpers import backdate_run, connected, evict_prefix, guard_lifted

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0


async def set_run_times(
    dsn: str,
    run_id: str,
    *,
    started_ago: float,
    until_ago: float,
    ended: bool,
    awaiting_since_ago: float | None = None,
) -> None:
    """Start *run_id* *started_ago* seconds ago and spread its events evenly up to
    *until_ago* seconds ago: its end if *ended*, else its last activity."""
    async with connected(dsn) as conn, guard_lifted(conn):
        start_ms, end_ms = await conn.fetchrow(
            "SELECT floor(extract(epoch FROM now() - make_interval(secs => $1)) * 1000)::bigint, "
            "floor(extract(epoch FROM now() - make_interval(secs => $2)) * 1000)::bigint",
            float(started_ago),
            float(until_ago),
        )
        last_seq = await conn.fetchval("SELECT last_seq FROM run_streams WHERE run_id = $1", run_id)
        spread = max(last_seq - 1, 1)
        await conn.execute(
            "UPDATE run_events SET created_ms = $2::bigint + ($3::bigint - $2::bigint) * (seq - 1) "
            "/ $4::bigint WHERE run_id = $1",
            run_id,
            start_ms,
            end_ms,
            spread,
        )
        await conn.execute(
            """
            UPDATE run_streams SET
                created_at = to_timestamp($2::bigint / 1000.0),
                updated_at = to_timestamp($3::bigint / 1000.0),
                ended_at = CASE WHEN $4::boolean THEN to_timestamp($3::bigint / 1000.0) END,
                last_ms = $3::bigint,
                first_ms = (SELECT e.created_ms FROM run_events AS e
                            WHERE e.run_id = $1 AND e.seq = run_streams.first_seq),
                awaiting_input_since = now() - make_interval(secs => $5::float8)
            WHERE run_id = $1
            """,
            run_id,
            start_ms,
            end_ms,
            ended,
            awaiting_since_ago,
        )


@dataclass(frozen=True)
class Seeded:
    """What was seeded, for the checks."""

    #: run id -> (event name, data) of each event, in order, as published.
    events: dict[str, list[tuple[str, object]]]


async def _publish(
    bridge: PostgresStreamBridge,
    seeded: dict[str, list[tuple[str, object]]],
    run_id: str,
    *events: tuple[str, object],
) -> None:
    for name, data in events:
        await bridge.publish(run_id, name, data)  # type: ignore[arg-type]
    seeded.setdefault(run_id, []).extend(events)


async def _terminal(
    bridge: PostgresStreamBridge,
    seeded: dict[str, list[tuple[str, object]]],
    run_id: str,
    kind: StreamStatus,
    data: object,
) -> None:
    await bridge.publish_terminal(run_id, kind, data)  # type: ignore[arg-type]
    name = {StreamStatus.ENDED: "end", StreamStatus.ERRORED: "error", StreamStatus.CANCELLED: "cancel"}[kind]
    seeded[run_id].append((name, data))


async def seed_agent_runs(bridge: PostgresStreamBridge, dsn: str) -> Seeded:
    """A morning on an agent platform, as of now:

    ========================  =========  ==========================================
    run                       status     story
    ========================  =========  ==========================================
    run-42                    ended      thought, searched, answered in 90 s (started 10 min ago)
    run-errored-recent        errored    rate limited 1 h 54 min ago, a 6 min run
    run-errored-old           errored    timed out 3 days ago
    run-dead                  errored    its worker died; the reaper dead-lettered it just now
    run-waiting               awaiting   asked a question 30 min ago
    run-waiting-2             awaiting   asked for approval 5 min ago
    run-live                  active     streaming tokens right now
    run-stuck                 active     called a tool 20 min ago, silent since (no reaper pass yet)
    run-cancelled             cancelled  cancelled by its user 69 min ago
    run-slow                  ended      ran for an hour, ended 4 h ago
    run-fast                  ended      2 s, 30 min ago
    run-trimmed               ended      50 tokens; retention kept the newest 10
    ========================  =========  ==========================================
    """
    seeded: dict[str, list[tuple[str, object]]] = {}

    # The reaper goes first, while run-dead is the only silent run.
    await _publish(bridge, seeded, "run-dead", ("token", {"text": "Working on"}))
    await backdate_run(dsn, "run-dead", HOUR)
    await bridge.run_retention(RetentionPolicy(ended_run_ttl=None, tombstone_ttl=None))
    seeded["run-dead"].append(("dead_letter", None))
    await set_run_times(dsn, "run-dead", started_ago=HOUR + 5 * MINUTE, until_ago=0, ended=True)

    await _publish(
        bridge,
        seeded,
        "run-42",
        ("status", {"phase": "thinking"}),
        ("tool_call", {"tool": "search", "query": "weather in Paris"}),
        ("tool_result", {"tool": "search", "result": "sunny, 24°C"}),
        ("token", {"text": "It is"}),
        ("token", {"text": " sunny"}),
        ("token", {"text": " in Paris."}),
    )
    await _terminal(bridge, seeded, "run-42", StreamStatus.ENDED, {"tokens": 3})
    await set_run_times(dsn, "run-42", started_ago=10 * MINUTE, until_ago=8.5 * MINUTE, ended=True)

    await _publish(
        bridge,
        seeded,
        "run-errored-recent",
        ("token", {"text": "Let me look"}),
        ("tool_call", {"tool": "browse", "url": "https://example.com"}),
    )
    await _terminal(
        bridge,
        seeded,
        "run-errored-recent",
        StreamStatus.ERRORED,
        {"message": "rate limited by the model provider"},
    )
    await set_run_times(
        dsn, "run-errored-recent", started_ago=2 * HOUR, until_ago=2 * HOUR - 6 * MINUTE, ended=True
    )

    await _publish(bridge, seeded, "run-errored-old", ("token", {"text": "Hm"}))
    await _terminal(bridge, seeded, "run-errored-old", StreamStatus.ERRORED, {"message": "timeout"})
    await set_run_times(dsn, "run-errored-old", started_ago=3 * DAY, until_ago=3 * DAY - MINUTE, ended=True)

    for run_id, question, asked_ago in (
        ("run-waiting", "Which city should I book?", 30 * MINUTE),
        ("run-waiting-2", "Approve the refund of 40 EUR?", 5 * MINUTE),
    ):
        await _publish(
            bridge, seeded, run_id, ("token", {"text": "I need to ask."}), ("question", {"text": question})
        )
        await bridge.mark_awaiting_input(run_id)
        await set_run_times(
            dsn,
            run_id,
            started_ago=asked_ago + 10 * MINUTE,
            until_ago=asked_ago,
            ended=False,
            awaiting_since_ago=asked_ago,
        )

    await _publish(bridge, seeded, "run-live", *(("token", {"text": f"t{i} "}) for i in range(5)))
    await set_run_times(dsn, "run-live", started_ago=2 * MINUTE, until_ago=0, ended=False)

    await _publish(bridge, seeded, "run-stuck", ("tool_call", {"tool": "search", "query": "flights"}))
    await set_run_times(dsn, "run-stuck", started_ago=20 * MINUTE, until_ago=20 * MINUTE, ended=False)

    await _publish(bridge, seeded, "run-cancelled", ("token", {"text": "Sure"}))
    await _terminal(bridge, seeded, "run-cancelled", StreamStatus.CANCELLED, {"by": "user"})
    await set_run_times(dsn, "run-cancelled", started_ago=70 * MINUTE, until_ago=69 * MINUTE, ended=True)

    await _publish(
        bridge, seeded, "run-slow", ("tool_call", {"tool": "search", "query": "every paper on RAG"})
    )
    await _terminal(bridge, seeded, "run-slow", StreamStatus.ENDED, None)
    await set_run_times(dsn, "run-slow", started_ago=5 * HOUR, until_ago=4 * HOUR, ended=True)

    await _publish(bridge, seeded, "run-fast", ("token", {"text": "Hi!"}))
    await _terminal(bridge, seeded, "run-fast", StreamStatus.ENDED, None)
    await set_run_times(dsn, "run-fast", started_ago=30 * MINUTE + 2, until_ago=30 * MINUTE, ended=True)

    await _publish(bridge, seeded, "run-trimmed", *(("token", {"text": f"w{i} "}) for i in range(49)))
    await _terminal(bridge, seeded, "run-trimmed", StreamStatus.ENDED, None)
    await evict_prefix(dsn, "run-trimmed", keep_from_seq=41)
    await set_run_times(dsn, "run-trimmed", started_ago=6 * HOUR, until_ago=5.5 * HOUR, ended=True)

    return Seeded(events=seeded)

"""Every SQL statement the bridge runs, in one place, named by what it does.

Statements are plain strings for asyncpg (the hot path pays no ORM cost);
asyncpg prepares and caches each one per connection. They are built once per
bridge for its PostgreSQL schema. Every statement on the publish, subscribe
and replay paths filters on a single ``run_id``, so each would route to one
shard if the tables were distributed by ``run_id``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgbridge.schema import DEFAULT_SCHEMA

#: Server-clock Unix milliseconds: one clock for every process.
_NOW_MS = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"


def quote_identifier(name: str) -> str:
    """Quote *name* as a PostgreSQL identifier."""
    if not name or "\x00" in name:
        raise ValueError(f"not a valid PostgreSQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of the bridges that share *schema*."""
    return "pgbridge" if schema == DEFAULT_SCHEMA else f"pgbridge.{schema}"[:63]


@dataclass(frozen=True, slots=True)
class Queries:
    """The SQL of one bridge, qualified with its schema."""

    schema: str
    append_event: str
    terminal_event_of_run: str
    resolve_cursor: str
    read_events_after: str
    mark_awaiting_input: str
    notify_runs: str
    schema_revision: str

    @classmethod
    def for_schema(cls, schema: str = DEFAULT_SCHEMA) -> Queries:
        s = quote_identifier(schema)
        return cls(
            schema=schema,
            # One statement, one round trip: take the run row's lock while
            # bumping last_seq (creating the run on its first event), then
            # insert the event with that seq. Seq order is commit order
            # within a run; a run with a terminal event matches no row, so
            # nothing is inserted and no row comes back.
            # $1 run_id, $2 event, $3 data (JSON text), $4 terminal, $5 status
            append_event=f"""
                WITH stamp AS (SELECT {_NOW_MS} AS ms),
                run AS (
                    INSERT INTO {s}.run_streams AS r
                        (run_id, status, last_seq, last_ms, terminal_seq, ended_at)
                    SELECT $1, $5, 1, stamp.ms,
                           CASE WHEN $4::boolean THEN 1 END,
                           CASE WHEN $4::boolean THEN now() END
                    FROM stamp
                    ON CONFLICT (run_id) DO UPDATE SET
                        last_seq = r.last_seq + 1,
                        last_ms = excluded.last_ms,
                        status = excluded.status,
                        terminal_seq = CASE WHEN $4::boolean THEN r.last_seq + 1 END,
                        ended_at = excluded.ended_at,
                        awaiting_input_since = NULL,
                        updated_at = now()
                    WHERE r.terminal_seq IS NULL
                    RETURNING r.last_seq, r.last_ms
                )
                INSERT INTO {s}.run_events (run_id, seq, created_ms, event, data, terminal)
                SELECT $1, run.last_seq, run.last_ms, $2, $3::text::json, $4::boolean
                FROM run
                RETURNING seq, created_ms
            """,
            # The terminal event is always a run's last: its ID is last_ms-last_seq.
            terminal_event_of_run=f"""
                SELECT terminal_seq, last_ms FROM {s}.run_streams
                WHERE run_id = $1 AND terminal_seq IS NOT NULL
            """,
            # $1 run_id, $2 the cursor's seq: the retained range and the
            # creation time of the event the cursor names.
            resolve_cursor=f"""
                SELECT r.first_seq, r.last_seq, e.created_ms AS stored_ms
                FROM {s}.run_streams AS r
                LEFT JOIN {s}.run_events AS e ON e.run_id = r.run_id AND e.seq = $2
                WHERE r.run_id = $1
            """,
            # $1 run_id, $2 cursor seq, $3 page size. One snapshot gives the
            # run's state and the next page of events, so a reader sees the
            # retained range and the rows consistently. No row: no such run.
            read_events_after=f"""
                SELECT r.first_seq, r.last_seq, r.last_ms, r.terminal_seq,
                       e.seq, e.created_ms, e.event, e.data::text AS data, e.terminal
                FROM {s}.run_streams AS r
                LEFT JOIN LATERAL (
                    SELECT seq, created_ms, event, data, terminal
                    FROM {s}.run_events
                    WHERE run_id = $1 AND seq > $2
                    ORDER BY seq
                    LIMIT $3
                ) AS e ON true
                WHERE r.run_id = $1
                ORDER BY e.seq
            """,
            mark_awaiting_input=f"""
                UPDATE {s}.run_streams
                SET status = 'awaiting_input', awaiting_input_since = now(), updated_at = now()
                WHERE run_id = $1 AND status IN ('active', 'awaiting_input')
            """,
            # $1 channel, $2 payloads: one statement (one transaction) for every
            # wake-up that piled up; distinct payloads are never merged.
            notify_runs="SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload",
            schema_revision=f"SELECT version_num FROM {s}.alembic_version",
        )

"""The SQL views over the log (revision 0005), as DDL text: history as plain SQL.

Alembic does not track views, so their definitions live here, named, and the
revision executes them; a test compares the database's definitions with
these. Every column is documented in ``docs/sql.md``.

* ``pgbridge_runs``: one row per run, its status, counts, first/last/terminal
  event IDs in their public ``<ms>-<seq>`` form, times and duration.
* ``pgbridge_events``: one row per retained event, with its public ID and its
  creation time as a ``timestamptz``.

Both are plain projections of the tables (one primary-key lookup per run for
the terminal event's name), so a filter on ``run_id``, ``seq``,
``terminal_seq``, ``last_activity_at`` or ``ended_at`` reaches the tables'
indexes through them.
"""

from __future__ import annotations

from typing import Final

from pgbridge.sql import quote_identifier

RUNS_VIEW: Final = "pgbridge_runs"
EVENTS_VIEW: Final = "pgbridge_events"

#: The columns of each view, in order (docs/sql.md documents each one).
RUNS_VIEW_COLUMNS: Final = (
    "run_id",
    "status",
    "terminal_event",
    "awaiting_input",
    "events_published",
    "events_retained",
    "events_deleted",
    "first_seq",
    "last_seq",
    "terminal_seq",
    "first_event_id",
    "last_event_id",
    "terminal_event_id",
    "started_at",
    "last_event_at",
    "last_activity_at",
    "awaiting_input_since",
    "ended_at",
    "duration",
)
EVENTS_VIEW_COLUMNS: Final = (
    "run_id",
    "seq",
    "event_id",
    "event",
    "data",
    "terminal",
    "created_ms",
    "created_at",
)


def _ms_to_timestamptz(column: str) -> str:
    # Exact to the microsecond for any ms a bigint holds in this century.
    return f"to_timestamp({column} / 1000.0)"


def runs_view_sql(schema: str) -> str:
    """``CREATE OR REPLACE VIEW pgbridge_runs``."""
    s = quote_identifier(schema)
    retained = "r.first_seq <= r.last_seq"
    return f"""
        CREATE OR REPLACE VIEW {s}.{RUNS_VIEW} AS
        SELECT
            r.run_id,
            r.status,
            t.event AS terminal_event,
            r.status = 'awaiting_input' AS awaiting_input,
            r.last_seq AS events_published,
            r.last_seq - r.first_seq + 1 AS events_retained,
            r.first_seq - 1 AS events_deleted,
            r.first_seq,
            r.last_seq,
            r.terminal_seq,
            CASE WHEN {retained} THEN r.first_ms || '-' || r.first_seq END AS first_event_id,
            CASE WHEN {retained} THEN r.last_ms || '-' || r.last_seq END AS last_event_id,
            CASE WHEN r.terminal_seq IS NOT NULL THEN r.last_ms || '-' || r.terminal_seq END
                AS terminal_event_id,
            r.created_at AS started_at,
            {_ms_to_timestamptz("r.last_ms")} AS last_event_at,
            r.updated_at AS last_activity_at,
            r.awaiting_input_since,
            r.ended_at,
            coalesce(r.ended_at, now()) - r.created_at AS duration
        FROM {s}.run_streams AS r
        LEFT JOIN {s}.run_events AS t ON t.run_id = r.run_id AND t.seq = r.terminal_seq
    """


def events_view_sql(schema: str) -> str:
    """``CREATE OR REPLACE VIEW pgbridge_events``."""
    s = quote_identifier(schema)
    return f"""
        CREATE OR REPLACE VIEW {s}.{EVENTS_VIEW} AS
        SELECT
            e.run_id,
            e.seq,
            e.created_ms || '-' || e.seq AS event_id,
            e.event,
            e.data,
            e.terminal,
            e.created_ms,
            {_ms_to_timestamptz("e.created_ms")} AS created_at
        FROM {s}.run_events AS e
    """


def create_views_sql(schema: str) -> list[str]:
    return [runs_view_sql(schema), events_view_sql(schema)]


def drop_views_sql(schema: str) -> list[str]:
    s = quote_identifier(schema)
    return [f"DROP VIEW IF EXISTS {s}.{EVENTS_VIEW}", f"DROP VIEW IF EXISTS {s}.{RUNS_VIEW}"]

"""The application's own table, and the one function that writes to it and to the run together.

A tool call's result is a row of ``tool_calls``; the run's stream says
``tool_result`` for it. Both are written by :func:`record_tool_call` in the
caller's transaction, with ``bridge.publish_in``: they commit together or
not at all. A crash between the two writes, or before the commit, leaves
neither (tests/faults/test_publish_in_kill.py kills a process right there).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pgbridge import JSONValue, PostgresStreamBridge

metadata = sa.MetaData()

#: The application's table: one row per tool call, with its result.
tool_calls = sa.Table(
    "tool_calls",
    metadata,
    sa.Column("call_id", sa.Text, primary_key=True),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("tool", sa.Text, nullable=False),
    sa.Column("result", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)


async def record_tool_call(
    conn: AsyncConnection,
    bridge: PostgresStreamBridge,
    run_id: str,
    call_id: str,
    tool: str,
    result: dict[str, Any],
) -> str:
    """Store a tool call's result and publish its ``tool_result`` event, in the transaction
    *conn* is in; returns the event's ID (the event's only once that transaction commits).

    The row first, the event last: publishing takes the run's row lock, which other
    publishers of the run wait for until this transaction ends (docs/transactions.md).
    """
    await conn.execute(sa.insert(tool_calls).values(call_id=call_id, run_id=run_id, tool=tool, result=result))
    event: dict[str, JSONValue] = {"call_id": call_id, "tool": tool, "result": result}
    return await bridge.publish_in(conn, run_id, "tool_result", event)


async def rows_with_their_events(conn: AsyncConnection, run_id: str) -> list[sa.Row[Any]]:
    """Each tool call of *run_id* beside the event that announced it (plain SQL over both)."""
    events = sa.table(
        "run_events", sa.column("run_id"), sa.column("seq"), sa.column("created_ms"), sa.column("data")
    )
    call_id_of_event = sa.cast(events.c.data, sa.JSON)["call_id"].as_string()
    query = (
        sa.select(
            tool_calls.c.call_id,
            tool_calls.c.tool,
            (sa.cast(events.c.created_ms, sa.Text) + "-" + sa.cast(events.c.seq, sa.Text)).label("event_id"),
        )
        .join(
            events, sa.and_(events.c.run_id == tool_calls.c.run_id, call_id_of_event == tool_calls.c.call_id)
        )
        .where(tool_calls.c.run_id == run_id)
        .order_by(events.c.seq)
    )
    return list((await conn.execute(query)).all())

"""Stream pages: the read behind every Durable Streams GET, rendered by PostgreSQL into one body.

A page is what one catch-up response, long-poll answer or SSE data event
carries: the messages after an offset, at most ``max_messages`` of them and
no more than ``max_bytes`` of message data (one message always), as a JSON
array for a JSON stream and as the bytes themselves for any other.
"""

from __future__ import annotations

import base64
import json

import asyncpg

from pgbridge import PostgresStreamBridge
from pgbridge.durable_streams.forks import ForkRequest
from pgbridge.durable_streams.messages import JSON_TYPE, bytes_message
from pgbridge.durable_streams.streams import StreamConfig, StreamPage
from pgbridge.sql.queries import StreamQueries

BIG = 1 << 30


async def json_stream(bridge: PostgresStreamBridge, run_id: str, messages: list[object]) -> str:
    created, _ = await bridge.streams.create(run_id, StreamConfig(JSON_TYPE))
    assert created
    if messages:
        events = [("message", json.dumps(m)) for m in messages]
        outcome = await bridge.streams.append(run_id, JSON_TYPE, events)
        assert outcome.kind == "appended"
    return run_id


async def page(
    bridge: PostgresStreamBridge, run_id: str, after: int, *, max_messages: int = 1000, max_bytes: int = BIG
) -> StreamPage:
    read = await bridge.streams.read_page(run_id, after, max_messages=max_messages, max_bytes=max_bytes)
    assert read is not None
    return read


async def test_a_page_of_a_json_stream_is_its_messages_as_one_json_array(
    bridge: PostgresStreamBridge,
) -> None:
    messages = [{"i": 1}, "two", [3], None, {"text": 'a "quoted", comma\n and é ☃'}]
    run_id = await json_stream(bridge, "pages-json", messages)
    read = await page(bridge, run_id, 0)
    assert json.loads(read.body) == messages
    assert (read.count, read.next_seq, read.up_to_date) == (5, 5, True)


async def test_a_page_after_an_offset_starts_with_the_next_message(bridge: PostgresStreamBridge) -> None:
    run_id = await json_stream(bridge, "pages-after", list(range(10)))
    read = await page(bridge, run_id, 6)
    assert json.loads(read.body) == [6, 7, 8, 9]
    assert read.next_seq == 10


async def test_a_page_at_the_tail_is_empty_and_up_to_date(bridge: PostgresStreamBridge) -> None:
    run_id = await json_stream(bridge, "pages-tail", [1, 2])
    read = await page(bridge, run_id, 2)
    assert (read.body, read.count, read.next_seq, read.up_to_date) == (b"[]", 0, 2, True)


async def test_a_page_holds_at_most_max_messages_and_says_more_follow(bridge: PostgresStreamBridge) -> None:
    run_id = await json_stream(bridge, "pages-rows", list(range(10)))
    read = await page(bridge, run_id, 0, max_messages=4)
    assert json.loads(read.body) == [0, 1, 2, 3]
    assert (read.next_seq, read.up_to_date) == (4, False)


async def test_a_page_of_exactly_max_messages_to_the_tail_is_up_to_date(bridge: PostgresStreamBridge) -> None:
    run_id = await json_stream(bridge, "pages-exact", list(range(4)))
    read = await page(bridge, run_id, 0, max_messages=4)
    assert (read.count, read.up_to_date) == (4, True)


async def test_a_page_stops_at_the_byte_budget(bridge: PostgresStreamBridge) -> None:
    messages = ["x" * 98] * 10  # 100 bytes of JSON text each
    run_id = await json_stream(bridge, "pages-bytes", messages)
    read = await page(bridge, run_id, 0, max_bytes=350)
    assert read.count == 3
    assert not read.up_to_date


async def test_a_page_fills_its_byte_budget_exactly_and_not_a_byte_more(bridge: PostgresStreamBridge) -> None:
    run_id = await json_stream(bridge, "pages-exact-bytes", ["x" * 98] * 5)  # 100 bytes each
    assert (await page(bridge, run_id, 0, max_bytes=300)).count == 3
    assert (await page(bridge, run_id, 0, max_bytes=299)).count == 2


async def test_a_page_holds_one_message_larger_than_the_byte_budget(bridge: PostgresStreamBridge) -> None:
    run_id = await json_stream(bridge, "pages-one", ["y" * 500, "z"])
    read = await page(bridge, run_id, 0, max_bytes=10)
    assert json.loads(read.body) == ["y" * 500]
    assert read.next_seq == 1


async def test_reading_page_after_page_gives_every_message_once_in_order(
    bridge: PostgresStreamBridge,
) -> None:
    messages = [{"i": i, "pad": "p" * (i % 37)} for i in range(500)]
    run_id = await json_stream(bridge, "pages-walk", messages)
    received: list[object] = []
    after, requests = 0, 0
    while True:
        read = await page(bridge, run_id, after, max_messages=64, max_bytes=2000)
        received.extend(json.loads(read.body))
        after, requests = read.next_seq, requests + 1
        if read.up_to_date:
            break
    assert received == messages
    assert requests > 500 // 64


async def test_a_page_of_a_run_born_from_publish_holds_each_events_envelope(
    bridge: PostgresStreamBridge,
) -> None:
    name = 'say "hi"\\ \t\x01 é ☃'  # every character JSON must escape, and some it need not
    first = await bridge.publish("pages-published", name, {"text": "a, b", "n": [1, 2.5, None]})
    second = await bridge.publish("pages-published", "end", "done")
    read = await page(bridge, "pages-published", 0)
    assert json.loads(read.body) == [
        {"id": first, "event": name, "data": {"text": "a, b", "n": [1, 2.5, None]}},
        {"id": second, "event": "end", "data": "done"},
    ]


async def test_a_page_of_a_binary_stream_is_its_messages_bytes_concatenated(
    bridge: PostgresStreamBridge,
) -> None:
    kind = "application/octet-stream"
    created, _ = await bridge.streams.create("pages-binary", StreamConfig(kind))
    assert created
    chunks = [b"\x00\x01,\xff", b'"quoted"', bytes(range(256))]
    await bridge.streams.append("pages-binary", kind, [("message", bytes_message(c)) for c in chunks])
    read = await page(bridge, "pages-binary", 1)
    assert read.body == chunks[1] + chunks[2]
    assert base64.b64encode(read.body)  # bytes, not text


async def test_a_page_of_a_fork_is_its_source_up_to_the_fork_point_then_its_own(
    bridge: PostgresStreamBridge,
) -> None:
    source = await json_stream(bridge, "pages-source", ["s1", "s2", "s3", "s4"])
    created, _ = await bridge.streams.create_fork(
        "pages-fork", StreamConfig(JSON_TYPE), ForkRequest(source, offset_seq=2)
    )
    assert created
    await bridge.streams.append("pages-fork", JSON_TYPE, [("message", '"f3"'), ("message", '"f4"')])
    assert json.loads((await page(bridge, "pages-fork", 0)).body) == ["s1", "s2", "f3", "f4"]
    assert json.loads((await page(bridge, "pages-fork", 1, max_messages=2)).body) == ["s2", "f3"]


async def test_a_page_of_no_stream_is_none(bridge: PostgresStreamBridge) -> None:
    assert await bridge.streams.read_page("pages-missing", 0, max_messages=10, max_bytes=BIG) is None


async def test_a_page_read_of_a_long_stream_scans_only_the_rows_it_may_return(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    # Without a bound on the seq range, a stale row estimate made PostgreSQL read
    # and sort every event of the run for each page (found by the benchmark).
    run_id = await json_stream(bridge, "pages-long", list(range(20_000)))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET enable_indexscan = off")  # the plan a stale estimate led to
        plan = await conn.fetchval(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + StreamQueries.for_schema("public").read_stream_page,
            run_id,
            1000,
            100,
            BIG,
            JSON_TYPE,
        )
    finally:
        await conn.close()
    scans = list(_nodes_on(json.loads(plan)[0]["Plan"], "run_events"))
    assert scans
    assert all(node["Actual Rows"] * node["Actual Loops"] <= 101 for node in scans)


def _nodes_on(node: dict[str, object], relation: str) -> list[dict[str, object]]:
    """The plan nodes that read *relation*, anywhere under *node*."""
    found = [node] if node.get("Relation Name") == relation else []
    for child in node.get("Plans", []):  # type: ignore[union-attr]
        found.extend(_nodes_on(child, relation))
    return found

"""Hostile input: every value either works or raises InvalidEventError, never writes part
of an event, never disturbs another run, and the HTTP layer never answers 500.

The pure checks run under hypothesis; the database and HTTP checks use a
fixed list of the nastiest values (control characters, SQL-looking text,
huge strings, unicode edge cases), so the suite stays fast and repeatable.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgbridge import InvalidEventError, PostgresStreamBridge
from pgbridge.ids import RetainedRange, parse_event_id, resolve_cursor, validate_run_id
from pgbridge.payload import decode_data, encode_data, validate_event_name
from tests.support.helpers import take
from tests.support.sql_helpers import event_rows

NASTY_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\n\r\t",
    "\x1b[31mred",
    "'; DROP TABLE run_events; --",
    "$1",
    "%s%s%s",
    "\ud800",
    "e\u0301",
    "\u202e\u2066rtl",
    "🦜" * 100,
    "x" * 255,
    "x" * 256,
    "x" * 100_000,
    "__gap__",
    "1-1",
    "٣-٣",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


# -- pure, under hypothesis ----------------------------------------------------------------


@given(st.text(max_size=120))
def test_any_cursor_string_resolves_to_a_status_and_never_raises(cursor: str) -> None:
    result = resolve_cursor(cursor, RetainedRange(first=3, last=9, stored_ms=None))
    assert result.status in {"fresh", "resumed", "evicted", "unknown", "invalid"}
    assert result.next_offset >= 3
    parsed = parse_event_id(cursor)
    assert parsed is None or (parsed.ms >= 0 and parsed.seq >= 0)


@given(st.text(max_size=300))
def test_any_run_id_is_accepted_or_refused_with_invalid_event_error(run_id: str) -> None:
    try:
        assert validate_run_id(run_id) == run_id
    except InvalidEventError:
        assert not run_id or len(run_id) > 255 or "\x00" in run_id or _has_surrogate(run_id)


@given(st.text(max_size=300))
def test_any_event_name_is_accepted_or_refused_with_invalid_event_error(name: str) -> None:
    try:
        assert validate_event_name(name) == name
    except InvalidEventError:
        assert not name or name.startswith("__") or len(name) > 255 or "\x00" in name or _has_surrogate(name)


@settings(max_examples=300)
@given(json_values)
def test_any_payload_round_trips_exactly_or_is_refused(data: Any) -> None:
    try:
        text = encode_data(data)
    except InvalidEventError:
        return
    assert decode_data(text) == data
    assert json.loads(text) == data


def test_deep_nesting_and_nan_are_refused_not_crashing() -> None:
    deep: Any = []
    for _ in range(1000):
        deep = [deep]
    for bad in (deep, math.nan, {"x": math.inf}, {1: "non-str key"}, "\ud800", {"\ud800": 1}):
        with pytest.raises(InvalidEventError):
            encode_data(bad)


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


# -- on a real database ------------------------------------------------------------------------


@pytest.mark.parametrize("value", NASTY_TEXT, ids=range(len(NASTY_TEXT)))
async def test_a_nasty_run_id_event_or_payload_works_whole_or_writes_nothing(
    bridge: PostgresStreamBridge, dsn: str, value: str
) -> None:
    bystander = await bridge.publish("bystander", "token", "before")
    for run_id, event, data in (("run", value, value), (value, "token", {value: value})):
        try:
            sent = await bridge.publish(run_id, event, data)
        except InvalidEventError:
            if run_id == "run":
                assert await event_rows(dsn, "run") == []
            continue
        (got,) = await take(bridge.subscribe(run_id, last_event_id=None), 1)
        assert (got.id, got.event, got.data) == (sent, event, data)
    (still,) = await take(bridge.subscribe("bystander"), 1)
    assert still.id == bystander and len(await event_rows(dsn, "bystander")) == 1


@pytest.mark.parametrize("cursor", NASTY_TEXT, ids=range(len(NASTY_TEXT)))
async def test_a_nasty_cursor_resolves_without_error(bridge: PostgresStreamBridge, cursor: str) -> None:
    await bridge.publish("run", "token", 1)
    result = await bridge.resolve("run", cursor)
    assert result.status in {"resumed", "invalid", "unknown", "evicted"}


# -- the HTTP layer never answers 500 --------------------------------------------------------


LATIN1_NASTY = [
    v
    for v in NASTY_TEXT
    if v and len(v) < 8000 and all(ord(c) < 256 for c in v) and "\n" not in v and "\r" not in v
]


@pytest.mark.parametrize("value", LATIN1_NASTY, ids=range(len(LATIN1_NASTY)))
async def test_nasty_headers_query_strings_and_paths_get_4xx_or_a_stream_never_500(
    bridge: PostgresStreamBridge, value: str
) -> None:
    from pgbridge.http.app import create_app

    app = create_app(bridge, manage_bridge=False)
    await bridge.publish("run", "token", 1)
    await bridge.publish_end("run")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app", timeout=10) as http:
        answers = [
            await http.get("/runs/run/stream", headers={"Last-Event-ID": value.replace("\x00", "")}),
            await http.get("/runs/run/stream", params={"last_event_id": value}),
            await http.get(f"/runs/{quote(value, safe='')}"),
            await http.get("/runs", params={"status": value, "limit": value}),
        ]
    assert all(answer.status_code < 500 for answer in answers), [a.status_code for a in answers]

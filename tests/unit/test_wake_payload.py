"""The NOTIFY payload and WAL positions: pure, no database.

The payload is written by one SQL statement (``notify_runs`` in
pgbridge/sql/events.sql) and read by :func:`decode_wake`; the test that runs
that statement on a real server and decodes what arrives is
tests/db/test_wake_payload.py. Here: the decoder, and the separators the
statement uses.
"""

from __future__ import annotations

import pytest

from pgbridge.engine.listen import ANY_SEQ, CARRIED, Wake, decode_wake, decode_wakes, encode_carried
from pgbridge.lsn import format_lsn, parse_lsn
from pgbridge.sql.queries import Queries


def test_wal_positions_parse_to_integers_that_order_like_the_wal() -> None:
    assert parse_lsn("0/0") == 0
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert parse_lsn("0/FFFFFFFF") < parse_lsn("1/0")
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"


@pytest.mark.parametrize("text", ["", "16", "/1", "1/", "x/1", "123456789/0"])
def test_text_that_is_not_a_wal_position_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_lsn(text)


@pytest.mark.parametrize(
    ("payload", "run_id", "seq", "lsn"),
    [
        ("7 run-1", "run-1", 7, None),
        ("7@0/7B run with spaces", "run with spaces", 7, 123),
        ("*@100/5 r", "r", None, 2**40 + 5),
        ("* r", "r", None, None),
    ],
)
def test_wake_payloads_give_seq_wal_position_and_run_id(
    payload: str, run_id: str, seq: int | None, lsn: int | None
) -> None:
    assert decode_wake(payload) == Wake(run_id, seq, lsn)
    if lsn is not None:
        assert format_lsn(lsn) in payload


def test_the_payload_the_notify_statement_builds_decodes_with_its_wal_position() -> None:
    # notify_runs builds coalesce(seq::text, '*') || '@' || pg_current_wal_insert_lsn()::text || ' ' || run_id
    assert decode_wake("42@0/3000148 a run") == Wake("a run", 42, 0x3000148)
    assert decode_wake("*@0/3000148 a run") == Wake("a run", None, 0x3000148)
    with pytest.raises(ValueError):
        decode_wake("42@nonsense run")


def test_the_notify_statement_writes_the_separators_and_the_any_seq_mark_the_decoder_reads() -> None:
    text = Queries.for_schema().notify_runs
    assert f"coalesce(w.seq::text, '{ANY_SEQ}') || '@' || l.lsn || ' ' || w.run_id" in text


def test_a_carrying_payload_gives_its_events_and_a_run_id_that_may_hold_anything() -> None:
    events = (
        (7, 1700000000000, "token", '{"text": "a b"}', False, 1699999999999),
        (8, 1700000000001, "end", "null", True, 1700000000000),
    )
    run_id = 'a run [7] "+3@0/1 x"\n'
    payload = f"{CARRIED}8@0/7B {len(run_id)} {run_id}{encode_carried(events)}"
    assert decode_wake(payload) == Wake(run_id, 8, 123, events)


@pytest.mark.parametrize(
    "payload",
    [
        "+8@0/7B 5 run",  # shorter than its length
        "+8@0/7B x run[]",  # no length
        "+8@0/7B 3 run[]",  # no events
        "+8@0/7B 3 run[[1,2]]",  # an event without all its fields
        "+8@0/7B 3 run{not json",
    ],
)
def test_a_carrying_payload_that_does_not_decode_is_refused(payload: str) -> None:
    with pytest.raises(ValueError):
        decode_wake(payload)


def test_a_carrying_payload_of_an_earlier_pgbridge_gives_its_events_without_prev_ms() -> None:
    # Five elements an event, as before each carried the creation time of the one before it.
    payload = f'{CARRIED}7@0/7B 3 run[[7, 1700000000000, "token", "1", false]]'
    assert decode_wake(payload).events == ((7, 1700000000000, "token", "1", False, None),)


def test_a_batched_payload_gives_one_wake_up_per_item_in_order_each_carrying_its_event() -> None:
    payload = (
        '=0/7B [["run a", 3, 1700000000000, "token", "{\\"x\\": 1}", false, 1699999999999],'
        '["run\\nb", 1, 1700000000001, "end", "null", true, null]]'
    )
    assert decode_wakes(payload) == (
        Wake("run a", 3, 123, ((3, 1700000000000, "token", '{"x": 1}', False, 1699999999999),)),
        Wake("run\nb", 1, 123, ((1, 1700000000001, "end", "null", True, None),)),
    )


def test_the_one_run_forms_decode_through_decode_wakes_too() -> None:
    assert decode_wakes("42@0/3000148 a run") == (Wake("a run", 42, 0x3000148),)


@pytest.mark.parametrize(
    "payload",
    [
        "=0/7B []",  # no items
        '=nonsense [["r", 1, 1, "t", "1", false, null]]',  # no WAL position
        '=0/7B [[1, 1, 1, "t", "1", false, null]]',  # no run id
        '=0/7B [["", 1, 1, "t", "1", false, null]]',  # an empty run id
        '=0/7B [["r", 1, 1]]',  # an item without all its fields
        "=0/7B {not json",
    ],
)
def test_a_batched_payload_that_does_not_decode_is_refused(payload: str) -> None:
    with pytest.raises(ValueError):
        decode_wakes(payload)

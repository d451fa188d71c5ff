"""The NOTIFY payload and WAL positions: pure, no database."""

from __future__ import annotations

import pytest

from pgbridge.engine.listen import decode_wake, encode_wake
from pgbridge.lsn import format_lsn, parse_lsn


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
    ("run_id", "seq", "lsn"),
    [("run-1", 7, None), ("run with spaces", 7, 123), ("r", None, 2**40 + 5), ("r", None, None)],
)
def test_wake_payloads_round_trip_seq_wal_position_and_run_id(
    run_id: str, seq: int | None, lsn: int | None
) -> None:
    assert decode_wake(encode_wake(run_id, seq, lsn)) == (run_id, seq, lsn)


def test_the_payload_the_notify_statement_builds_decodes_with_its_wal_position() -> None:
    # queries.notify_runs builds head || '@' || pg_current_wal_insert_lsn()::text || ' ' || run_id
    assert decode_wake("42@0/3000148 a run") == ("a run", 42, 0x3000148)
    assert decode_wake("*@0/3000148 a run") == ("a run", None, 0x3000148)
    with pytest.raises(ValueError):
        decode_wake("42@nonsense run")

"""The hash chain and its verdicts (pure: no database)."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import replace

import pytest

from pgbridge.audit.chain import GENESIS, ChainChecker, ChainHead, ChainRow, link_hash
from pgbridge.audit.export import event_line, header_line, verify_export

RUN = "run-1"


def chain(count: int, *, start: bytes = GENESIS, first_seq: int = 1) -> list[ChainRow]:
    rows, prev = [], start
    for seq in range(first_seq, first_seq + count):
        data = f'{{"n":{seq}}}'
        prev = link_hash(prev, RUN, seq, 1000 + seq, "token", data)
        rows.append(ChainRow(seq, 1000 + seq, "token", data, prev))
    return rows


def head_of(rows: list[ChainRow], *, start: bytes = GENESIS) -> ChainHead:
    return ChainHead(first_seq=rows[0].seq, last_seq=rows[-1].seq, start_hash=start, last_hash=rows[-1].hash)


def verdict(rows: list[ChainRow], head: ChainHead) -> tuple[bool, int | None, str | None]:
    report = ChainChecker(RUN, head).check(rows)
    return report.ok, report.broken_at, report.problem


def test_a_link_hashes_length_prefixed_fields_after_the_previous_hash() -> None:
    expected = hashlib.sha256(
        GENESIS
        + struct.pack(">I", 5) + b"run-1"
        + struct.pack(">qq", 1, 1001)
        + struct.pack(">I", 5) + b"token"
        + struct.pack(">I", 2) + b"{}"
    ).digest()  # fmt: skip
    assert link_hash(GENESIS, "run-1", 1, 1001, "token", "{}") == expected


def test_field_boundaries_cannot_be_shifted_to_forge_a_link() -> None:
    assert link_hash(GENESIS, "ab", 1, 1, "c", "{}") != link_hash(GENESIS, "a", 1, 1, "bc", "{}")


def test_an_untouched_chain_verifies() -> None:
    rows = chain(10)
    assert verdict(rows, head_of(rows)) == (True, None, None)


def test_a_chain_after_retention_verifies_from_the_last_deleted_hash() -> None:
    rows = chain(10)
    kept = rows[4:]
    assert verdict(kept, head_of(kept, start=rows[3].hash)) == (True, None, None)


def test_an_edited_event_is_found_at_its_seq() -> None:
    rows = chain(10)
    tampered = [*rows[:4], replace(rows[4], data='{"n":"forged"}'), *rows[5:]]
    assert verdict(tampered, head_of(rows)) == (False, 5, "edited")


def test_an_edited_last_event_is_found() -> None:
    rows = chain(5)
    tampered = [*rows[:4], replace(rows[4], event="forged")]
    assert verdict(tampered, head_of(rows)) == (False, 5, "edited")


def test_a_missing_event_is_found_at_its_seq() -> None:
    rows = chain(10)
    assert verdict([*rows[:4], *rows[5:]], head_of(rows)) == (False, 5, "missing")


def test_missing_newest_events_are_found() -> None:
    rows = chain(10)
    assert verdict(rows[:7], head_of(rows)) == (False, 8, "missing")


def test_an_inserted_event_is_found_where_it_went_in() -> None:
    rows = chain(10)
    moved_up = [replace(r, seq=r.seq + 1) for r in rows[4:]]
    intruder = ChainRow(5, 1005, "token", '{"n":"intruder"}', rows[3].hash)
    tampered = [*rows[:4], intruder, *moved_up]
    assert verdict(tampered, replace(head_of(rows), last_seq=11)) == (False, 5, "inserted")


def test_an_event_past_the_last_seq_is_inserted() -> None:
    rows = chain(5)
    extra = ChainRow(6, 1006, "token", "{}", rows[-1].hash)
    assert verdict([*rows, extra], head_of(rows)) == (False, 6, "inserted")


def test_two_events_that_changed_places_are_reordered() -> None:
    rows = chain(10)
    swapped = [*rows[:4], replace(rows[5], seq=5), replace(rows[4], seq=6), *rows[6:]]
    assert verdict(swapped, head_of(rows)) == (False, 5, "reordered")


def test_a_rewritten_newest_hash_is_broken() -> None:
    rows = chain(5)
    assert verdict(rows, replace(head_of(rows), last_hash=bytes(32)))[2] == "broken"


def test_an_export_verifies_offline_and_a_changed_line_does_not() -> None:
    rows = chain(6)
    lines = [header_line(RUN, "ended", head_of(rows)), *(event_line(r) for r in rows)]
    assert verify_export(lines).ok
    forged = lines[3].replace('\\"n\\":3', '\\"n\\":33')
    assert forged != lines[3]
    report = verify_export([*lines[:3], forged, *lines[4:]])
    assert (report.ok, report.broken_at, report.problem) == (False, 3, "edited")


@pytest.mark.parametrize("lines", [[], ["not json"], ['{"format": "other"}']])
def test_an_export_that_is_not_one_is_refused(lines: list[str]) -> None:
    with pytest.raises(ValueError):
        verify_export(lines)

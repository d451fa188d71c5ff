"""The literals pgbridge/sql/retention.sql writes out that Python also knows."""

from __future__ import annotations

from pgbridge.audit.chain import GENESIS
from pgbridge.sql.queries import RetentionQueries


def test_a_dead_letter_without_an_earlier_event_chains_from_the_genesis_hash() -> None:
    assert f"'\\x{GENESIS.hex()}'::bytea" in RetentionQueries.for_schema("public").dead_letter_runs


def test_the_pass_lock_key_is_the_same_text_for_taking_and_releasing_it() -> None:
    sql = RetentionQueries.for_schema("public")
    key = "hashtextextended('pgbridge.retention:' || $1::text, 0)"
    assert sql.try_lock == f"SELECT pg_try_advisory_lock({key})"
    assert sql.unlock == f"SELECT pg_advisory_unlock({key})"

"""The loader of pgbridge/sql/*.sql: named statements, their descriptions, the schema filled in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files

import pytest

from pgbridge.sql import (
    FRAGMENTS_FILE,
    SCHEMA_PLACEHOLDER,
    load_into,
    parse_statements,
    statements_of,
    with_fragments,
)

SOURCE = f"""
-- A file may start with comments that belong to no statement.

-- name: first_statement
-- What it does.
-- $1 a run id.
SELECT 1 FROM {SCHEMA_PLACEHOLDER}.run_streams WHERE run_id = $1;

-- name: second_statement
-- Another.
UPDATE {SCHEMA_PLACEHOLDER}.run_streams
SET status = 'ended'  -- a comment inside the text stays
WHERE run_id = $1
"""


def test_each_statement_has_its_name_description_and_text_without_the_semicolon() -> None:
    first, second = parse_statements(SOURCE, "x.sql")
    assert (first.name, first.description) == ("first_statement", "What it does. $1 a run id.")
    assert first.text == f"SELECT 1 FROM {SCHEMA_PLACEHOLDER}.run_streams WHERE run_id = $1"
    assert second.name == "second_statement"
    assert second.text.splitlines()[1] == "SET status = 'ended'  -- a comment inside the text stays"


def test_a_name_used_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="named twice: a"):
        parse_statements("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n", "x.sql")


def test_a_header_without_text_is_refused() -> None:
    with pytest.raises(ValueError, match="'a' has no text"):
        parse_statements("-- name: a\n-- only a description\n", "x.sql")


@dataclass(frozen=True, slots=True)
class _Declared:
    schema: str
    one: str


def test_a_statement_class_and_its_file_name_the_same_statements(monkeypatch: pytest.MonkeyPatch) -> None:
    import pgbridge.sql as sql

    monkeypatch.setattr(sql, "load_statements", lambda filename, schema: {"one": "1", "two": "2"})
    with pytest.raises(ValueError, match=r"missing \[\], undeclared \['two'\]"):
        load_into(_Declared, "x.sql", "public", schema="public")


def test_a_fragment_is_put_in_by_name_and_other_braces_stay() -> None:
    text = "WITH RECURSIVE {chain} SELECT '{}'::int[], {schema}.f('{\"a\": 1}')"
    assert with_fragments(text, {"chain": "c AS (SELECT 1)"}) == (
        "WITH RECURSIVE c AS (SELECT 1) SELECT '{}'::int[], {schema}.f('{\"a\": 1}')"
    )


def test_every_statement_file_is_whole_once_its_fragments_are_in() -> None:
    """No ``{name}`` is left in any statement but ``{schema}``: a misspelt fragment fails here."""
    leftovers = {
        f"{path.name}: {statement.name}": sorted(set(re.findall(r"\{(\w+)\}", statement.text)) - {"schema"})
        for path in sorted(files("pgbridge.sql").iterdir())  # type: ignore[attr-defined]
        if path.name.endswith(".sql") and path.name != FRAGMENTS_FILE
        for statement in statements_of(path.name)
    }
    assert {k: v for k, v in leftovers.items() if v} == {}

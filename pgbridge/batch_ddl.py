"""``pgbridge_append_batch``: the group-commit append, as DDL text (revision 0004).

One call appends a batch of events (many runs, or many events of one run, in
the order given) in one statement, so one transaction and one round trip
carry what concurrent ``publish`` calls of a process piled up. Its body is
:attr:`pgbridge.queries.Queries.append_event` (the one-event append: seq
under the run row's lock, hash chained, terminal refused) run once per
element, so a batch behaves exactly like that many single appends.

The body is generated from ``append_event`` when the revision runs. If that
statement ever changes, add a revision that re-creates this function;
``tests/test_schema.py`` fails until the two agree.
"""

from __future__ import annotations

import re

from pgbridge.queries import Queries, quote_identifier

#: The one-event append's parameters, and the batch's array elements that replace them.
_PARAMETERS = {
    "1": "run_ids[i]",
    "2": "events[i]",
    "3": "datas[i]",
    "4": "terminals[i]",
    "5": "statuses[i]",
}
ARGUMENT_TYPES = "text[], text[], text[], boolean[], text[]"


def append_batch_body(schema: str) -> str:
    """The PL/pgSQL body of ``pgbridge_append_batch`` for *schema*."""
    one_event = re.sub(
        r"\$([1-5])\b", lambda m: _PARAMETERS[m.group(1)], Queries.for_schema(schema).append_event
    )
    statement = one_event.strip().replace("\n", "\n    ")
    return f"""
#variable_conflict use_column
DECLARE
    i integer;
    appended_seq bigint;
    appended_ms bigint;
BEGIN
    FOR i IN 1 .. coalesce(array_length(run_ids, 1), 0) LOOP
        appended_seq := NULL;
        appended_ms := NULL;
    {statement}
        INTO appended_seq, appended_ms;
        ord := i;
        seq := appended_seq;
        created_ms := appended_ms;
        RETURN NEXT;
    END LOOP;
END
"""


def create_append_batch_function_sql(schema: str) -> list[str]:
    s = quote_identifier(schema)
    return [
        f"""
        CREATE OR REPLACE FUNCTION {s}.pgbridge_append_batch(
            run_ids text[], events text[], datas text[], terminals boolean[], statuses text[]
        ) RETURNS TABLE (ord integer, seq bigint, created_ms bigint)
        LANGUAGE plpgsql
        AS $body${append_batch_body(schema)}$body$
        """
    ]


def drop_append_batch_function_sql(schema: str) -> list[str]:
    s = quote_identifier(schema)
    return [f"DROP FUNCTION IF EXISTS {s}.pgbridge_append_batch({ARGUMENT_TYPES})"]

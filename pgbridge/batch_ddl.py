"""``pgbridge_append_batch``: every append, one run row update per run (revision 0004).

The one way events enter run_events. One call appends a batch (many runs, or
many events of one run) in one statement, so one transaction and one round
trip carry what concurrent ``publish`` calls of a process piled up:

1. the batch is walked run by run (runs in ``run_id`` order, so two batches
   lock shared runs in the same order and never deadlock; each run's events
   in the order given);
2. each run row is created if new, then locked (``FOR UPDATE``): seqs are
   assigned under that lock, gapless, in commit order;
3. each event gets the next seq, the server clock's ms, and its hash chained
   to the previous one (``pgbridge_link_hash``, revision 0003); a run that
   already has its terminal event, or gets one earlier in this batch, refuses
   the rest (their seq comes back NULL);
4. each run row is updated once (last seq, last ms, last hash, status, end),
   and all events are inserted with one multi-row INSERT.

So a batch of k events of one run costs one row update, not k, and the run
row does not pile up k dead versions.

Revision 0008 adds the checks a bridge publish needs (``publish => true``;
``pgbridge_stream_append`` made its own and leaves it false), made on the
run row the batch locks anyway, so they cost the hot path no statement:

* a Durable Stream whose content type is not JSON refuses the run's events
  (``refused = 'content_type'``): its messages are bytes, not JSON events;
* an expired stream is gone, as for every protocol request: with no fork
  reading it, it is deleted (``pgbridge_delete_stream``, what a DELETE
  does) and the publish creates the run anew at seq 1, as a PUT recreates
  an expired path; one that forks still read, or a soft-deleted one, is
  (left) soft-deleted and refuses the events (``refused = 'gone'``).

A refused run's events get a NULL seq, like those after a terminal event
(``refused = 'terminal'``); the other runs of the batch are not affected.
"""

from __future__ import annotations

from pgbridge.sql import quote_identifier
from pgbridge.sql.queries import EXPIRED_SQL, GENESIS_SQL, NOW_MS_SQL

ARGUMENT_TYPES = "text[], text[], text[], boolean[], text[]"
#: Revision 0008's signature: a sixth argument, ``publish``, turns the publish checks on.
CHECKED_ARGUMENT_TYPES = ARGUMENT_TYPES + ", boolean"


def append_batch_body(schema: str, *, publish_checks: bool = True) -> str:
    """The PL/pgSQL body of ``pgbridge_append_batch`` for *schema*.

    *publish_checks* (revision 0008 on): refuse a non-JSON stream's run and
    recreate an expired one (see the module docstring); revision 0004 had
    none. Both versions come from one text, so they differ only there.
    """
    s = quote_identifier(schema)
    # Write a run's new state once, after its last event of the batch.
    update_run = f"""UPDATE {s}.run_streams SET
            last_seq = next_seq, last_ms = stamp, last_hash = chain, status = run_status,
            first_ms = CASE WHEN run_row.first_seq > run_row.last_seq THEN first_new_ms ELSE first_ms END,
            terminal_seq = CASE WHEN ended THEN next_seq END,
            ended_at = CASE WHEN ended THEN now() END,
            awaiting_input_since = NULL, updated_at = now()
        WHERE run_id = current_run;"""
    part = _checked_parts(s) if publish_checks else _plain_parts(s)
    return f"""
#variable_conflict use_column
DECLARE
    n integer := coalesce(array_length(run_ids, 1), 0);
    out_seq bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    out_ms bigint[] := array_fill(NULL::bigint, ARRAY[n]);{part["declare_out"]}
    new_ord integer[] := '{{}}';
    new_seq bigint[] := '{{}}';
    new_ms bigint[] := '{{}}';
    new_hash bytea[] := '{{}}';
    item record;
    current_run text := NULL;
    run_row record;
    next_seq bigint;
    chain bytea;
    stamp bigint;
    first_new_ms bigint;
    run_status text;
    ended boolean;{part["declare_state"]}
    appended integer;
BEGIN
    FOR item IN
        SELECT u.run_id AS rid, u.ord AS i
        FROM unnest(run_ids) WITH ORDINALITY AS u(run_id, ord)
        ORDER BY u.run_id, u.ord
    LOOP
        IF current_run IS DISTINCT FROM item.rid THEN
            IF appended > 0 THEN
                {update_run}
            END IF;
            current_run := item.rid;{part["lock_run"]}
            next_seq := run_row.last_seq;
            chain := coalesce(run_row.last_hash, {GENESIS_SQL});
            ended := run_row.terminal_seq IS NOT NULL;
            appended := 0;
            first_new_ms := NULL;
        END IF;{part["skip"]}
        next_seq := next_seq + 1;
        stamp := {NOW_MS_SQL};
        chain := {s}.pgbridge_link_hash(chain, current_run, next_seq, stamp, events[item.i], datas[item.i]);
        first_new_ms := coalesce(first_new_ms, stamp);
        run_status := statuses[item.i];
        ended := terminals[item.i];
        appended := appended + 1;
        out_seq[item.i] := next_seq;
        out_ms[item.i] := stamp;
        new_ord := new_ord || item.i::integer;
        new_seq := new_seq || next_seq;
        new_ms := new_ms || stamp;
        new_hash := new_hash || chain;
    END LOOP;
    IF appended > 0 THEN
        {update_run}
    END IF;
    INSERT INTO {s}.run_events (run_id, seq, created_ms, event, data, terminal, hash)
    SELECT run_ids[k.i], k.seq, k.ms, events[k.i], datas[k.i]::json, terminals[k.i], k.hash
    FROM unnest(new_ord, new_seq, new_ms, new_hash) AS k(i, seq, ms, hash);
    RETURN QUERY SELECT o::integer, out_seq[o], out_ms[o]{part["refused"]} FROM generate_series(1, n) AS o;
END
"""


NEWLINE_12, NEWLINE_16 = "\n" + " " * 12, "\n" + " " * 16


def _plain_parts(s: str) -> dict[str, str]:
    """Revision 0004's: lock (or create) each run row, skip the events after a terminal."""
    lock_run = (
        "SELECT r.first_seq, r.last_seq, r.last_hash, r.terminal_seq INTO run_row\n"
        f"            FROM {s}.run_streams AS r WHERE r.run_id = current_run FOR UPDATE;"
    )
    return {
        "declare_out": "",
        "declare_state": "",
        "lock_run": f"""
            {lock_run}
            IF NOT FOUND THEN  -- a new run: create its row (or wait for a concurrent creator's), lock it
                INSERT INTO {s}.run_streams AS r (run_id, status, last_seq)
                VALUES (current_run, 'active', 0)
                ON CONFLICT (run_id) DO NOTHING;
                {lock_run.replace(NEWLINE_12, NEWLINE_16)}
            END IF;""",
        "skip": """
        CONTINUE WHEN ended;""",
        "refused": "",
    }


def _checked_parts(s: str) -> dict[str, str]:
    """Revision 0008's: the publish checks where each run row is locked, and why events were refused."""
    lock_run = f"""SELECT r.first_seq, r.last_seq, r.last_hash, r.terminal_seq, r.content_type, r.fork_refs,
                r.stream_deleted_at IS NOT NULL AS soft_deleted, {EXPIRED_SQL} AS expired
            INTO run_row
            FROM {s}.run_streams AS r WHERE r.run_id = current_run FOR UPDATE;"""
    return {
        "declare_out": """
    out_refused text[] := array_fill(NULL::text, ARRAY[n]);""",
        "declare_state": """
    refusal text;
    have_row boolean;""",
        "lock_run": f"""
            refusal := NULL;
            {lock_run}
            have_row := FOUND;
            IF have_row AND publish THEN
                IF run_row.soft_deleted OR (run_row.expired AND run_row.fork_refs > 0) THEN
                    -- Gone while forks read it: what a DELETE (or a PUT) of it does, then refuse.
                    UPDATE {s}.run_streams SET stream_deleted_at = now()
                    WHERE run_id = current_run AND stream_deleted_at IS NULL;
                    refusal := 'gone';
                ELSIF run_row.expired THEN
                    -- Gone: deleted as a DELETE would; the publish starts a new run below.
                    PERFORM {s}.pgbridge_delete_stream(current_run);
                    have_row := false;
                END IF;
            END IF;
            IF NOT have_row THEN  -- a new run: create its row (or wait for a concurrent creator's), lock it
                INSERT INTO {s}.run_streams AS r (run_id, status, last_seq)
                VALUES (current_run, 'active', 0)
                ON CONFLICT (run_id) DO NOTHING;
                {lock_run}
            END IF;
            IF publish AND refusal IS NULL
               AND coalesce(run_row.content_type, 'application/json') <> 'application/json' THEN
                refusal := 'content_type';
            END IF;""",
        "skip": """
        IF refusal IS NOT NULL OR ended THEN
            out_refused[item.i] := coalesce(refusal, 'terminal');
            CONTINUE;
        END IF;""",
        "refused": ", out_refused[o]",
    }


def create_append_batch_function_sql(schema: str, *, publish_checks: bool = True) -> list[str]:
    """Create the function: revision 0008's (with *publish_checks*) or revision 0004's."""
    s = quote_identifier(schema)
    if publish_checks:
        return [
            f"""
        CREATE FUNCTION {s}.pgbridge_append_batch(
            run_ids text[], events text[], datas text[], terminals boolean[], statuses text[],
            publish boolean DEFAULT false
        ) RETURNS TABLE (ord integer, seq bigint, created_ms bigint, refused text)
        LANGUAGE plpgsql
        AS $body${append_batch_body(schema)}$body$
        """
        ]
    return [
        f"""
        CREATE OR REPLACE FUNCTION {s}.pgbridge_append_batch(
            run_ids text[], events text[], datas text[], terminals boolean[], statuses text[]
        ) RETURNS TABLE (ord integer, seq bigint, created_ms bigint)
        LANGUAGE plpgsql
        AS $body${append_batch_body(schema, publish_checks=False)}$body$
        """
    ]


def drop_append_batch_function_sql(schema: str, *, publish_checks: bool = False) -> list[str]:
    """Drop revision 0004's function, or (*publish_checks*) revision 0008's."""
    s = quote_identifier(schema)
    types = CHECKED_ARGUMENT_TYPES if publish_checks else ARGUMENT_TYPES
    return [f"DROP FUNCTION IF EXISTS {s}.pgbridge_append_batch({types})"]

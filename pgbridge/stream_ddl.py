"""``pgbridge_stream_append``: a Durable Streams append, checked and stored in one statement (revision 0006).

A Durable Stream is a run (see :mod:`pgbridge.durable_streams.streams`). An append
over HTTP, or a Python publish that names its producer, must be refused or
stored as a whole, with the refusal decided under the run row's lock, so
this function does everything in the caller's one transaction:

1. lock the run row (``FOR UPDATE``): every append to a run, from any
   process, is serialised here, so checks and writes never race;
2. refuse what the protocol refuses, in its order of precedence: a missing
   or expired stream; a stale producer epoch (fencing outlives closure); a
   closed stream (unless this is the retry of the producer request that
   closed it); a content type other than the stream's; a producer sequence
   gap, or a new epoch not starting at 0; a ``Stream-Seq`` not above the last;
3. a duplicate producer request stores nothing and says so;
4. otherwise append the events through ``pgbridge_append_batch`` (the one
   way events enter run_events: seqs, hash chain, run row), update the
   producer's state, the writer seq and the TTL clock, and close the stream
   when asked: closing sets the run's status to ``ended`` with its last event
   as the terminal position, so bridge subscribers end there too.

The outcome comes back as one row; nothing is written unless it is
``appended`` (or ``closed``, for a close-only request).
"""

from __future__ import annotations

from pgbridge.sql import quote_identifier
from pgbridge.sql.queries import EXPIRED_SQL

ARGUMENT_TYPES = "text, text, text[], text[], boolean, text, text, bigint, bigint"


def stream_append_body(schema: str, *, soft_delete: bool = True) -> str:
    """The PL/pgSQL body of ``pgbridge_stream_append`` for *schema*.

    *soft_delete* (revision 0007 on): a soft-deleted stream (a deleted
    source that forks still read) answers ``gone``; revision 0006 had none.
    """
    s = quote_identifier(schema)
    expired = EXPIRED_SQL
    gone = (
        """
    IF FOUND AND r.stream_deleted_at IS NOT NULL THEN
        RETURN QUERY SELECT 'gone'::text, nil, nil, false, nil, nil, nil, nil;
        RETURN;
    END IF;"""
        if soft_delete
        else ""
    )
    return f"""
#variable_conflict use_column
DECLARE
    r record;
    p record;
    n integer := coalesce(array_length(p_events, 1), 0);
    has_producer boolean := p_producer_id IS NOT NULL;
    nil bigint;  -- stays NULL: the columns an outcome leaves empty
BEGIN
    SELECT * INTO r FROM {s}.run_streams AS r WHERE r.run_id = p_run_id FOR UPDATE;{gone}
    IF NOT FOUND OR {expired} THEN
        RETURN QUERY SELECT 'not_found'::text, nil, nil, false, nil, nil, nil, nil;
        RETURN;
    END IF;
    IF has_producer THEN
        SELECT * INTO p FROM {s}.run_stream_producers AS p
        WHERE p.run_id = p_run_id AND p.producer_id = p_producer_id;
        IF FOUND AND p_epoch < p.epoch THEN
            RETURN QUERY SELECT 'stale_epoch'::text, r.last_seq, r.last_ms, r.terminal_seq IS NOT NULL,
                p.epoch, p.last_seq, nil, nil;
            RETURN;
        END IF;
    END IF;
    IF r.terminal_seq IS NOT NULL THEN
        IF has_producer AND r.closed_by_producer_id = p_producer_id
           AND r.closed_by_epoch = p_epoch AND r.closed_by_seq = p_seq THEN
            RETURN QUERY SELECT 'duplicate'::text, r.last_seq, r.last_ms, true, p_epoch, p_seq,
                r.terminal_seq, r.last_ms;
        ELSIF n = 0 AND p_close THEN
            RETURN QUERY SELECT 'already_closed'::text, r.last_seq, r.last_ms, true, nil, nil, nil, nil;
        ELSE
            RETURN QUERY SELECT 'closed'::text, r.last_seq, r.last_ms, true, nil, nil, nil, nil;
        END IF;
        RETURN;
    END IF;
    IF n > 0 AND p_content_type IS NOT NULL
       AND p_content_type IS DISTINCT FROM coalesce(r.content_type, 'application/json') THEN
        RETURN QUERY SELECT 'content_type'::text, r.last_seq, r.last_ms, false, nil, nil, nil, nil;
        RETURN;
    END IF;
    IF has_producer THEN
        IF p.producer_id IS NULL THEN  -- a new producer starts at seq 0, in any epoch
            IF p_seq <> 0 THEN
                RETURN QUERY SELECT 'gap'::text, r.last_seq, r.last_ms, false, 0::bigint, p_seq, nil, nil;
                RETURN;
            END IF;
        ELSIF p_epoch > p.epoch THEN
            IF p_seq <> 0 THEN
                RETURN QUERY SELECT 'bad_epoch_seq'::text, r.last_seq, r.last_ms, false, p.epoch, p_seq,
                    nil, nil;
                RETURN;
            END IF;
        ELSIF p_seq <= p.last_seq THEN
            RETURN QUERY SELECT 'duplicate'::text, r.last_seq, r.last_ms, false, p.epoch, p.last_seq,
                p.event_seq, p.event_ms;
            RETURN;
        ELSIF p_seq > p.last_seq + 1 THEN
            RETURN QUERY SELECT 'gap'::text, r.last_seq, r.last_ms, false, p.last_seq + 1, p_seq, nil, nil;
            RETURN;
        END IF;
    END IF;
    IF p_stream_seq IS NOT NULL AND r.stream_writer_seq IS NOT NULL
       AND p_stream_seq COLLATE "C" <= r.stream_writer_seq COLLATE "C" THEN
        RETURN QUERY SELECT 'stream_seq'::text, r.last_seq, r.last_ms, false, nil, nil, nil, nil;
        RETURN;
    END IF;
    IF n > 0 THEN
        PERFORM {s}.pgbridge_append_batch(
            array_fill(p_run_id, ARRAY[n]), p_events, p_datas,
            array_fill(false, ARRAY[n]), array_fill('active'::text, ARRAY[n]));
        SELECT * INTO r FROM {s}.run_streams AS r WHERE r.run_id = p_run_id;
    END IF;
    IF has_producer THEN
        INSERT INTO {s}.run_stream_producers AS p (run_id, producer_id, epoch, last_seq, event_seq, event_ms)
        VALUES (p_run_id, p_producer_id, p_epoch, p_seq, r.last_seq, r.last_ms)
        ON CONFLICT (run_id, producer_id) DO UPDATE
        SET epoch = excluded.epoch, last_seq = excluded.last_seq,
            event_seq = excluded.event_seq, event_ms = excluded.event_ms, updated_at = now();
    END IF;
    UPDATE {s}.run_streams AS u SET
        stream_writer_seq = coalesce(p_stream_seq, u.stream_writer_seq),
        stream_touched_at = now(),
        status = CASE WHEN p_close THEN 'ended' ELSE u.status END,
        terminal_seq = CASE WHEN p_close THEN u.last_seq ELSE u.terminal_seq END,
        ended_at = CASE WHEN p_close THEN now() ELSE u.ended_at END,
        awaiting_input_since = CASE WHEN p_close THEN NULL ELSE u.awaiting_input_since END,
        closed_by_producer_id = CASE WHEN p_close THEN p_producer_id END,
        closed_by_epoch = CASE WHEN p_close THEN p_epoch END,
        closed_by_seq = CASE WHEN p_close THEN p_seq END
    WHERE u.run_id = p_run_id;
    RETURN QUERY SELECT (CASE WHEN n = 0 THEN 'closed_now' ELSE 'appended' END)::text,
        r.last_seq, r.last_ms, p_close, p_epoch, p_seq, r.last_seq, r.last_ms;
END
"""


def create_stream_append_function_sql(schema: str, *, soft_delete: bool = True) -> list[str]:
    s = quote_identifier(schema)
    return [
        f"""
        CREATE OR REPLACE FUNCTION {s}.pgbridge_stream_append(
            p_run_id text, p_content_type text, p_events text[], p_datas text[], p_close boolean,
            p_stream_seq text, p_producer_id text, p_epoch bigint, p_seq bigint
        ) RETURNS TABLE (
            outcome text, last_seq bigint, last_ms bigint, closed boolean,
            producer_epoch bigint, producer_seq bigint, event_seq bigint, event_ms bigint
        )
        LANGUAGE plpgsql
        AS $body${stream_append_body(schema, soft_delete=soft_delete)}$body$
        """
    ]


def drop_stream_append_function_sql(schema: str) -> list[str]:
    s = quote_identifier(schema)
    return [f"DROP FUNCTION IF EXISTS {s}.pgbridge_stream_append({ARGUMENT_TYPES})"]


def delete_stream_body(schema: str) -> str:
    """The PL/pgSQL body of ``pgbridge_delete_stream`` (revision 0008) for *schema*.

    Deletes a stream that no fork reads (its row locked by the caller): its
    events through the retention trim function (the one way events leave
    run_events, so the audit chain's ``trimmed_hash`` stays right until the
    row goes), then its run row. If it was a fork, its source's
    ``fork_refs`` goes down, and a soft-deleted source whose last fork this
    was goes too, up the chain. One row per run row deleted: what a DELETE
    of the stream does, in one place for DELETE, a publish to an expired
    stream and the retention sweep of expired streams.
    """
    s = quote_identifier(schema)
    return f"""
DECLARE
    current_run text := p_run_id;
    r record;
    src record;
    gone bigint;
BEGIN
    LOOP
        SELECT u.first_seq, u.last_seq, u.fork_source_run_id INTO r
        FROM {s}.run_streams AS u WHERE u.run_id = current_run FOR UPDATE;
        EXIT WHEN NOT FOUND;
        gone := 0;
        IF r.first_seq <= r.last_seq THEN
            gone := {s}.pgbridge_trim_run_prefixes(ARRAY[current_run], ARRAY[r.first_seq], ARRAY[r.last_seq]);
        END IF;
        DELETE FROM {s}.run_streams AS u WHERE u.run_id = current_run;
        run_id := current_run;
        last_seq := r.last_seq;
        events_deleted := gone;
        RETURN NEXT;
        EXIT WHEN r.fork_source_run_id IS NULL;
        UPDATE {s}.run_streams AS u SET fork_refs = greatest(u.fork_refs - 1, 0)
        WHERE u.run_id = r.fork_source_run_id
        RETURNING u.fork_refs, u.stream_deleted_at INTO src;
        EXIT WHEN NOT FOUND OR src.fork_refs > 0 OR src.stream_deleted_at IS NULL;
        current_run := r.fork_source_run_id;
    END LOOP;
END
"""


def create_delete_stream_function_sql(schema: str) -> list[str]:
    s = quote_identifier(schema)
    return [
        f"""
        CREATE FUNCTION {s}.pgbridge_delete_stream(p_run_id text)
        RETURNS TABLE (run_id text, last_seq bigint, events_deleted bigint)
        LANGUAGE plpgsql
        AS $body${delete_stream_body(schema)}$body$
        """
    ]


def drop_delete_stream_function_sql(schema: str) -> list[str]:
    s = quote_identifier(schema)
    return [f"DROP FUNCTION IF EXISTS {s}.pgbridge_delete_stream(text)"]

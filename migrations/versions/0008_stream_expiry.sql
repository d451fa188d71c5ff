-- Revision 0008: expired streams: pgbridge_delete_stream, and pgbridge_append_batch's publish checks.
--
-- FROZEN: the exact SQL this revision runs, as it ran when the revision was
-- written. Never edit it: a change to the schema is a new revision (see
-- migrations/README.md). __SCHEMA__ stands for the target schema as a quoted
-- identifier ("public"); 0008_stream_expiry.py fills it in, runs the
-- statements of "-- migrate:upgrade" on upgrade and those of
-- "-- migrate:downgrade" on downgrade, in order. In psql:
--   sed -n '/^-- migrate:upgrade/,/^-- migrate:downgrade/p' 0008_stream_expiry.sql | sed 's/__SCHEMA__/"public"/g' | psql
-- Function bodies are byte for byte what PostgreSQL stores (pg_proc.prosrc).

-- migrate:upgrade

-- pgbridge_delete_stream: deletes a stream that no fork reads (its row locked
-- by the caller): its events through the retention trim function (the one way
-- events leave run_events, so the audit chain's trimmed_hash stays right until
-- the row goes), then its run row. If it was a fork, its source's fork_refs
-- goes down, and a soft-deleted source whose last fork this was goes too, up
-- the chain. One row per run row deleted: what a DELETE of the stream does, in
-- one place for DELETE, a publish to an expired stream and the retention sweep
-- of expired streams.
CREATE FUNCTION __SCHEMA__.pgbridge_delete_stream(p_run_id text)
RETURNS TABLE (run_id text, last_seq bigint, events_deleted bigint)
LANGUAGE plpgsql
AS $body$
DECLARE
    current_run text := p_run_id;
    r record;
    src record;
    gone bigint;
BEGIN
    LOOP
        SELECT u.first_seq, u.last_seq, u.fork_source_run_id INTO r
        FROM __SCHEMA__.run_streams AS u WHERE u.run_id = current_run FOR UPDATE;
        EXIT WHEN NOT FOUND;
        gone := 0;
        IF r.first_seq <= r.last_seq THEN
            gone := __SCHEMA__.pgbridge_trim_run_prefixes(ARRAY[current_run], ARRAY[r.first_seq], ARRAY[r.last_seq]);
        END IF;
        DELETE FROM __SCHEMA__.run_streams AS u WHERE u.run_id = current_run;
        run_id := current_run;
        last_seq := r.last_seq;
        events_deleted := gone;
        RETURN NEXT;
        EXIT WHEN r.fork_source_run_id IS NULL;
        UPDATE __SCHEMA__.run_streams AS u SET fork_refs = greatest(u.fork_refs - 1, 0)
        WHERE u.run_id = r.fork_source_run_id
        RETURNING u.fork_refs, u.stream_deleted_at INTO src;
        EXIT WHEN NOT FOUND OR src.fork_refs > 0 OR src.stream_deleted_at IS NULL;
        current_run := r.fork_source_run_id;
    END LOOP;
END
$body$;

-- A new signature and result type cannot be replaced in place: drop revision 0004's function.
DROP FUNCTION IF EXISTS __SCHEMA__.pgbridge_append_batch(text[], text[], text[], boolean[], text[]);

-- pgbridge_append_batch with the checks a bridge publish needs (publish =>
-- true; pgbridge_stream_append made its own and leaves it false), made on the
-- run row the batch locks anyway, so they cost the hot path no statement:
--
-- * a Durable Stream whose content type is not JSON refuses the run's events
--   (refused = 'content_type'): its messages are bytes, not JSON events;
-- * an expired stream is gone, as for every protocol request: with no fork
--   reading it, it is deleted (pgbridge_delete_stream, what a DELETE does) and
--   the publish creates the run anew at seq 1, as a PUT recreates an expired
--   path; one that forks still read, or a soft-deleted one, is (left)
--   soft-deleted and refuses the events (refused = 'gone').
--
-- A refused run's events get a NULL seq, like those after a terminal event
-- (refused = 'terminal'); the other runs of the batch are not affected.
-- Otherwise the body is revision 0004's.
CREATE FUNCTION __SCHEMA__.pgbridge_append_batch(
    run_ids text[], events text[], datas text[], terminals boolean[], statuses text[],
    publish boolean DEFAULT false
) RETURNS TABLE (ord integer, seq bigint, created_ms bigint, refused text)
LANGUAGE plpgsql
AS $body$
#variable_conflict use_column
DECLARE
    n integer := coalesce(array_length(run_ids, 1), 0);
    out_seq bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    out_ms bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    out_refused text[] := array_fill(NULL::text, ARRAY[n]);
    new_ord integer[] := '{}';
    new_seq bigint[] := '{}';
    new_ms bigint[] := '{}';
    new_hash bytea[] := '{}';
    item record;
    current_run text := NULL;
    run_row record;
    next_seq bigint;
    chain bytea;
    stamp bigint;
    first_new_ms bigint;
    run_status text;
    ended boolean;
    refusal text;
    have_row boolean;
    appended integer;
BEGIN
    FOR item IN
        SELECT u.run_id AS rid, u.ord AS i
        FROM unnest(run_ids) WITH ORDINALITY AS u(run_id, ord)
        ORDER BY u.run_id, u.ord
    LOOP
        IF current_run IS DISTINCT FROM item.rid THEN
            IF appended > 0 THEN
                UPDATE __SCHEMA__.run_streams SET
            last_seq = next_seq, last_ms = stamp, last_hash = chain, status = run_status,
            first_ms = CASE WHEN run_row.first_seq > run_row.last_seq THEN first_new_ms ELSE first_ms END,
            terminal_seq = CASE WHEN ended THEN next_seq END,
            ended_at = CASE WHEN ended THEN now() END,
            awaiting_input_since = NULL, updated_at = now()
        WHERE run_id = current_run;
            END IF;
            current_run := item.rid;
            refusal := NULL;
            SELECT r.first_seq, r.last_seq, r.last_hash, r.terminal_seq, r.content_type, r.fork_refs,
                r.stream_deleted_at IS NOT NULL AS soft_deleted, (
    (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
    OR (r.stream_ttl_seconds IS NOT NULL
        AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())
) AS expired
            INTO run_row
            FROM __SCHEMA__.run_streams AS r WHERE r.run_id = current_run FOR UPDATE;
            have_row := FOUND;
            IF have_row AND publish THEN
                IF run_row.soft_deleted OR (run_row.expired AND run_row.fork_refs > 0) THEN
                    -- Gone while forks read it: what a DELETE (or a PUT) of it does, then refuse.
                    UPDATE __SCHEMA__.run_streams SET stream_deleted_at = now()
                    WHERE run_id = current_run AND stream_deleted_at IS NULL;
                    refusal := 'gone';
                ELSIF run_row.expired THEN
                    -- Gone: deleted as a DELETE would; the publish starts a new run below.
                    PERFORM __SCHEMA__.pgbridge_delete_stream(current_run);
                    have_row := false;
                END IF;
            END IF;
            IF NOT have_row THEN  -- a new run: create its row (or wait for a concurrent creator's), lock it
                INSERT INTO __SCHEMA__.run_streams AS r (run_id, status, last_seq)
                VALUES (current_run, 'active', 0)
                ON CONFLICT (run_id) DO NOTHING;
                SELECT r.first_seq, r.last_seq, r.last_hash, r.terminal_seq, r.content_type, r.fork_refs,
                r.stream_deleted_at IS NOT NULL AS soft_deleted, (
    (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
    OR (r.stream_ttl_seconds IS NOT NULL
        AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())
) AS expired
            INTO run_row
            FROM __SCHEMA__.run_streams AS r WHERE r.run_id = current_run FOR UPDATE;
            END IF;
            IF publish AND refusal IS NULL
               AND coalesce(run_row.content_type, 'application/json') <> 'application/json' THEN
                refusal := 'content_type';
            END IF;
            next_seq := run_row.last_seq;
            chain := coalesce(run_row.last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
            ended := run_row.terminal_seq IS NOT NULL;
            appended := 0;
            first_new_ms := NULL;
        END IF;
        IF refusal IS NOT NULL OR ended THEN
            out_refused[item.i] := coalesce(refusal, 'terminal');
            CONTINUE;
        END IF;
        next_seq := next_seq + 1;
        stamp := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
        chain := __SCHEMA__.pgbridge_link_hash(chain, current_run, next_seq, stamp, events[item.i], datas[item.i]);
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
        UPDATE __SCHEMA__.run_streams SET
            last_seq = next_seq, last_ms = stamp, last_hash = chain, status = run_status,
            first_ms = CASE WHEN run_row.first_seq > run_row.last_seq THEN first_new_ms ELSE first_ms END,
            terminal_seq = CASE WHEN ended THEN next_seq END,
            ended_at = CASE WHEN ended THEN now() END,
            awaiting_input_since = NULL, updated_at = now()
        WHERE run_id = current_run;
    END IF;
    INSERT INTO __SCHEMA__.run_events (run_id, seq, created_ms, event, data, terminal, hash)
    SELECT run_ids[k.i], k.seq, k.ms, events[k.i], datas[k.i]::json, terminals[k.i], k.hash
    FROM unnest(new_ord, new_seq, new_ms, new_hash) AS k(i, seq, ms, hash);
    RETURN QUERY SELECT o::integer, out_seq[o], out_ms[o], out_refused[o] FROM generate_series(1, n) AS o;
END
$body$;

CREATE INDEX run_streams_expiring_idx ON __SCHEMA__.run_streams (run_id) WHERE stream_expires_at IS NOT NULL OR stream_ttl_seconds IS NOT NULL;

-- migrate:downgrade

DROP INDEX __SCHEMA__.run_streams_expiring_idx;

DROP FUNCTION IF EXISTS __SCHEMA__.pgbridge_append_batch(text[], text[], text[], boolean[], text[], boolean);

-- Revision 0004's function again.
CREATE OR REPLACE FUNCTION __SCHEMA__.pgbridge_append_batch(
    run_ids text[], events text[], datas text[], terminals boolean[], statuses text[]
) RETURNS TABLE (ord integer, seq bigint, created_ms bigint)
LANGUAGE plpgsql
AS $body$
#variable_conflict use_column
DECLARE
    n integer := coalesce(array_length(run_ids, 1), 0);
    out_seq bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    out_ms bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    new_ord integer[] := '{}';
    new_seq bigint[] := '{}';
    new_ms bigint[] := '{}';
    new_hash bytea[] := '{}';
    item record;
    current_run text := NULL;
    run_row record;
    next_seq bigint;
    chain bytea;
    stamp bigint;
    first_new_ms bigint;
    run_status text;
    ended boolean;
    appended integer;
BEGIN
    FOR item IN
        SELECT u.run_id AS rid, u.ord AS i
        FROM unnest(run_ids) WITH ORDINALITY AS u(run_id, ord)
        ORDER BY u.run_id, u.ord
    LOOP
        IF current_run IS DISTINCT FROM item.rid THEN
            IF appended > 0 THEN
                UPDATE __SCHEMA__.run_streams SET
            last_seq = next_seq, last_ms = stamp, last_hash = chain, status = run_status,
            first_ms = CASE WHEN run_row.first_seq > run_row.last_seq THEN first_new_ms ELSE first_ms END,
            terminal_seq = CASE WHEN ended THEN next_seq END,
            ended_at = CASE WHEN ended THEN now() END,
            awaiting_input_since = NULL, updated_at = now()
        WHERE run_id = current_run;
            END IF;
            current_run := item.rid;
            SELECT r.first_seq, r.last_seq, r.last_hash, r.terminal_seq INTO run_row
            FROM __SCHEMA__.run_streams AS r WHERE r.run_id = current_run FOR UPDATE;
            IF NOT FOUND THEN  -- a new run: create its row (or wait for a concurrent creator's), lock it
                INSERT INTO __SCHEMA__.run_streams AS r (run_id, status, last_seq)
                VALUES (current_run, 'active', 0)
                ON CONFLICT (run_id) DO NOTHING;
                SELECT r.first_seq, r.last_seq, r.last_hash, r.terminal_seq INTO run_row
                FROM __SCHEMA__.run_streams AS r WHERE r.run_id = current_run FOR UPDATE;
            END IF;
            next_seq := run_row.last_seq;
            chain := coalesce(run_row.last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
            ended := run_row.terminal_seq IS NOT NULL;
            appended := 0;
            first_new_ms := NULL;
        END IF;
        CONTINUE WHEN ended;
        next_seq := next_seq + 1;
        stamp := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
        chain := __SCHEMA__.pgbridge_link_hash(chain, current_run, next_seq, stamp, events[item.i], datas[item.i]);
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
        UPDATE __SCHEMA__.run_streams SET
            last_seq = next_seq, last_ms = stamp, last_hash = chain, status = run_status,
            first_ms = CASE WHEN run_row.first_seq > run_row.last_seq THEN first_new_ms ELSE first_ms END,
            terminal_seq = CASE WHEN ended THEN next_seq END,
            ended_at = CASE WHEN ended THEN now() END,
            awaiting_input_since = NULL, updated_at = now()
        WHERE run_id = current_run;
    END IF;
    INSERT INTO __SCHEMA__.run_events (run_id, seq, created_ms, event, data, terminal, hash)
    SELECT run_ids[k.i], k.seq, k.ms, events[k.i], datas[k.i]::json, terminals[k.i], k.hash
    FROM unnest(new_ord, new_seq, new_ms, new_hash) AS k(i, seq, ms, hash);
    RETURN QUERY SELECT o::integer, out_seq[o], out_ms[o] FROM generate_series(1, n) AS o;
END
$body$;

DROP FUNCTION IF EXISTS __SCHEMA__.pgbridge_delete_stream(text);

-- Revision 0004: group commit, pgbridge_append_batch (many appends in one statement).
--
-- FROZEN: the exact SQL this revision runs, as it ran when the revision was
-- written. Never edit it: a change to the schema is a new revision (see
-- migrations/README.md). __SCHEMA__ stands for the target schema as a quoted
-- identifier ("public"); 0004_group_commit_append.py fills it in, runs the
-- statements of "-- migrate:upgrade" on upgrade and those of
-- "-- migrate:downgrade" on downgrade, in order. In psql:
--   sed -n '/^-- migrate:upgrade/,/^-- migrate:downgrade/p' 0004_group_commit_append.sql | sed 's/__SCHEMA__/"public"/g' | psql
-- Function bodies are byte for byte what PostgreSQL stores (pg_proc.prosrc).

-- migrate:upgrade

-- pgbridge_append_batch: every append, one run row update per run. The one way
-- events enter run_events. One call appends a batch (many runs, or many events
-- of one run) in one statement, so one transaction and one round trip carry
-- what concurrent publish calls of a process piled up:
--
-- 1. the batch is walked run by run (runs in run_id order, so two batches lock
--    shared runs in the same order and never deadlock; each run's events in the
--    order given);
-- 2. each run row is created if new, then locked (FOR UPDATE): seqs are
--    assigned under that lock, gapless, in commit order;
-- 3. each event gets the next seq, the server clock's ms, and its hash chained
--    to the previous one (pgbridge_link_hash, revision 0003); a run that
--    already has its terminal event, or gets one earlier in this batch, refuses
--    the rest (their seq comes back NULL);
-- 4. each run row is updated once (last seq, last ms, last hash, status, end),
--    and all events are inserted with one multi-row INSERT.
--
-- So a batch of k events of one run costs one row update, not k, and the run
-- row does not pile up k dead versions.
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

-- migrate:downgrade

DROP FUNCTION IF EXISTS __SCHEMA__.pgbridge_append_batch(text[], text[], text[], boolean[], text[]);

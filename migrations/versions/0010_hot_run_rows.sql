-- Revision 0010: run rows updated in place (HOT) and a set-based pgbridge_append_batch.
--
-- FROZEN: the exact SQL this revision runs, as it ran when the revision was
-- written. Never edit it: a change to the schema is a new revision (see
-- migrations/README.md). __SCHEMA__ stands for the target schema as a quoted
-- identifier ("public"); 0010_hot_run_rows.py fills it in, runs the
-- statements of "-- migrate:upgrade" on upgrade and those of
-- "-- migrate:downgrade" on downgrade, in order. In psql:
--   sed -n '/^-- migrate:upgrade/,/^-- migrate:downgrade/p' 0010_hot_run_rows.sql | sed 's/__SCHEMA__/"public"/g' | psql
-- Function bodies are byte for byte what PostgreSQL stores (pg_proc.prosrc).

-- migrate:upgrade

-- Every append updates its run row (last_seq, last_ms, last_hash, updated_at).
-- PostgreSQL can make that update HOT (a new row version on the same page, no
-- new index entries) only when no index covers a column it changes, in its
-- key, expression or predicate. Four retention indexes did (updated_at, and
-- last_seq in three predicates or expressions), so no append's update was HOT.
-- Each is replaced by one that finds the same rows from columns an append
-- leaves alone (it changes first_ms only when the run held no event, and
-- terminal_seq and ended_at only with its terminal event):
--  * the stale-run reaper and the open part of max_events_per_run read the
--    open runs (terminal_seq IS NULL) and filter on the row;
--  * an ended run's last_seq is its terminal_seq, so "ended and still holds
--    events" is terminal_seq >= first_seq, and its retained count is
--    terminal_seq - first_seq;
--  * a run that holds events has a first_ms (appends set it on a run's first
--    retained event, trims to the next retained one's), so the age scan reads
--    the runs with a first_ms.
-- A HOT update also needs room for the new version on the row's page: a
-- fillfactor of 70 leaves 30% of each page run rows are written to free for
-- them (pages written before keep what they have; pruning makes room too).
ALTER TABLE __SCHEMA__.run_streams SET (fillfactor = 70);
DROP INDEX __SCHEMA__.run_streams_open_updated_idx;
CREATE INDEX run_streams_open_idx ON __SCHEMA__.run_streams (run_id) WHERE terminal_seq IS NULL;
DROP INDEX __SCHEMA__.run_streams_ended_retained_idx;
CREATE INDEX run_streams_ended_retained_idx ON __SCHEMA__.run_streams (ended_at) WHERE terminal_seq >= first_seq;
DROP INDEX __SCHEMA__.run_streams_retained_count_idx;
CREATE INDEX run_streams_retained_count_idx ON __SCHEMA__.run_streams ((terminal_seq - first_seq)) WHERE terminal_seq >= first_seq;
DROP INDEX __SCHEMA__.run_streams_first_ms_idx;
CREATE INDEX run_streams_first_ms_idx ON __SCHEMA__.run_streams (first_ms) WHERE first_ms IS NOT NULL;

-- pgbridge_append_batch, set-based: the same signature, results and rules
-- (gapless seqs in commit order, a run takes its events up to and with its
-- first terminal event, the hash chain byte for byte, the publish checks,
-- rows locked in run_id order), in a handful of statements whatever the
-- number of runs, where revision 0009's ran a SELECT ... FOR UPDATE and an
-- UPDATE per run. Every event of one call gets the same created_ms (the call's
-- clock). Plans are generic: the statements' shapes do not depend on the
-- arrays' contents, and planning them anew on each call cost more than running
-- them.
CREATE OR REPLACE FUNCTION __SCHEMA__.pgbridge_append_batch(
    run_ids text[], events text[], datas text[], terminals boolean[], statuses text[],
    publish boolean DEFAULT false
) RETURNS TABLE (ord integer, seq bigint, created_ms bigint, refused text)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $body$
#variable_conflict use_column
DECLARE
    n integer := coalesce(array_length(run_ids, 1), 0);
    stamp bigint := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    out_seq bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    out_refused text[] := array_fill(NULL::text, ARRAY[n]);
    out_hash bytea[] := array_fill(NULL::bytea, ARRAY[n]);
    -- The runs that took events: their newest seq, hash, status and terminal flag.
    m integer := 0;
    up_run text[] := '{}';
    up_seq bigint[] := '{}';
    up_hash bytea[] := '{}';
    up_status text[] := '{}';
    up_terminal boolean[] := '{}';
    up_first boolean[] := '{}';
    e record;
    current_run text := NULL;
    refusal text;
    held boolean;
    took boolean;
    next_seq bigint;
    chain bytea;
    ended boolean;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    -- Create the missing run rows and lock the others, in run_id order, in one statement: a
    -- conflict's DO UPDATE locks the row even though its WHERE updates nothing, so every batch
    -- waits on rows in the same order and two batches never wait on each other in a cycle.
    IF run_ids[1] = ALL (run_ids) THEN  -- one run: lock its row, or create it and lock that
        PERFORM FROM __SCHEMA__.run_streams AS r WHERE r.run_id = run_ids[1] FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO __SCHEMA__.run_streams (run_id, status, last_seq) VALUES (run_ids[1], 'active', 0)
            ON CONFLICT (run_id) DO UPDATE SET run_id = excluded.run_id WHERE false;
        END IF;
    ELSE
        INSERT INTO __SCHEMA__.run_streams AS r (run_id, status, last_seq)
        SELECT DISTINCT u.r, 'active', 0 FROM unnest(run_ids) AS u(r) ORDER BY 1
        ON CONFLICT (run_id) DO UPDATE SET run_id = excluded.run_id WHERE false;
    END IF;

    -- Every event in (run, place) order with its run's locked row: number it, or say why its run
    -- refuses it (a run takes its events up to and with its first terminal event), and chain.
    FOR e IN
        SELECT u.i::integer AS i, u.rid,
            r.last_seq, r.last_hash, r.first_seq <= r.last_seq AS holds_events, r.fork_refs,
            r.terminal_seq IS NOT NULL AS was_ended,
            publish AND coalesce(r.content_type, 'application/json') <> 'application/json' AS wrong_type,
            publish AND r.stream_deleted_at IS NOT NULL AS soft_deleted,
            publish AND (
                (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
                OR (r.stream_ttl_seconds IS NOT NULL
                    AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())
            ) AS expired
        FROM unnest(run_ids) WITH ORDINALITY AS u(rid, i)
        LEFT JOIN __SCHEMA__.run_streams AS r ON r.run_id = u.rid
        ORDER BY u.rid, u.i
    LOOP
        IF current_run IS DISTINCT FROM e.rid THEN
            IF e.last_seq IS NULL THEN  -- cannot happen: the row is locked; never drop events
                RAISE EXCEPTION 'pgbridge_append_batch: run % has no row after it was locked', e.rid;
            END IF;
            current_run := e.rid;
            refusal := NULL;
            took := false;
            held := e.holds_events;
            next_seq := e.last_seq;
            chain := e.last_hash;
            ended := e.was_ended;
            IF e.soft_deleted OR (e.expired AND e.fork_refs > 0) THEN
                -- Gone while forks read it: what a DELETE (or a PUT) of it does, then refuse.
                UPDATE __SCHEMA__.run_streams SET stream_deleted_at = now()
                WHERE run_id = current_run AND stream_deleted_at IS NULL;
                refusal := 'gone';
            ELSIF e.expired THEN
                -- Gone: deleted as a DELETE would; the publish starts a new run.
                PERFORM __SCHEMA__.pgbridge_delete_stream(current_run, 'expiry');
                INSERT INTO __SCHEMA__.run_streams (run_id, status, last_seq) VALUES (current_run, 'active', 0);
                held := false; next_seq := 0; chain := NULL; ended := false;
            ELSIF e.wrong_type THEN
                refusal := 'content_type';
            END IF;
            chain := coalesce(chain, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
        END IF;
        IF refusal IS NOT NULL OR ended THEN
            out_refused[e.i] := coalesce(refusal, 'terminal');
            CONTINUE;
        END IF;
        next_seq := next_seq + 1;
        chain := __SCHEMA__.pgbridge_link_hash(chain, e.rid, next_seq, stamp, events[e.i], datas[e.i]);
        ended := terminals[e.i];
        out_seq[e.i] := next_seq; out_hash[e.i] := chain;
        IF NOT took THEN
            took := true;
            m := m + 1;
            up_run[m] := e.rid; up_first[m] := NOT held;
        END IF;
        up_seq[m] := next_seq; up_hash[m] := chain; up_status[m] := statuses[e.i]; up_terminal[m] := ended;
    END LOOP;

    -- One statement stores the events, moves every run that took some to its newest event (whose
    -- status and terminal flag the run takes; first_ms when it held no event) and answers.
    IF m > 0 THEN
        INSERT INTO __SCHEMA__.run_events (run_id, seq, created_ms, event, data, terminal, hash)
        SELECT u.rid, u.seq, stamp, u.event, u.data::json, u.terminal, u.hash
        FROM unnest(run_ids, events, datas, terminals, out_seq, out_hash)
            AS u(rid, event, data, terminal, seq, hash)
        WHERE u.seq IS NOT NULL;
        UPDATE __SCHEMA__.run_streams AS r SET
            last_seq = a.last_seq, last_ms = stamp, last_hash = a.last_hash, status = a.status,
            first_ms = CASE WHEN a.first THEN stamp ELSE r.first_ms END,
            terminal_seq = CASE WHEN a.terminal THEN a.last_seq END,
            ended_at = CASE WHEN a.terminal THEN now() END,
            awaiting_input_since = NULL, updated_at = now()
        FROM unnest(up_run, up_seq, up_hash, up_status, up_terminal, up_first)
            AS a(run_id, last_seq, last_hash, status, terminal, first)
        WHERE r.run_id = a.run_id;
    END IF;
    RETURN QUERY
        SELECT x.o::integer, x.seq, CASE WHEN x.seq IS NOT NULL THEN stamp END, x.refused
        FROM unnest(out_seq, out_refused) WITH ORDINALITY AS x(seq, refused, o);
END
$body$;

-- pgbridge_stream_append (a Durable Streams append or close) appends its events itself once
-- its checks passed, and moves the run row with one UPDATE (its newest event and the stream's
-- columns together) where revision 0007's called pgbridge_append_batch, read the row again and
-- updated it a second time. Plans are generic, as for pgbridge_append_batch.
CREATE OR REPLACE FUNCTION __SCHEMA__.pgbridge_stream_append(
    p_run_id text, p_content_type text, p_events text[], p_datas text[], p_close boolean,
    p_stream_seq text, p_producer_id text, p_epoch bigint, p_seq bigint
) RETURNS TABLE (
    outcome text, last_seq bigint, last_ms bigint, closed boolean,
    producer_epoch bigint, producer_seq bigint, event_seq bigint, event_ms bigint
)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $body$
#variable_conflict use_column
DECLARE
    r record;
    p record;
    n integer := coalesce(array_length(p_events, 1), 0);
    has_producer boolean := p_producer_id IS NOT NULL;
    nil bigint;  -- stays NULL: the columns an outcome leaves empty
    stamp bigint;
    chain bytea;
    hashes bytea[];
    new_seq bigint;
    new_ms bigint;
BEGIN
    SELECT * INTO r FROM __SCHEMA__.run_streams AS r WHERE r.run_id = p_run_id FOR UPDATE;
    IF FOUND AND r.stream_deleted_at IS NOT NULL THEN
        RETURN QUERY SELECT 'gone'::text, nil, nil, false, nil, nil, nil, nil;
        RETURN;
    END IF;
    IF NOT FOUND OR (
    (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
    OR (r.stream_ttl_seconds IS NOT NULL
        AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())
) THEN
        RETURN QUERY SELECT 'not_found'::text, nil, nil, false, nil, nil, nil, nil;
        RETURN;
    END IF;
    IF has_producer THEN
        SELECT * INTO p FROM __SCHEMA__.run_stream_producers AS p
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
    -- Appended here, not through pgbridge_append_batch: the row is locked and checked already, and
    -- one UPDATE moves it (its newest event, the stream's columns) instead of two. The events
    -- are numbered and chained exactly as pgbridge_append_batch does (one created_ms per call).
    new_seq := r.last_seq;
    new_ms := r.last_ms;
    IF n > 0 THEN
        stamp := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
        chain := coalesce(r.last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
        hashes := array_fill(NULL::bytea, ARRAY[n]);
        FOR k IN 1..n LOOP
            chain := __SCHEMA__.pgbridge_link_hash(chain, p_run_id, r.last_seq + k, stamp, p_events[k], p_datas[k]);
            hashes[k] := chain;
        END LOOP;
        INSERT INTO __SCHEMA__.run_events (run_id, seq, created_ms, event, data, terminal, hash)
        SELECT p_run_id, r.last_seq + u.k, stamp, u.event, u.data::json, false, u.hash
        FROM unnest(p_events, p_datas, hashes) WITH ORDINALITY AS u(event, data, hash, k);
        new_seq := r.last_seq + n;
        new_ms := stamp;
    END IF;
    UPDATE __SCHEMA__.run_streams AS u SET
        last_seq = new_seq, last_ms = new_ms,
        last_hash = CASE WHEN n > 0 THEN chain ELSE u.last_hash END,
        first_ms = CASE WHEN n > 0 AND u.first_seq > u.last_seq THEN stamp ELSE u.first_ms END,
        updated_at = CASE WHEN n > 0 THEN now() ELSE u.updated_at END,
        stream_writer_seq = coalesce(p_stream_seq, u.stream_writer_seq),
        stream_touched_at = now(),
        status = CASE WHEN p_close THEN 'ended' WHEN n > 0 THEN 'active' ELSE u.status END,
        terminal_seq = CASE WHEN p_close THEN new_seq ELSE u.terminal_seq END,
        ended_at = CASE WHEN p_close THEN now() ELSE u.ended_at END,
        awaiting_input_since = CASE WHEN p_close OR n > 0 THEN NULL ELSE u.awaiting_input_since END,
        closed_by_producer_id = CASE WHEN p_close THEN p_producer_id END,
        closed_by_epoch = CASE WHEN p_close THEN p_epoch END,
        closed_by_seq = CASE WHEN p_close THEN p_seq END
    WHERE u.run_id = p_run_id;
    IF has_producer THEN
        INSERT INTO __SCHEMA__.run_stream_producers AS p (run_id, producer_id, epoch, last_seq, event_seq, event_ms)
        VALUES (p_run_id, p_producer_id, p_epoch, p_seq, new_seq, new_ms)
        ON CONFLICT (run_id, producer_id) DO UPDATE
        SET epoch = excluded.epoch, last_seq = excluded.last_seq,
            event_seq = excluded.event_seq, event_ms = excluded.event_ms, updated_at = now();
    END IF;
    RETURN QUERY SELECT (CASE WHEN n = 0 THEN 'closed_now' ELSE 'appended' END)::text,
        new_seq, new_ms, p_close, p_epoch, p_seq, new_seq, new_ms;
END
$body$;


-- migrate:downgrade

-- Revision 0007's pgbridge_stream_append, 0009's pgbridge_append_batch and revision 0002's and
-- 0006's indexes again.
CREATE OR REPLACE FUNCTION __SCHEMA__.pgbridge_stream_append(
    p_run_id text, p_content_type text, p_events text[], p_datas text[], p_close boolean,
    p_stream_seq text, p_producer_id text, p_epoch bigint, p_seq bigint
) RETURNS TABLE (
    outcome text, last_seq bigint, last_ms bigint, closed boolean,
    producer_epoch bigint, producer_seq bigint, event_seq bigint, event_ms bigint
)
LANGUAGE plpgsql
AS $body$
#variable_conflict use_column
DECLARE
    r record;
    p record;
    n integer := coalesce(array_length(p_events, 1), 0);
    has_producer boolean := p_producer_id IS NOT NULL;
    nil bigint;  -- stays NULL: the columns an outcome leaves empty
BEGIN
    SELECT * INTO r FROM __SCHEMA__.run_streams AS r WHERE r.run_id = p_run_id FOR UPDATE;
    IF FOUND AND r.stream_deleted_at IS NOT NULL THEN
        RETURN QUERY SELECT 'gone'::text, nil, nil, false, nil, nil, nil, nil;
        RETURN;
    END IF;
    IF NOT FOUND OR (
    (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
    OR (r.stream_ttl_seconds IS NOT NULL
        AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())
) THEN
        RETURN QUERY SELECT 'not_found'::text, nil, nil, false, nil, nil, nil, nil;
        RETURN;
    END IF;
    IF has_producer THEN
        SELECT * INTO p FROM __SCHEMA__.run_stream_producers AS p
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
        PERFORM __SCHEMA__.pgbridge_append_batch(
            array_fill(p_run_id, ARRAY[n]), p_events, p_datas,
            array_fill(false, ARRAY[n]), array_fill('active'::text, ARRAY[n]));
        SELECT * INTO r FROM __SCHEMA__.run_streams AS r WHERE r.run_id = p_run_id;
    END IF;
    IF has_producer THEN
        INSERT INTO __SCHEMA__.run_stream_producers AS p (run_id, producer_id, epoch, last_seq, event_seq, event_ms)
        VALUES (p_run_id, p_producer_id, p_epoch, p_seq, r.last_seq, r.last_ms)
        ON CONFLICT (run_id, producer_id) DO UPDATE
        SET epoch = excluded.epoch, last_seq = excluded.last_seq,
            event_seq = excluded.event_seq, event_ms = excluded.event_ms, updated_at = now();
    END IF;
    UPDATE __SCHEMA__.run_streams AS u SET
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
$body$;

CREATE OR REPLACE FUNCTION __SCHEMA__.pgbridge_append_batch(
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
                    PERFORM __SCHEMA__.pgbridge_delete_stream(current_run, 'expiry');
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

DROP INDEX __SCHEMA__.run_streams_first_ms_idx;
CREATE INDEX run_streams_first_ms_idx ON __SCHEMA__.run_streams (first_ms) WHERE first_seq <= last_seq;
DROP INDEX __SCHEMA__.run_streams_retained_count_idx;
CREATE INDEX run_streams_retained_count_idx ON __SCHEMA__.run_streams ((last_seq - first_seq)) WHERE first_seq <= last_seq;
DROP INDEX __SCHEMA__.run_streams_ended_retained_idx;
CREATE INDEX run_streams_ended_retained_idx ON __SCHEMA__.run_streams (ended_at) WHERE ended_at IS NOT NULL AND first_seq <= last_seq;
DROP INDEX __SCHEMA__.run_streams_open_idx;
CREATE INDEX run_streams_open_updated_idx ON __SCHEMA__.run_streams (updated_at) WHERE terminal_seq IS NULL AND content_type IS NULL;
ALTER TABLE __SCHEMA__.run_streams RESET (fillfactor);

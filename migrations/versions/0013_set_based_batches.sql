-- Revision 0013: pgbridge_append_batch numbers, chains and stores a batch of several runs, each
-- once, set-based (the common shape of a busy moment's batch when it reaches the function).
--
-- FROZEN: the exact SQL this revision runs, as it ran when the revision was
-- written. Never edit it: a change to the schema is a new revision (see
-- migrations/README.md). __SCHEMA__ stands for the target schema as a quoted
-- identifier ("public"); 0013_set_based_batches.py fills it in, runs the
-- statements of "-- migrate:upgrade" on upgrade and those of
-- "-- migrate:downgrade" on downgrade, in order. In psql:
--   sed -n '/^-- migrate:upgrade/,/^-- migrate:downgrade/p' 0013_set_based_batches.sql | sed 's/__SCHEMA__/"public"/g' | psql
-- Function bodies are byte for byte what PostgreSQL stores (pg_proc.prosrc).

-- migrate:upgrade

-- Revision 0012's function, with one more way: several runs, each once, none ended or a Durable
-- Stream to check, in a read committed transaction, are numbered, chained and stored by one
-- statement instead of the loop (what pgbridge's plain append_runs_once does outside the
-- function; the function serves the batches that statement does not take: new runs, callers'
-- transactions). Every other batch goes revision 0012's ways, unchanged.
CREATE OR REPLACE FUNCTION __SCHEMA__.pgbridge_append_batch(
    run_ids text[], events text[], datas text[], terminals boolean[], statuses text[],
    publish boolean DEFAULT false
) RETURNS TABLE (ord integer, seq bigint, created_ms bigint, refused text, prev_ms bigint)
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
    out_prev bigint[] := array_fill(NULL::bigint, ARRAY[n]);
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
    k integer;
    refusal text;
    held boolean;
    took boolean;
    next_seq bigint;
    chain bytea;
    prev bigint;
    ended boolean;
    stored bigint;
    one_run boolean;
    locked boolean := false;
    fast boolean := false;
    head record;
    h record;
    last_taken integer := 0;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    -- pgbridge_event_ms, written out: odd on an odd timeline, even on an even one (called as a
    -- function, its query cost a call a fifth of its time).
    IF NOT pg_is_in_recovery() THEN
        stamp := stamp + (stamp + ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::bigint) % 2;
    END IF;
    -- One run (every publish, and every batch of a publish_many or of a sharded deployment's
    -- group commit) in its common case: lock and read its row in one statement, then number and
    -- chain its events in place order, with no query and no sort. A new run, a Durable Stream
    -- that is not plain JSON, deleted or expired, and a batch of several runs go the general way.
    one_run := run_ids[1] = ALL (run_ids);
    IF one_run THEN
        SELECT r.last_seq, r.last_ms, r.last_hash, r.first_seq,
            r.terminal_seq IS NOT NULL AS was_ended,
            publish AND (
                coalesce(r.content_type, 'application/json') <> 'application/json'
                OR r.stream_deleted_at IS NOT NULL
                OR r.stream_expires_at IS NOT NULL OR r.stream_ttl_seconds IS NOT NULL
            ) AS special
        INTO head
        FROM __SCHEMA__.run_streams AS r WHERE r.run_id = run_ids[1]
        FOR UPDATE;
        locked := FOUND;
        fast := locked AND NOT head.special;
    END IF;
    IF fast THEN
        -- The run's head, read after the lock (a statement of its own: it sees every committed
        -- append): appends leave the row behind its newest event.
        SELECT * INTO h FROM __SCHEMA__.pgbridge_run_head(run_ids[1], head.last_seq, head.last_ms, head.last_hash);
        held := head.first_seq <= h.last_seq;
        next_seq := h.last_seq;
        chain := coalesce(h.last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
        prev := h.last_ms;
        ended := head.was_ended;
        FOR k IN 1 .. n LOOP
            IF ended THEN
                out_refused[k] := 'terminal';
                CONTINUE;
            END IF;
            next_seq := next_seq + 1;
            chain := __SCHEMA__.pgbridge_link_hash(chain, run_ids[k], next_seq, stamp, events[k], datas[k]);
            ended := terminals[k];
            out_seq[k] := next_seq; out_hash[k] := chain; out_prev[k] := prev;
            prev := stamp;
            last_taken := k;
        END LOOP;
        IF last_taken > 0 THEN
            m := 1;
            up_run[1] := run_ids[1]; up_first[1] := NOT held;
            up_seq[1] := next_seq; up_hash[1] := chain; up_status[1] := statuses[last_taken];
            up_terminal[1] := ended;
        END IF;
    ELSE
        -- Create the missing run rows and lock the others, in run_id order, in one statement: a
        -- conflict's DO UPDATE locks the row even though its WHERE updates nothing, so every batch
        -- waits on rows in the same order and two batches never wait on each other in a cycle.
        IF NOT one_run THEN
            INSERT INTO __SCHEMA__.run_streams AS r (run_id, status, last_seq)
            SELECT DISTINCT u.r, 'active', 0 FROM unnest(run_ids) AS u(r) ORDER BY 1
            ON CONFLICT (run_id) DO UPDATE SET run_id = excluded.run_id WHERE false;
        ELSIF NOT locked THEN  -- one new run: create its row and lock it (or lock the one made meanwhile)
            INSERT INTO __SCHEMA__.run_streams (run_id, status, last_seq) VALUES (run_ids[1], 'active', 0)
            ON CONFLICT (run_id) DO UPDATE SET run_id = excluded.run_id WHERE false;
        END IF;

        -- Several runs, each once, none of them ended or a Durable Stream with a check to make,
        -- in a read committed transaction (its statements see every committed append; a caller's
        -- snapshot may not, below): the loop's rules set-based, each event numbered and chained
        -- from its run's head (read by this statement, after the locks) in one INSERT, the rows
        -- that change in one UPDATE; no row when the batch is not of that shape (the loop then
        -- takes it). The loop below cost ~2.7 us an event more (100 runs x 1 event).
        IF NOT one_run AND current_setting('transaction_isolation') = 'read committed' THEN
            RETURN QUERY
                WITH runs AS MATERIALIZED (
                    SELECT r.run_id, r.last_seq AS row_seq, h.last_seq, h.last_ms, h.last_hash, r.first_seq,
                        r.status, r.awaiting_input_since IS NOT NULL AS awaiting,
                        r.terminal_seq IS NOT NULL OR (publish AND (
                            coalesce(r.content_type, 'application/json') <> 'application/json'
                            OR r.stream_deleted_at IS NOT NULL
                            OR r.stream_expires_at IS NOT NULL OR r.stream_ttl_seconds IS NOT NULL)) AS special
                    FROM __SCHEMA__.run_streams AS r
                    CROSS JOIN LATERAL __SCHEMA__.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
                    WHERE r.run_id = ANY (run_ids)
                ),
                verdict AS MATERIALIZED (
                    SELECT count(*) = n AND NOT coalesce(bool_or(x.special), false) AS every_one FROM runs AS x
                ),
                planned AS MATERIALIZED (
                    SELECT u.i::integer AS i, u.rid, r.last_seq + 1 AS taken_seq, r.last_ms AS before_ms,
                        __SCHEMA__.pgbridge_link_hash(
                            coalesce(r.last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea),
                            u.rid, r.last_seq + 1, stamp, u.ev, u.da) AS link,
                        u.ev, u.da, u.te, u.st, r.first_seq > r.last_seq AS is_first,
                        r.first_seq > r.last_seq OR u.te OR r.status <> u.st OR r.awaiting
                            OR r.last_seq + 1 - r.row_seq >= 256 AS writes_row
                    FROM verdict AS v
                    JOIN unnest(run_ids, events, datas, terminals, statuses) WITH ORDINALITY
                        AS u(rid, ev, da, te, st, i) ON v.every_one
                    JOIN runs AS r ON r.run_id = u.rid
                ),
                stored AS MATERIALIZED (
                    INSERT INTO __SCHEMA__.run_events (run_id, seq, created_ms, event, data, terminal, hash)
                    SELECT p.rid, p.taken_seq, stamp, p.ev, p.da::json, p.te, p.link FROM planned AS p
                    RETURNING 1
                ),
                moved AS MATERIALIZED (
                    UPDATE __SCHEMA__.run_streams AS r SET
                        last_seq = p.taken_seq, last_ms = stamp, last_hash = p.link, status = p.st,
                        first_ms = CASE WHEN p.is_first THEN stamp ELSE r.first_ms END,
                        terminal_seq = CASE WHEN p.te THEN p.taken_seq END,
                        ended_at = CASE WHEN p.te THEN now() END,
                        awaiting_input_since = NULL, updated_at = now()
                    FROM planned AS p
                    WHERE r.run_id = p.rid AND p.writes_row
                    RETURNING 1
                )
                SELECT p.i, p.taken_seq, stamp, NULL::text, p.before_ms
                FROM planned AS p
                WHERE (SELECT count(*) FROM stored) >= 0 AND (SELECT count(*) FROM moved) >= 0
                ORDER BY p.i;
            IF FOUND THEN
                RETURN;
            END IF;
        END IF;

        -- Every event in (run, place) order with its run's locked row and head (read by this
        -- statement, after the locks: it sees every committed append): number it, or say why its
        -- run refuses it (a run takes its events up to and with its first terminal event), and chain.
        FOR e IN
            WITH runs AS MATERIALIZED (
                SELECT r.run_id, h.last_seq, h.last_ms, h.last_hash, r.first_seq, r.fork_refs, r.terminal_seq,
                    r.content_type, r.stream_deleted_at, r.stream_expires_at,
                    r.stream_ttl_seconds, r.stream_touched_at
                FROM __SCHEMA__.run_streams AS r
                CROSS JOIN LATERAL __SCHEMA__.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
                WHERE r.run_id = ANY (run_ids)
            )
            SELECT u.i::integer AS i, u.rid,
                r.last_seq, r.last_ms, r.last_hash, r.first_seq <= r.last_seq AS holds_events, r.fork_refs,
                r.terminal_seq IS NOT NULL AS was_ended,
                publish AND coalesce(r.content_type, 'application/json') <> 'application/json' AS wrong_type,
                publish AND r.stream_deleted_at IS NOT NULL AS soft_deleted,
                publish AND (
                    (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
                    OR (r.stream_ttl_seconds IS NOT NULL
                        AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())
                ) AS expired
            FROM unnest(run_ids) WITH ORDINALITY AS u(rid, i)
            LEFT JOIN runs AS r ON r.run_id = u.rid
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
                prev := e.last_ms;
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
                    held := false; next_seq := 0; chain := NULL; prev := NULL; ended := false;
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
            out_seq[e.i] := next_seq; out_hash[e.i] := chain; out_prev[e.i] := prev;
            prev := stamp;
            IF NOT took THEN
                took := true;
                m := m + 1;
                up_run[m] := e.rid; up_first[m] := NOT held;
            END IF;
            up_seq[m] := next_seq; up_hash[m] := chain; up_status[m] := statuses[e.i]; up_terminal[m] := ended;
        END LOOP;
    END IF;

    -- One statement stores the events; one more writes the run rows that change: a run's first
    -- retained event (first_ms), a status change (awaiting_input to active), a terminal event, a
    -- head 256 or more events past the row's (pgbridge_run_head looks no further). A row written
    -- takes the run's newest event as its head.
    IF m > 0 THEN
        IF current_setting('transaction_isolation') = 'read committed' THEN
            INSERT INTO __SCHEMA__.run_events (run_id, seq, created_ms, event, data, terminal, hash)
            SELECT u.rid, u.seq, stamp, u.event, u.data::json, u.terminal, u.hash
            FROM unnest(run_ids, events, datas, terminals, out_seq, out_hash)
                AS u(rid, event, data, terminal, seq, hash)
            WHERE u.seq IS NOT NULL;
        ELSE
            -- A caller's REPEATABLE READ or SERIALIZABLE transaction (publish_in): its snapshot may
            -- predate an append that committed while it waited for a run's lock, whose events it
            -- cannot see and whose seqs it would take again. ON CONFLICT makes PostgreSQL fail the
            -- statement as a serialization failure (40001: retry the transaction), as the run row's
            -- update did when every append updated it; a conflict it lets through drops nothing.
            INSERT INTO __SCHEMA__.run_events (run_id, seq, created_ms, event, data, terminal, hash)
            SELECT u.rid, u.seq, stamp, u.event, u.data::json, u.terminal, u.hash
            FROM unnest(run_ids, events, datas, terminals, out_seq, out_hash)
                AS u(rid, event, data, terminal, seq, hash)
            WHERE u.seq IS NOT NULL
            ON CONFLICT (run_id, seq) DO NOTHING;
            GET DIAGNOSTICS stored = ROW_COUNT;
            IF stored <> cardinality(array_remove(out_seq, NULL)) THEN
                RAISE EXCEPTION 'pgbridge_append_batch: a concurrent append took these seqs'
                    USING ERRCODE = 'serialization_failure';
            END IF;
        END IF;
        UPDATE __SCHEMA__.run_streams AS r SET
            last_seq = a.last_seq, last_ms = stamp, last_hash = a.last_hash, status = a.status,
            first_ms = CASE WHEN a.first THEN stamp ELSE r.first_ms END,
            terminal_seq = CASE WHEN a.terminal THEN a.last_seq END,
            ended_at = CASE WHEN a.terminal THEN now() END,
            awaiting_input_since = NULL, updated_at = now()
        FROM unnest(up_run, up_seq, up_hash, up_status, up_terminal, up_first)
            AS a(run_id, last_seq, last_hash, status, terminal, first)
        WHERE r.run_id = a.run_id
          AND (a.first OR a.terminal OR r.status <> a.status OR r.awaiting_input_since IS NOT NULL
               OR a.last_seq - r.last_seq >= 256);
    END IF;
    RETURN QUERY
        SELECT x.o::integer, x.seq, CASE WHEN x.seq IS NOT NULL THEN stamp END, x.refused, x.prev
        FROM unnest(out_seq, out_refused, out_prev) WITH ORDINALITY AS x(seq, refused, prev, o);
END
$body$;


-- migrate:downgrade

-- Revision 0012's function, as it was.
CREATE OR REPLACE FUNCTION __SCHEMA__.pgbridge_append_batch(
    run_ids text[], events text[], datas text[], terminals boolean[], statuses text[],
    publish boolean DEFAULT false
) RETURNS TABLE (ord integer, seq bigint, created_ms bigint, refused text, prev_ms bigint)
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
    out_prev bigint[] := array_fill(NULL::bigint, ARRAY[n]);
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
    k integer;
    refusal text;
    held boolean;
    took boolean;
    next_seq bigint;
    chain bytea;
    prev bigint;
    ended boolean;
    stored bigint;
    one_run boolean;
    locked boolean := false;
    fast boolean := false;
    head record;
    h record;
    last_taken integer := 0;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    -- pgbridge_event_ms, written out: odd on an odd timeline, even on an even one (called as a
    -- function, its query cost a call a fifth of its time).
    IF NOT pg_is_in_recovery() THEN
        stamp := stamp + (stamp + ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::bigint) % 2;
    END IF;
    -- One run (every publish, and every batch of a publish_many or of a sharded deployment's
    -- group commit) in its common case: lock and read its row in one statement, then number and
    -- chain its events in place order, with no query and no sort. A new run, a Durable Stream
    -- that is not plain JSON, deleted or expired, and a batch of several runs go the general way.
    one_run := run_ids[1] = ALL (run_ids);
    IF one_run THEN
        SELECT r.last_seq, r.last_ms, r.last_hash, r.first_seq,
            r.terminal_seq IS NOT NULL AS was_ended,
            publish AND (
                coalesce(r.content_type, 'application/json') <> 'application/json'
                OR r.stream_deleted_at IS NOT NULL
                OR r.stream_expires_at IS NOT NULL OR r.stream_ttl_seconds IS NOT NULL
            ) AS special
        INTO head
        FROM __SCHEMA__.run_streams AS r WHERE r.run_id = run_ids[1]
        FOR UPDATE;
        locked := FOUND;
        fast := locked AND NOT head.special;
    END IF;
    IF fast THEN
        -- The run's head, read after the lock (a statement of its own: it sees every committed
        -- append): appends leave the row behind its newest event.
        SELECT * INTO h FROM __SCHEMA__.pgbridge_run_head(run_ids[1], head.last_seq, head.last_ms, head.last_hash);
        held := head.first_seq <= h.last_seq;
        next_seq := h.last_seq;
        chain := coalesce(h.last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
        prev := h.last_ms;
        ended := head.was_ended;
        FOR k IN 1 .. n LOOP
            IF ended THEN
                out_refused[k] := 'terminal';
                CONTINUE;
            END IF;
            next_seq := next_seq + 1;
            chain := __SCHEMA__.pgbridge_link_hash(chain, run_ids[k], next_seq, stamp, events[k], datas[k]);
            ended := terminals[k];
            out_seq[k] := next_seq; out_hash[k] := chain; out_prev[k] := prev;
            prev := stamp;
            last_taken := k;
        END LOOP;
        IF last_taken > 0 THEN
            m := 1;
            up_run[1] := run_ids[1]; up_first[1] := NOT held;
            up_seq[1] := next_seq; up_hash[1] := chain; up_status[1] := statuses[last_taken];
            up_terminal[1] := ended;
        END IF;
    ELSE
        -- Create the missing run rows and lock the others, in run_id order, in one statement: a
        -- conflict's DO UPDATE locks the row even though its WHERE updates nothing, so every batch
        -- waits on rows in the same order and two batches never wait on each other in a cycle.
        IF NOT one_run THEN
            INSERT INTO __SCHEMA__.run_streams AS r (run_id, status, last_seq)
            SELECT DISTINCT u.r, 'active', 0 FROM unnest(run_ids) AS u(r) ORDER BY 1
            ON CONFLICT (run_id) DO UPDATE SET run_id = excluded.run_id WHERE false;
        ELSIF NOT locked THEN  -- one new run: create its row and lock it (or lock the one made meanwhile)
            INSERT INTO __SCHEMA__.run_streams (run_id, status, last_seq) VALUES (run_ids[1], 'active', 0)
            ON CONFLICT (run_id) DO UPDATE SET run_id = excluded.run_id WHERE false;
        END IF;

        -- Every event in (run, place) order with its run's locked row and head (read by this
        -- statement, after the locks: it sees every committed append): number it, or say why its
        -- run refuses it (a run takes its events up to and with its first terminal event), and chain.
        FOR e IN
            WITH runs AS MATERIALIZED (
                SELECT r.run_id, h.last_seq, h.last_ms, h.last_hash, r.first_seq, r.fork_refs, r.terminal_seq,
                    r.content_type, r.stream_deleted_at, r.stream_expires_at,
                    r.stream_ttl_seconds, r.stream_touched_at
                FROM __SCHEMA__.run_streams AS r
                CROSS JOIN LATERAL __SCHEMA__.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
                WHERE r.run_id = ANY (run_ids)
            )
            SELECT u.i::integer AS i, u.rid,
                r.last_seq, r.last_ms, r.last_hash, r.first_seq <= r.last_seq AS holds_events, r.fork_refs,
                r.terminal_seq IS NOT NULL AS was_ended,
                publish AND coalesce(r.content_type, 'application/json') <> 'application/json' AS wrong_type,
                publish AND r.stream_deleted_at IS NOT NULL AS soft_deleted,
                publish AND (
                    (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
                    OR (r.stream_ttl_seconds IS NOT NULL
                        AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())
                ) AS expired
            FROM unnest(run_ids) WITH ORDINALITY AS u(rid, i)
            LEFT JOIN runs AS r ON r.run_id = u.rid
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
                prev := e.last_ms;
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
                    held := false; next_seq := 0; chain := NULL; prev := NULL; ended := false;
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
            out_seq[e.i] := next_seq; out_hash[e.i] := chain; out_prev[e.i] := prev;
            prev := stamp;
            IF NOT took THEN
                took := true;
                m := m + 1;
                up_run[m] := e.rid; up_first[m] := NOT held;
            END IF;
            up_seq[m] := next_seq; up_hash[m] := chain; up_status[m] := statuses[e.i]; up_terminal[m] := ended;
        END LOOP;
    END IF;

    -- One statement stores the events; one more writes the run rows that change: a run's first
    -- retained event (first_ms), a status change (awaiting_input to active), a terminal event, a
    -- head 256 or more events past the row's (pgbridge_run_head looks no further). A row written
    -- takes the run's newest event as its head.
    IF m > 0 THEN
        IF current_setting('transaction_isolation') = 'read committed' THEN
            INSERT INTO __SCHEMA__.run_events (run_id, seq, created_ms, event, data, terminal, hash)
            SELECT u.rid, u.seq, stamp, u.event, u.data::json, u.terminal, u.hash
            FROM unnest(run_ids, events, datas, terminals, out_seq, out_hash)
                AS u(rid, event, data, terminal, seq, hash)
            WHERE u.seq IS NOT NULL;
        ELSE
            -- A caller's REPEATABLE READ or SERIALIZABLE transaction (publish_in): its snapshot may
            -- predate an append that committed while it waited for a run's lock, whose events it
            -- cannot see and whose seqs it would take again. ON CONFLICT makes PostgreSQL fail the
            -- statement as a serialization failure (40001: retry the transaction), as the run row's
            -- update did when every append updated it; a conflict it lets through drops nothing.
            INSERT INTO __SCHEMA__.run_events (run_id, seq, created_ms, event, data, terminal, hash)
            SELECT u.rid, u.seq, stamp, u.event, u.data::json, u.terminal, u.hash
            FROM unnest(run_ids, events, datas, terminals, out_seq, out_hash)
                AS u(rid, event, data, terminal, seq, hash)
            WHERE u.seq IS NOT NULL
            ON CONFLICT (run_id, seq) DO NOTHING;
            GET DIAGNOSTICS stored = ROW_COUNT;
            IF stored <> cardinality(array_remove(out_seq, NULL)) THEN
                RAISE EXCEPTION 'pgbridge_append_batch: a concurrent append took these seqs'
                    USING ERRCODE = 'serialization_failure';
            END IF;
        END IF;
        UPDATE __SCHEMA__.run_streams AS r SET
            last_seq = a.last_seq, last_ms = stamp, last_hash = a.last_hash, status = a.status,
            first_ms = CASE WHEN a.first THEN stamp ELSE r.first_ms END,
            terminal_seq = CASE WHEN a.terminal THEN a.last_seq END,
            ended_at = CASE WHEN a.terminal THEN now() END,
            awaiting_input_since = NULL, updated_at = now()
        FROM unnest(up_run, up_seq, up_hash, up_status, up_terminal, up_first)
            AS a(run_id, last_seq, last_hash, status, terminal, first)
        WHERE r.run_id = a.run_id
          AND (a.first OR a.terminal OR r.status <> a.status OR r.awaiting_input_since IS NOT NULL
               OR a.last_seq - r.last_seq >= 256);
    END IF;
    RETURN QUERY
        SELECT x.o::integer, x.seq, CASE WHEN x.seq IS NOT NULL THEN stamp END, x.refused, x.prev
        FROM unnest(out_seq, out_refused, out_prev) WITH ORDINALITY AS x(seq, refused, prev, o);
END
$body$;

-- Revision 0012: run heads read from run_events (appends leave their run row alone), event times
-- that tell timelines apart, and the creation time of the last event retention deleted.
--
-- FROZEN: the exact SQL this revision runs, as it ran when the revision was
-- written. Never edit it: a change to the schema is a new revision (see
-- migrations/README.md). __SCHEMA__ stands for the target schema as a quoted
-- identifier ("public"); 0012_history_and_heads.py fills it in, runs the
-- statements of "-- migrate:upgrade" on upgrade and those of
-- "-- migrate:downgrade" on downgrade, in order. In psql:
--   sed -n '/^-- migrate:upgrade/,/^-- migrate:downgrade/p' 0012_history_and_heads.sql | sed 's/__SCHEMA__/"public"/g' | psql
-- Function bodies are byte for byte what PostgreSQL stores (pg_proc.prosrc).

-- migrate:upgrade

-- The creation time of the last event retention deleted (seq first_seq - 1), kept as its hash is
-- (trimmed_hash), so a cursor naming that deleted event resolves against its time too: an ID from
-- another history of the run at that seq is unknown, not resumed (docs/behaviour.md §3). NULL
-- while retention deleted nothing, and for trims made before this revision.
ALTER TABLE __SCHEMA__.run_streams ADD COLUMN trimmed_ms bigint;

-- The creation time of an event appended now: the server's clock in Unix ms, made odd on an odd
-- PostgreSQL timeline and even on an even one (a millisecond later when needed). Promoting a
-- standby starts the next timeline, so after an asynchronous failover an event that takes the seq
-- of one the old primary acknowledged but never sent can never carry the same ID, even when both
-- were stamped in the same millisecond: a cursor naming the lost event resolves unknown. The
-- timeline is the first 8 hex digits of the WAL file being written (in memory: no file is read).
-- On a standby (where nothing can be appended) it is the clock alone.
CREATE FUNCTION __SCHEMA__.pgbridge_event_ms() RETURNS bigint
LANGUAGE sql VOLATILE
AS $body$
    SELECT CASE WHEN pg_is_in_recovery() THEN c.ms
        ELSE c.ms + (c.ms + ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::bigint) % 2
        END
    FROM (SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms) AS c
$body$;

-- A run's newest event, given its row's last_seq, last_ms and last_hash: appends no longer write
-- them into the run row on every event (below), so the row holds them as of its last write (the
-- run's first event, a status change, its terminal event, a trim, or an append that left the row
-- 256 or more events behind), and the run's newest event is its highest seq in run_events when
-- that is higher. An append keeps the row fewer than 256 events behind, so the look-up is bounded
-- on both sides: one backward step on the run_events primary key, and at most 255 rows whatever
-- plan a stale row estimate picks. It finds nothing at once for an ended run (its row is exact).
-- A set-returning SQL function that PostgreSQL inlines into the query that calls it (LATERAL),
-- so it plans like the subquery it is.
CREATE FUNCTION __SCHEMA__.pgbridge_run_head(p_run_id text, p_last_seq bigint, p_last_ms bigint, p_last_hash bytea)
RETURNS TABLE (last_seq bigint, last_ms bigint, last_hash bytea)
LANGUAGE sql STABLE
AS $body$
    SELECT coalesce(e.seq, p_last_seq), coalesce(e.created_ms, p_last_ms), coalesce(e.hash, p_last_hash)
    FROM (SELECT 1) AS one
    LEFT JOIN LATERAL (
        SELECT x.seq, x.created_ms, x.hash FROM __SCHEMA__.run_events AS x
        WHERE x.run_id = p_run_id AND x.seq > p_last_seq AND x.seq < p_last_seq + 256
        ORDER BY x.seq DESC
        LIMIT 1
    ) AS e ON true
$body$;

-- The heads of several runs, each as pgbridge_run_head reads it, with a snapshot taken when this
-- function runs: for a plain statement (no PL/pgSQL) that locks run rows and reads their heads in
-- one statement (pgbridge's append_runs_once and stream_append_simple). Such a statement's own
-- snapshot is taken before it waits for a row lock, so it cannot see the events of an append that
-- committed meanwhile without writing the row (which appends no longer do on every event): it
-- would number its events after a head that is not the run's newest. A VOLATILE function's query
-- takes a new snapshot, after the caller locked the rows, as the append functions' separate
-- statement does. One call for the whole batch (the caller passes the locked rows' last_seq,
-- last_ms and last_hash), in PL/pgSQL so its plan is kept between calls.
CREATE FUNCTION __SCHEMA__.pgbridge_run_heads_fresh(
    p_run_ids text[], p_last_seqs bigint[], p_last_mss bigint[], p_last_hashes bytea[]
) RETURNS TABLE (run_id text, last_seq bigint, last_ms bigint, last_hash bytea)
LANGUAGE plpgsql VOLATILE
AS $body$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        SELECT u.run_id, h.last_seq, h.last_ms, h.last_hash
        FROM unnest(p_run_ids, p_last_seqs, p_last_mss, p_last_hashes) AS u(run_id, last_seq, last_ms, last_hash)
        CROSS JOIN LATERAL __SCHEMA__.pgbridge_run_head(u.run_id, u.last_seq, u.last_ms, u.last_hash) AS h;
END
$body$;

-- pgbridge_trim_run_prefixes also keeps the deleted event's creation time (trimmed_ms), and
-- brings the run row's head (last_seq, last_ms, last_hash) up to the run's newest event, since
-- appends no longer write it: a run whose every event is deleted keeps its counters in its row.
-- It reads the head after the caller locked the rows (a statement of its own), so it sees every
-- committed append.
CREATE OR REPLACE FUNCTION __SCHEMA__.pgbridge_trim_run_prefixes(run_ids text[], from_seqs bigint[], throughs bigint[])
RETURNS bigint
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET pgbridge.retention = 'on'
AS $$
            WITH plan AS (
                SELECT p.run_id, p.from_seq, p.through, h.last_seq, h.last_ms, h.last_hash
                FROM unnest(run_ids, from_seqs, throughs) AS p(run_id, from_seq, through)
                JOIN __SCHEMA__.run_streams AS s ON s.run_id = p.run_id
                CROSS JOIN LATERAL __SCHEMA__.pgbridge_run_head(s.run_id, s.last_seq, s.last_ms, s.last_hash) AS h
            ),
            moved AS (
                UPDATE __SCHEMA__.run_streams AS r SET
                    first_seq = p.through + 1,
                    first_ms = (SELECT e.created_ms FROM __SCHEMA__.run_events AS e
                                WHERE e.run_id = p.run_id AND e.seq = p.through + 1),
                    trimmed_hash = (SELECT e.hash FROM __SCHEMA__.run_events AS e
                                    WHERE e.run_id = p.run_id AND e.seq = p.through),
                    trimmed_ms = (SELECT e.created_ms FROM __SCHEMA__.run_events AS e
                                  WHERE e.run_id = p.run_id AND e.seq = p.through),
                    last_seq = p.last_seq, last_ms = p.last_ms, last_hash = p.last_hash
                FROM plan AS p
                WHERE r.run_id = ANY(run_ids) AND r.run_id = p.run_id
                  AND r.first_seq = p.from_seq AND p.through BETWEEN p.from_seq AND p.last_seq
                RETURNING r.run_id, p.from_seq, p.through
            ),
            gone AS (
                DELETE FROM __SCHEMA__.run_events AS e
                USING moved AS m
                WHERE e.run_id = m.run_id AND e.seq BETWEEN m.from_seq AND m.through
                RETURNING 1
            )
            SELECT count(*) FROM gone
        $$;

-- pgbridge_append_batch leaves the run row alone: it reads each run's head from run_events
-- (pgbridge_run_head) and writes the row only for the run's first retained event, a status
-- change, its terminal event, or when the row would otherwise fall 256 events behind the run's
-- newest. A pinned xmin horizon (a long transaction, a stale replication slot) stops PostgreSQL
-- pruning row versions; when every append updated its run row, each run's row grew one version
-- per append, which every later append, read and retention pass of that run walked through
-- (docs/reliability.md): now it grows one per 256 events. Event times are pgbridge_event_ms's
-- (its computation written out here). Each event's row also says the creation time of the event
-- before it (prev_ms: the run's head for its first event of the call): a process that hands its
-- own committed events to its readers without reading them back checks they follow what those
-- readers hold, so a run whose history changed (a failover) is not continued as if it had not
-- (pgbridge.engine.feed). Both ways of revision 0011 follow these rules: the short way for one
-- existing run reads the head after its locking statement, in one statement of its own, and
-- the general way in its query of the runs. A new result column, so the function is created
-- anew; otherwise revision 0011's body.
DROP FUNCTION __SCHEMA__.pgbridge_append_batch(text[], text[], text[], boolean[], text[], boolean);
CREATE FUNCTION __SCHEMA__.pgbridge_append_batch(
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

-- pgbridge_stream_append reads the stream's head from run_events after it locked the row (a
-- statement of its own, so it sees every committed append) and moves the row only when the
-- request changes what it says: a close (which also brings the row's head up to the stream's
-- newest event), a Stream-Seq, a stream with a TTL (which every append touches), the stream's
-- first event, a status, or a head 256 events past the row's; its event times are odd on an odd
-- timeline and even on an even one. Otherwise revision 0010's body.
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
    h record;
    row_seq bigint;
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
    -- The stream's head, read after the lock (a statement of its own: it sees every committed
    -- append): appends leave the row behind its newest event.
    SELECT * INTO h FROM __SCHEMA__.pgbridge_run_head(p_run_id, r.last_seq, r.last_ms, r.last_hash);
    row_seq := r.last_seq;
    r.last_seq := h.last_seq; r.last_ms := h.last_ms; r.last_hash := h.last_hash;
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
    -- one UPDATE moves it (its newest event, the stream's columns) when it must move. The events
    -- are numbered and chained exactly as pgbridge_append_batch does (one created_ms per call,
    -- odd on an odd timeline and even on an even one).
    new_seq := r.last_seq;
    new_ms := r.last_ms;
    IF n > 0 THEN
        stamp := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
        stamp := stamp + (stamp + ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::bigint) % 2;
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
    -- The row moves only when something it says changes: a close, a Stream-Seq, a TTL's touch,
    -- the run's first event, a status, or a head 256 or more events past the row's (revision
    -- 0012: an append that leaves it alone leaves no row version behind). A row written takes
    -- the stream's newest event as its head.
    IF p_close OR p_stream_seq IS NOT NULL OR r.stream_ttl_seconds IS NOT NULL
       OR (n > 0 AND (r.first_seq > r.last_seq OR r.status <> 'active'
                      OR r.awaiting_input_since IS NOT NULL OR new_seq - row_seq >= 256)) THEN
        UPDATE __SCHEMA__.run_streams AS u SET
            last_seq = new_seq, last_ms = new_ms,
            last_hash = CASE WHEN n > 0 THEN chain ELSE r.last_hash END,
            first_ms = CASE WHEN n > 0 AND u.first_seq > r.last_seq THEN stamp ELSE u.first_ms END,
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
    END IF;
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

-- pgbridge_delete_stream reads each run's head from run_events once it holds the run's lock (a
-- statement of its own, so it sees every committed append): the events it deletes and the
-- deletion's record (last_seq, last_hash) are the run's whole history. Otherwise revision
-- 0009's body.
CREATE OR REPLACE FUNCTION __SCHEMA__.pgbridge_delete_stream(p_run_id text, p_via text)
RETURNS TABLE (run_id text, last_seq bigint, events_deleted bigint)
LANGUAGE plpgsql
AS $body$
DECLARE
    current_run text := p_run_id;
    r record;
    h record;
    src record;
    gone bigint;
BEGIN
    LOOP
        SELECT u.first_seq, u.last_seq, u.last_ms, u.fork_source_run_id, u.status, u.created_at, u.last_hash INTO r
        FROM __SCHEMA__.run_streams AS u WHERE u.run_id = current_run FOR UPDATE;
        EXIT WHEN NOT FOUND;
        SELECT * INTO h FROM __SCHEMA__.pgbridge_run_head(current_run, r.last_seq, r.last_ms, r.last_hash);
        gone := 0;
        IF r.first_seq <= h.last_seq THEN
            gone := __SCHEMA__.pgbridge_trim_run_prefixes(ARRAY[current_run], ARRAY[r.first_seq], ARRAY[h.last_seq]);
        END IF;
        INSERT INTO __SCHEMA__.run_deletions
            (run_id, deleted_at, via, status, started_at, last_seq, events_deleted, last_hash)
        VALUES (current_run, clock_timestamp(), p_via, r.status, r.created_at, h.last_seq, gone, h.last_hash);
        DELETE FROM __SCHEMA__.run_streams AS u WHERE u.run_id = current_run;
        run_id := current_run;
        last_seq := h.last_seq;
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

-- The record of a run row deleted by any other statement holds the run's newest event (its
-- events stay in run_events), not the row's possibly older head. Otherwise revision 0009's body.
CREATE OR REPLACE FUNCTION __SCHEMA__.pgbridge_record_run_deletion() RETURNS trigger
LANGUAGE plpgsql AS $body$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM __SCHEMA__.run_deletions AS d
                   WHERE d.run_id = OLD.run_id AND d.deleted_at >= now()) THEN
        INSERT INTO __SCHEMA__.run_deletions
            (run_id, deleted_at, via, status, started_at, last_seq, events_deleted, last_hash)
        SELECT OLD.run_id, clock_timestamp(), 'sql', OLD.status, OLD.created_at, h.last_seq, 0, h.last_hash
        FROM __SCHEMA__.pgbridge_run_head(OLD.run_id, OLD.last_seq, OLD.last_ms, OLD.last_hash) AS h;
    END IF;
    RETURN NULL;
END
$body$;

-- pgbridge_runs shows each run's head as pgbridge_run_head reads it, and its last activity as the
-- later of its row's last write and its newest event. The same columns as revision 0005's.
CREATE OR REPLACE VIEW __SCHEMA__.pgbridge_runs AS
SELECT
    r.run_id,
    r.status,
    t.event AS terminal_event,
    r.status = 'awaiting_input' AS awaiting_input,
    h.last_seq AS events_published,
    h.last_seq - r.first_seq + 1 AS events_retained,
    r.first_seq - 1 AS events_deleted,
    r.first_seq,
    h.last_seq,
    r.terminal_seq,
    CASE WHEN r.first_seq <= h.last_seq THEN r.first_ms || '-' || r.first_seq END AS first_event_id,
    CASE WHEN r.first_seq <= h.last_seq THEN h.last_ms || '-' || h.last_seq END AS last_event_id,
    CASE WHEN r.terminal_seq IS NOT NULL THEN h.last_ms || '-' || r.terminal_seq END
        AS terminal_event_id,
    r.created_at AS started_at,
    to_timestamp(h.last_ms / 1000.0) AS last_event_at,
    greatest(r.updated_at, to_timestamp(h.last_ms / 1000.0)) AS last_activity_at,
    r.awaiting_input_since,
    r.ended_at,
    coalesce(r.ended_at, now()) - r.created_at AS duration
FROM __SCHEMA__.run_streams AS r
CROSS JOIN LATERAL __SCHEMA__.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
LEFT JOIN __SCHEMA__.run_events AS t ON t.run_id = r.run_id AND t.seq = r.terminal_seq;

-- migrate:downgrade

-- Revisions 0010 and 0011 keep every run's head in its row: first bring each row up to its
-- run's newest event (and its last activity to that event's time), while pgbridge_run_head exists.
UPDATE __SCHEMA__.run_streams AS r SET
    last_seq = h.last_seq, last_ms = h.last_ms, last_hash = h.last_hash,
    updated_at = greatest(r.updated_at, to_timestamp(h.last_ms / 1000.0))
FROM __SCHEMA__.run_streams AS s
CROSS JOIN LATERAL __SCHEMA__.pgbridge_run_head(s.run_id, s.last_seq, s.last_ms, s.last_hash) AS h
WHERE r.run_id = s.run_id AND h.last_seq > s.last_seq;

-- Revision 0005's view.
CREATE OR REPLACE VIEW __SCHEMA__.pgbridge_runs AS
SELECT
    r.run_id,
    r.status,
    t.event AS terminal_event,
    r.status = 'awaiting_input' AS awaiting_input,
    r.last_seq AS events_published,
    r.last_seq - r.first_seq + 1 AS events_retained,
    r.first_seq - 1 AS events_deleted,
    r.first_seq,
    r.last_seq,
    r.terminal_seq,
    CASE WHEN r.first_seq <= r.last_seq THEN r.first_ms || '-' || r.first_seq END AS first_event_id,
    CASE WHEN r.first_seq <= r.last_seq THEN r.last_ms || '-' || r.last_seq END AS last_event_id,
    CASE WHEN r.terminal_seq IS NOT NULL THEN r.last_ms || '-' || r.terminal_seq END
        AS terminal_event_id,
    r.created_at AS started_at,
    to_timestamp(r.last_ms / 1000.0) AS last_event_at,
    r.updated_at AS last_activity_at,
    r.awaiting_input_since,
    r.ended_at,
    coalesce(r.ended_at, now()) - r.created_at AS duration
FROM __SCHEMA__.run_streams AS r
LEFT JOIN __SCHEMA__.run_events AS t ON t.run_id = r.run_id AND t.seq = r.terminal_seq;

-- Revision 0009's functions.
CREATE OR REPLACE FUNCTION __SCHEMA__.pgbridge_record_run_deletion() RETURNS trigger
LANGUAGE plpgsql AS $body$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM __SCHEMA__.run_deletions AS d
                   WHERE d.run_id = OLD.run_id AND d.deleted_at >= now()) THEN
        INSERT INTO __SCHEMA__.run_deletions
            (run_id, deleted_at, via, status, started_at, last_seq, events_deleted, last_hash)
        VALUES (OLD.run_id, clock_timestamp(), 'sql', OLD.status, OLD.created_at, OLD.last_seq, 0, OLD.last_hash);
    END IF;
    RETURN NULL;
END
$body$;

CREATE OR REPLACE FUNCTION __SCHEMA__.pgbridge_delete_stream(p_run_id text, p_via text)
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
        SELECT u.first_seq, u.last_seq, u.fork_source_run_id, u.status, u.created_at, u.last_hash INTO r
        FROM __SCHEMA__.run_streams AS u WHERE u.run_id = current_run FOR UPDATE;
        EXIT WHEN NOT FOUND;
        gone := 0;
        IF r.first_seq <= r.last_seq THEN
            gone := __SCHEMA__.pgbridge_trim_run_prefixes(ARRAY[current_run], ARRAY[r.first_seq], ARRAY[r.last_seq]);
        END IF;
        INSERT INTO __SCHEMA__.run_deletions
            (run_id, deleted_at, via, status, started_at, last_seq, events_deleted, last_hash)
        VALUES (current_run, clock_timestamp(), p_via, r.status, r.created_at, r.last_seq, gone, r.last_hash);
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

-- Revision 0010's function (0011 left it as it was).
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

-- Revision 0011's function (its result has no prev_ms: created anew).
DROP FUNCTION __SCHEMA__.pgbridge_append_batch(text[], text[], text[], boolean[], text[], boolean);
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
    k integer;
    refusal text;
    held boolean;
    took boolean;
    next_seq bigint;
    chain bytea;
    ended boolean;
    one_run boolean;
    locked boolean := false;
    fast boolean := false;
    head record;
    last_taken integer := 0;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    -- One run (every publish, and every batch of a publish_many or of a sharded deployment's
    -- group commit) in its common case: lock and read its row in one statement, then number and
    -- chain its events in place order, with no query and no sort. A new run, a Durable Stream
    -- that is not plain JSON, deleted or expired, and a batch of several runs go the general way.
    one_run := run_ids[1] = ALL (run_ids);
    IF one_run THEN
        SELECT r.last_seq, r.last_hash, r.first_seq <= r.last_seq AS holds_events,
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
        held := head.holds_events;
        next_seq := head.last_seq;
        chain := coalesce(head.last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
        ended := head.was_ended;
        FOR k IN 1 .. n LOOP
            IF ended THEN
                out_refused[k] := 'terminal';
                CONTINUE;
            END IF;
            next_seq := next_seq + 1;
            chain := __SCHEMA__.pgbridge_link_hash(chain, run_ids[k], next_seq, stamp, events[k], datas[k]);
            ended := terminals[k];
            out_seq[k] := next_seq; out_hash[k] := chain;
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
    END IF;

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

-- Revision 0003's function (its grants stay as they are: CREATE OR REPLACE keeps them).
CREATE OR REPLACE FUNCTION __SCHEMA__.pgbridge_trim_run_prefixes(run_ids text[], from_seqs bigint[], throughs bigint[])
RETURNS bigint
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET pgbridge.retention = 'on'
AS $$
            WITH plan AS (
                SELECT * FROM unnest(run_ids, from_seqs, throughs) AS p(run_id, from_seq, through)
            ),
            moved AS (
                UPDATE __SCHEMA__.run_streams AS r SET
                    first_seq = p.through + 1,
                    first_ms = (SELECT e.created_ms FROM __SCHEMA__.run_events AS e
                                WHERE e.run_id = p.run_id AND e.seq = p.through + 1),
                    trimmed_hash = (SELECT e.hash FROM __SCHEMA__.run_events AS e
                                    WHERE e.run_id = p.run_id AND e.seq = p.through)
                FROM plan AS p
                WHERE r.run_id = ANY(run_ids) AND r.run_id = p.run_id
                  AND r.first_seq = p.from_seq AND p.through BETWEEN p.from_seq AND r.last_seq
                RETURNING r.run_id, p.from_seq, p.through
            ),
            gone AS (
                DELETE FROM __SCHEMA__.run_events AS e
                USING moved AS m
                WHERE e.run_id = m.run_id AND e.seq BETWEEN m.from_seq AND m.through
                RETURNING 1
            )
            SELECT count(*) FROM gone
        $$;

DROP FUNCTION __SCHEMA__.pgbridge_run_heads_fresh(text[], bigint[], bigint[], bytea[]);
DROP FUNCTION __SCHEMA__.pgbridge_run_head(text, bigint, bigint, bytea);
DROP FUNCTION __SCHEMA__.pgbridge_event_ms();
ALTER TABLE __SCHEMA__.run_streams DROP COLUMN trimmed_ms;

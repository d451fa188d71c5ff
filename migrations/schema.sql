-- pgbridge's schema at head (revision 0013) in schema public: what
-- `pgbridge migrate` leaves in an empty database, as DDL.
--
-- GENERATED from a migrated database, do not edit. After adding a revision:
--     python migrations/dump_schema.py [--dsn postgresql://...]
-- (`--check` only compares). tests/db/test_migrations.py runs this file on an
-- empty database and requires the same catalog as a migration to head.
-- The revisions in migrations/versions remain the source of truth.
--
-- Pasteable into psql on an empty database (psql -v ON_ERROR_STOP=1 -f schema.sql);
-- the alembic_version row makes `pgbridge migrate` find it up to date.

BEGIN;

-- Functions come in the order the revisions created them, so a SQL function may call
-- one created after it: bodies are checked when first run, not now (as pg_dump does).
SET LOCAL check_function_bodies = off;

CREATE TABLE public.alembic_version (
    version_num character varying(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

CREATE TABLE public.run_streams (
    run_id text NOT NULL,
    status text DEFAULT 'active'::text NOT NULL,
    last_seq bigint DEFAULT 0 NOT NULL,
    last_ms bigint,
    first_seq bigint DEFAULT 1 NOT NULL,
    terminal_seq bigint,
    awaiting_input_since timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    ended_at timestamp with time zone,
    first_ms bigint,
    last_hash bytea,
    trimmed_hash bytea,
    content_type text,
    stream_ttl_seconds bigint,
    stream_expires_at timestamp with time zone,
    stream_touched_at timestamp with time zone,
    stream_writer_seq text,
    closed_by_producer_id text,
    closed_by_epoch bigint,
    closed_by_seq bigint,
    fork_source_run_id text,
    fork_offset_seq bigint,
    fork_sub_offset bigint,
    fork_seq bigint,
    fork_refs bigint DEFAULT 0 NOT NULL,
    stream_deleted_at timestamp with time zone,
    trimmed_ms bigint,
    CONSTRAINT run_streams_pkey PRIMARY KEY (run_id),
    CONSTRAINT run_streams_fork_check CHECK ((((fork_source_run_id IS NULL) = (fork_seq IS NULL)) AND (fork_refs >= 0))),
    CONSTRAINT run_streams_retained_range_check CHECK (((first_seq >= 1) AND (first_seq <= (last_seq + 1)))),
    CONSTRAINT run_streams_run_id_length_check CHECK (((char_length(run_id) >= 1) AND (char_length(run_id) <= 255))),
    CONSTRAINT run_streams_status_check CHECK ((status = ANY (ARRAY['active'::text, 'awaiting_input'::text, 'ended'::text, 'cancelled'::text, 'errored'::text]))),
    CONSTRAINT run_streams_terminal_status_check CHECK (((terminal_seq IS NULL) = (status = ANY (ARRAY['active'::text, 'awaiting_input'::text]))))
) WITH (fillfactor=70);

CREATE INDEX run_streams_ended_idx ON public.run_streams USING btree (ended_at) WHERE (ended_at IS NOT NULL);

CREATE INDEX run_streams_ended_retained_idx ON public.run_streams USING btree (ended_at) WHERE (terminal_seq >= first_seq);

CREATE INDEX run_streams_expiring_idx ON public.run_streams USING btree (run_id) WHERE ((stream_expires_at IS NOT NULL) OR (stream_ttl_seconds IS NOT NULL));

CREATE INDEX run_streams_first_ms_idx ON public.run_streams USING btree (first_ms) WHERE (first_ms IS NOT NULL);

CREATE INDEX run_streams_open_idx ON public.run_streams USING btree (run_id) WHERE (terminal_seq IS NULL);

CREATE INDEX run_streams_retained_count_idx ON public.run_streams USING btree (((terminal_seq - first_seq))) WHERE (terminal_seq >= first_seq);

CREATE TABLE public.run_events (
    run_id text NOT NULL,
    seq bigint NOT NULL,
    created_ms bigint NOT NULL,
    event text NOT NULL,
    data json NOT NULL,
    terminal boolean DEFAULT false NOT NULL,
    hash bytea NOT NULL,
    CONSTRAINT run_events_pkey PRIMARY KEY (run_id, seq)
);

CREATE TABLE public.retention_last_pass (
    id smallint DEFAULT 1 NOT NULL,
    started_at timestamp with time zone NOT NULL,
    finished_at timestamp with time zone NOT NULL,
    events_deleted bigint NOT NULL,
    runs_deleted bigint NOT NULL,
    runs_dead_lettered bigint NOT NULL,
    tables_vacuumed integer NOT NULL,
    policy json NOT NULL,
    passes bigint DEFAULT 1 NOT NULL,
    CONSTRAINT retention_last_pass_pkey PRIMARY KEY (id),
    CONSTRAINT retention_last_pass_one_row_check CHECK ((id = 1))
);

CREATE TABLE public.run_stream_producers (
    run_id text NOT NULL,
    producer_id text NOT NULL,
    epoch bigint NOT NULL,
    last_seq bigint NOT NULL,
    event_seq bigint,
    event_ms bigint,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT run_stream_producers_pkey PRIMARY KEY (run_id, producer_id),
    CONSTRAINT run_stream_producers_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.run_streams(run_id) ON DELETE CASCADE
);

CREATE TABLE public.run_deletions (
    run_id text NOT NULL,
    deleted_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    via text NOT NULL,
    status text NOT NULL,
    started_at timestamp with time zone NOT NULL,
    last_seq bigint NOT NULL,
    events_deleted bigint NOT NULL,
    last_hash bytea,
    CONSTRAINT run_deletions_pkey PRIMARY KEY (run_id, deleted_at),
    CONSTRAINT run_deletions_counts_check CHECK (((last_seq >= 0) AND ((events_deleted >= 0) AND (events_deleted <= last_seq)))),
    CONSTRAINT run_deletions_via_check CHECK (((char_length(via) >= 1) AND (char_length(via) <= 64)))
);

CREATE OR REPLACE FUNCTION public.pgbridge_link_hash(prev bytea, run_id text, seq bigint, created_ms bigint, event text, data text)
 RETURNS bytea
 LANGUAGE sql
 STABLE PARALLEL SAFE STRICT
AS $function$
            SELECT sha256(
                prev
                || int4send(octet_length(convert_to(run_id, 'UTF8'))) || convert_to(run_id, 'UTF8')
                || int8send(seq) || int8send(created_ms)
                || int4send(octet_length(convert_to(event, 'UTF8'))) || convert_to(event, 'UTF8')
                || int4send(octet_length(convert_to(data, 'UTF8'))) || convert_to(data, 'UTF8')
            )
        $function$;

CREATE OR REPLACE FUNCTION public.pgbridge_trim_run_prefixes(run_ids text[], from_seqs bigint[], throughs bigint[])
 RETURNS bigint
 LANGUAGE sql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET "pgbridge.retention" TO 'on'
AS $function$
            WITH plan AS (
                SELECT p.run_id, p.from_seq, p.through, h.last_seq, h.last_ms, h.last_hash
                FROM unnest(run_ids, from_seqs, throughs) AS p(run_id, from_seq, through)
                JOIN "public".run_streams AS s ON s.run_id = p.run_id
                CROSS JOIN LATERAL "public".pgbridge_run_head(s.run_id, s.last_seq, s.last_ms, s.last_hash) AS h
            ),
            moved AS (
                UPDATE "public".run_streams AS r SET
                    first_seq = p.through + 1,
                    first_ms = (SELECT e.created_ms FROM "public".run_events AS e
                                WHERE e.run_id = p.run_id AND e.seq = p.through + 1),
                    trimmed_hash = (SELECT e.hash FROM "public".run_events AS e
                                    WHERE e.run_id = p.run_id AND e.seq = p.through),
                    trimmed_ms = (SELECT e.created_ms FROM "public".run_events AS e
                                  WHERE e.run_id = p.run_id AND e.seq = p.through),
                    last_seq = p.last_seq, last_ms = p.last_ms, last_hash = p.last_hash
                FROM plan AS p
                WHERE r.run_id = ANY(run_ids) AND r.run_id = p.run_id
                  AND r.first_seq = p.from_seq AND p.through BETWEEN p.from_seq AND p.last_seq
                RETURNING r.run_id, p.from_seq, p.through
            ),
            gone AS (
                DELETE FROM "public".run_events AS e
                USING moved AS m
                WHERE e.run_id = m.run_id AND e.seq BETWEEN m.from_seq AND m.through
                RETURNING 1
            )
            SELECT count(*) FROM gone
        $function$;

REVOKE ALL ON FUNCTION public.pgbridge_trim_run_prefixes(text[],bigint[],bigint[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION public.pgbridge_guard_run_events()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
        BEGIN
            IF TG_OP = 'DELETE' AND current_setting('pgbridge.retention', true) = 'on' THEN
                RETURN NULL;
            END IF;
            RAISE EXCEPTION 'pgbridge: run_events is append-only, % is refused', TG_OP
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'events leave run_events only through retention (pgbridge retention)';
        END
        $function$;

CREATE OR REPLACE FUNCTION public.pgbridge_stream_append(p_run_id text, p_content_type text, p_events text[], p_datas text[], p_close boolean, p_stream_seq text, p_producer_id text, p_epoch bigint, p_seq bigint)
 RETURNS TABLE(outcome text, last_seq bigint, last_ms bigint, closed boolean, producer_epoch bigint, producer_seq bigint, event_seq bigint, event_ms bigint)
 LANGUAGE plpgsql
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
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
    SELECT * INTO r FROM "public".run_streams AS r WHERE r.run_id = p_run_id FOR UPDATE;
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
    SELECT * INTO h FROM "public".pgbridge_run_head(p_run_id, r.last_seq, r.last_ms, r.last_hash);
    row_seq := r.last_seq;
    r.last_seq := h.last_seq; r.last_ms := h.last_ms; r.last_hash := h.last_hash;
    IF has_producer THEN
        SELECT * INTO p FROM "public".run_stream_producers AS p
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
            chain := "public".pgbridge_link_hash(chain, p_run_id, r.last_seq + k, stamp, p_events[k], p_datas[k]);
            hashes[k] := chain;
        END LOOP;
        INSERT INTO "public".run_events (run_id, seq, created_ms, event, data, terminal, hash)
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
        UPDATE "public".run_streams AS u SET
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
        INSERT INTO "public".run_stream_producers AS p (run_id, producer_id, epoch, last_seq, event_seq, event_ms)
        VALUES (p_run_id, p_producer_id, p_epoch, p_seq, new_seq, new_ms)
        ON CONFLICT (run_id, producer_id) DO UPDATE
        SET epoch = excluded.epoch, last_seq = excluded.last_seq,
            event_seq = excluded.event_seq, event_ms = excluded.event_ms, updated_at = now();
    END IF;
    RETURN QUERY SELECT (CASE WHEN n = 0 THEN 'closed_now' ELSE 'appended' END)::text,
        new_seq, new_ms, p_close, p_epoch, p_seq, new_seq, new_ms;
END
$function$;

CREATE OR REPLACE FUNCTION public.pgbridge_guard_run_deletions()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    RAISE EXCEPTION 'pgbridge: run_deletions is append-only, % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'a deletion record is kept for good (docs/audit.md)';
END
$function$;

CREATE OR REPLACE FUNCTION public.pgbridge_record_run_deletion()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM "public".run_deletions AS d
                   WHERE d.run_id = OLD.run_id AND d.deleted_at >= now()) THEN
        INSERT INTO "public".run_deletions
            (run_id, deleted_at, via, status, started_at, last_seq, events_deleted, last_hash)
        SELECT OLD.run_id, clock_timestamp(), 'sql', OLD.status, OLD.created_at, h.last_seq, 0, h.last_hash
        FROM "public".pgbridge_run_head(OLD.run_id, OLD.last_seq, OLD.last_ms, OLD.last_hash) AS h;
    END IF;
    RETURN NULL;
END
$function$;

CREATE OR REPLACE FUNCTION public.pgbridge_delete_stream(p_run_id text, p_via text)
 RETURNS TABLE(run_id text, last_seq bigint, events_deleted bigint)
 LANGUAGE plpgsql
AS $function$
DECLARE
    current_run text := p_run_id;
    r record;
    h record;
    src record;
    gone bigint;
BEGIN
    LOOP
        SELECT u.first_seq, u.last_seq, u.last_ms, u.fork_source_run_id, u.status, u.created_at, u.last_hash INTO r
        FROM "public".run_streams AS u WHERE u.run_id = current_run FOR UPDATE;
        EXIT WHEN NOT FOUND;
        SELECT * INTO h FROM "public".pgbridge_run_head(current_run, r.last_seq, r.last_ms, r.last_hash);
        gone := 0;
        IF r.first_seq <= h.last_seq THEN
            gone := "public".pgbridge_trim_run_prefixes(ARRAY[current_run], ARRAY[r.first_seq], ARRAY[h.last_seq]);
        END IF;
        INSERT INTO "public".run_deletions
            (run_id, deleted_at, via, status, started_at, last_seq, events_deleted, last_hash)
        VALUES (current_run, clock_timestamp(), p_via, r.status, r.created_at, h.last_seq, gone, h.last_hash);
        DELETE FROM "public".run_streams AS u WHERE u.run_id = current_run;
        run_id := current_run;
        last_seq := h.last_seq;
        events_deleted := gone;
        RETURN NEXT;
        EXIT WHEN r.fork_source_run_id IS NULL;
        UPDATE "public".run_streams AS u SET fork_refs = greatest(u.fork_refs - 1, 0)
        WHERE u.run_id = r.fork_source_run_id
        RETURNING u.fork_refs, u.stream_deleted_at INTO src;
        EXIT WHEN NOT FOUND OR src.fork_refs > 0 OR src.stream_deleted_at IS NULL;
        current_run := r.fork_source_run_id;
    END LOOP;
END
$function$;

CREATE OR REPLACE FUNCTION public.pgbridge_event_ms()
 RETURNS bigint
 LANGUAGE sql
AS $function$
    SELECT CASE WHEN pg_is_in_recovery() THEN c.ms
        ELSE c.ms + (c.ms + ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::bigint) % 2
        END
    FROM (SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms) AS c
$function$;

CREATE OR REPLACE FUNCTION public.pgbridge_run_head(p_run_id text, p_last_seq bigint, p_last_ms bigint, p_last_hash bytea)
 RETURNS TABLE(last_seq bigint, last_ms bigint, last_hash bytea)
 LANGUAGE sql
 STABLE
AS $function$
    SELECT coalesce(e.seq, p_last_seq), coalesce(e.created_ms, p_last_ms), coalesce(e.hash, p_last_hash)
    FROM (SELECT 1) AS one
    LEFT JOIN LATERAL (
        SELECT x.seq, x.created_ms, x.hash FROM "public".run_events AS x
        WHERE x.run_id = p_run_id AND x.seq > p_last_seq AND x.seq < p_last_seq + 256
        ORDER BY x.seq DESC
        LIMIT 1
    ) AS e ON true
$function$;

CREATE OR REPLACE FUNCTION public.pgbridge_run_heads_fresh(p_run_ids text[], p_last_seqs bigint[], p_last_mss bigint[], p_last_hashes bytea[])
 RETURNS TABLE(run_id text, last_seq bigint, last_ms bigint, last_hash bytea)
 LANGUAGE plpgsql
AS $function$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        SELECT u.run_id, h.last_seq, h.last_ms, h.last_hash
        FROM unnest(p_run_ids, p_last_seqs, p_last_mss, p_last_hashes) AS u(run_id, last_seq, last_ms, last_hash)
        CROSS JOIN LATERAL "public".pgbridge_run_head(u.run_id, u.last_seq, u.last_ms, u.last_hash) AS h;
END
$function$;

CREATE OR REPLACE FUNCTION public.pgbridge_append_batch(run_ids text[], events text[], datas text[], terminals boolean[], statuses text[], publish boolean DEFAULT false)
 RETURNS TABLE(ord integer, seq bigint, created_ms bigint, refused text, prev_ms bigint)
 LANGUAGE plpgsql
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
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
        FROM "public".run_streams AS r WHERE r.run_id = run_ids[1]
        FOR UPDATE;
        locked := FOUND;
        fast := locked AND NOT head.special;
    END IF;
    IF fast THEN
        -- The run's head, read after the lock (a statement of its own: it sees every committed
        -- append): appends leave the row behind its newest event.
        SELECT * INTO h FROM "public".pgbridge_run_head(run_ids[1], head.last_seq, head.last_ms, head.last_hash);
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
            chain := "public".pgbridge_link_hash(chain, run_ids[k], next_seq, stamp, events[k], datas[k]);
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
            INSERT INTO "public".run_streams AS r (run_id, status, last_seq)
            SELECT DISTINCT u.r, 'active', 0 FROM unnest(run_ids) AS u(r) ORDER BY 1
            ON CONFLICT (run_id) DO UPDATE SET run_id = excluded.run_id WHERE false;
        ELSIF NOT locked THEN  -- one new run: create its row and lock it (or lock the one made meanwhile)
            INSERT INTO "public".run_streams (run_id, status, last_seq) VALUES (run_ids[1], 'active', 0)
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
                    FROM "public".run_streams AS r
                    CROSS JOIN LATERAL "public".pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
                    WHERE r.run_id = ANY (run_ids)
                ),
                verdict AS MATERIALIZED (
                    SELECT count(*) = n AND NOT coalesce(bool_or(x.special), false) AS every_one FROM runs AS x
                ),
                planned AS MATERIALIZED (
                    SELECT u.i::integer AS i, u.rid, r.last_seq + 1 AS taken_seq, r.last_ms AS before_ms,
                        "public".pgbridge_link_hash(
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
                    INSERT INTO "public".run_events (run_id, seq, created_ms, event, data, terminal, hash)
                    SELECT p.rid, p.taken_seq, stamp, p.ev, p.da::json, p.te, p.link FROM planned AS p
                    RETURNING 1
                ),
                moved AS MATERIALIZED (
                    UPDATE "public".run_streams AS r SET
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
                FROM "public".run_streams AS r
                CROSS JOIN LATERAL "public".pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
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
                    UPDATE "public".run_streams SET stream_deleted_at = now()
                    WHERE run_id = current_run AND stream_deleted_at IS NULL;
                    refusal := 'gone';
                ELSIF e.expired THEN
                    -- Gone: deleted as a DELETE would; the publish starts a new run.
                    PERFORM "public".pgbridge_delete_stream(current_run, 'expiry');
                    INSERT INTO "public".run_streams (run_id, status, last_seq) VALUES (current_run, 'active', 0);
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
            chain := "public".pgbridge_link_hash(chain, e.rid, next_seq, stamp, events[e.i], datas[e.i]);
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
            INSERT INTO "public".run_events (run_id, seq, created_ms, event, data, terminal, hash)
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
            INSERT INTO "public".run_events (run_id, seq, created_ms, event, data, terminal, hash)
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
        UPDATE "public".run_streams AS r SET
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
$function$;

CREATE TRIGGER run_deletions_append_only BEFORE DELETE OR UPDATE OR TRUNCATE ON public.run_deletions FOR EACH STATEMENT EXECUTE FUNCTION public.pgbridge_guard_run_deletions();

CREATE TRIGGER run_events_append_only BEFORE DELETE OR UPDATE OR TRUNCATE ON public.run_events FOR EACH STATEMENT EXECUTE FUNCTION public.pgbridge_guard_run_events();

CREATE TRIGGER run_streams_record_deletion AFTER DELETE ON public.run_streams FOR EACH ROW EXECUTE FUNCTION public.pgbridge_record_run_deletion();

CREATE VIEW public.pgbridge_runs AS
 SELECT r.run_id,
    r.status,
    t.event AS terminal_event,
    r.status = 'awaiting_input'::text AS awaiting_input,
    h.last_seq AS events_published,
    h.last_seq - r.first_seq + 1 AS events_retained,
    r.first_seq - 1 AS events_deleted,
    r.first_seq,
    h.last_seq,
    r.terminal_seq,
        CASE
            WHEN r.first_seq <= h.last_seq THEN (r.first_ms || '-'::text) || r.first_seq
            ELSE NULL::text
        END AS first_event_id,
        CASE
            WHEN r.first_seq <= h.last_seq THEN (h.last_ms || '-'::text) || h.last_seq
            ELSE NULL::text
        END AS last_event_id,
        CASE
            WHEN r.terminal_seq IS NOT NULL THEN (h.last_ms || '-'::text) || r.terminal_seq
            ELSE NULL::text
        END AS terminal_event_id,
    r.created_at AS started_at,
    to_timestamp((h.last_ms::numeric / 1000.0)::double precision) AS last_event_at,
    GREATEST(r.updated_at, to_timestamp((h.last_ms::numeric / 1000.0)::double precision)) AS last_activity_at,
    r.awaiting_input_since,
    r.ended_at,
    COALESCE(r.ended_at, now()) - r.created_at AS duration
   FROM public.run_streams r
     CROSS JOIN LATERAL public.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) h(last_seq, last_ms, last_hash)
     LEFT JOIN public.run_events t ON t.run_id = r.run_id AND t.seq = r.terminal_seq;

CREATE VIEW public.pgbridge_events AS
 SELECT e.run_id,
    e.seq,
    (e.created_ms || '-'::text) || e.seq AS event_id,
    e.event,
    e.data,
    e.terminal,
    e.created_ms,
    to_timestamp((e.created_ms::numeric / 1000.0)::double precision) AS created_at
   FROM public.run_events e;

INSERT INTO public.alembic_version (version_num) VALUES ('0013');

COMMIT;

-- Revision 0009: deletion records: run_deletions, and every deletion of a run writes one.
--
-- FROZEN: the exact SQL this revision runs, as it ran when the revision was
-- written. Never edit it: a change to the schema is a new revision (see
-- migrations/README.md). __SCHEMA__ stands for the target schema as a quoted
-- identifier ("public"); 0009_run_deletions.py fills it in, runs the
-- statements of "-- migrate:upgrade" on upgrade and those of
-- "-- migrate:downgrade" on downgrade, in order. In psql:
--   sed -n '/^-- migrate:upgrade/,/^-- migrate:downgrade/p' 0009_run_deletions.sql | sed 's/__SCHEMA__/"public"/g' | psql
-- Function bodies are byte for byte what PostgreSQL stores (pg_proc.prosrc).

-- migrate:upgrade

-- One row per run row deleted from run_streams, written in the deleting
-- transaction: the run, when, by which path (via: http, api, retention,
-- expiry; sql for a DELETE outside pgbridge's functions), the run's status and
-- start, and its hash chain as it stood: last_seq (seqs 1..last_seq were
-- published), last_hash (the chain's head; NULL: no event) and events_deleted
-- (the events still stored that went with the run; retention had deleted the
-- others). A run id used again is a new run: its deletions are told apart by
-- deleted_at and started_at.
CREATE TABLE __SCHEMA__.run_deletions (
    run_id text NOT NULL,
    deleted_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    via text NOT NULL,
    status text NOT NULL,
    started_at timestamp with time zone NOT NULL,
    last_seq bigint NOT NULL,
    events_deleted bigint NOT NULL,
    last_hash bytea,
    CONSTRAINT run_deletions_pkey PRIMARY KEY (run_id, deleted_at),
    CONSTRAINT run_deletions_via_check CHECK (char_length(via) BETWEEN 1 AND 64),
    CONSTRAINT run_deletions_counts_check CHECK (last_seq >= 0 AND events_deleted BETWEEN 0 AND last_seq)
);

-- Deletion records are append-only like run_events, with no way around it
-- for pgbridge: UPDATE, DELETE and TRUNCATE always fail (lifting it takes the
-- table's owner: ALTER TABLE ... DISABLE TRIGGER).
CREATE FUNCTION __SCHEMA__.pgbridge_guard_run_deletions() RETURNS trigger
LANGUAGE plpgsql AS $body$
BEGIN
    RAISE EXCEPTION 'pgbridge: run_deletions is append-only, % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'a deletion record is kept for good (docs/audit.md)';
END
$body$;

CREATE TRIGGER run_deletions_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON __SCHEMA__.run_deletions
    FOR EACH STATEMENT EXECUTE FUNCTION __SCHEMA__.pgbridge_guard_run_deletions();

-- The net under every other path: a run row deleted without a record of this
-- transaction (a DELETE in psql, say) gets one, via 'sql'. Its events, if
-- any, stay in run_events (the append-only guard keeps them): events_deleted 0.
CREATE FUNCTION __SCHEMA__.pgbridge_record_run_deletion() RETURNS trigger
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

CREATE TRIGGER run_streams_record_deletion
    AFTER DELETE ON __SCHEMA__.run_streams
    FOR EACH ROW EXECUTE FUNCTION __SCHEMA__.pgbridge_record_run_deletion();

-- pgbridge_delete_stream with the path that deletes (p_via): revision 0008's,
-- writing each run row's record (after its events went through the trim
-- function, before the row goes) in the same transaction. Its callers: a
-- DELETE over HTTP (http) or from Python (api), retention's tombstones
-- (retention), an expired stream swept, recreated by a PUT or published to
-- (expiry). A soft-deleted source deleted up the chain gets the via of the
-- fork whose deletion released it. A new signature: the old function is
-- dropped below, once pgbridge_append_batch no longer calls it.
CREATE FUNCTION __SCHEMA__.pgbridge_delete_stream(p_run_id text, p_via text)
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

-- pgbridge_append_batch names the path of its deletion (a publish to an expired
-- stream): revision 0008's body with that one call changed.
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

DROP FUNCTION __SCHEMA__.pgbridge_delete_stream(text);

-- migrate:downgrade

-- Revision 0008's pgbridge_delete_stream and pgbridge_append_batch again; the
-- deletion records go with their table.
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

DROP FUNCTION __SCHEMA__.pgbridge_delete_stream(text, text);

DROP TRIGGER run_streams_record_deletion ON __SCHEMA__.run_streams;

DROP FUNCTION __SCHEMA__.pgbridge_record_run_deletion();

DROP TABLE __SCHEMA__.run_deletions;

DROP FUNCTION __SCHEMA__.pgbridge_guard_run_deletions();

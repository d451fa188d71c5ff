-- Revision 0007: Durable Streams forks; pgbridge_stream_append answers 'gone' for a soft-deleted stream.
--
-- FROZEN: the exact SQL this revision runs, as it ran when the revision was
-- written. Never edit it: a change to the schema is a new revision (see
-- migrations/README.md). __SCHEMA__ stands for the target schema as a quoted
-- identifier ("public"); 0007_stream_forks.py fills it in, runs the
-- statements of "-- migrate:upgrade" on upgrade and those of
-- "-- migrate:downgrade" on downgrade, in order. In psql:
--   sed -n '/^-- migrate:upgrade/,/^-- migrate:downgrade/p' 0007_stream_forks.sql | sed 's/__SCHEMA__/"public"/g' | psql
-- Function bodies are byte for byte what PostgreSQL stores (pg_proc.prosrc).

-- migrate:upgrade

ALTER TABLE __SCHEMA__.run_streams ADD COLUMN fork_source_run_id TEXT;

ALTER TABLE __SCHEMA__.run_streams ADD COLUMN fork_offset_seq BIGINT;

ALTER TABLE __SCHEMA__.run_streams ADD COLUMN fork_sub_offset BIGINT;

ALTER TABLE __SCHEMA__.run_streams ADD COLUMN fork_seq BIGINT;

ALTER TABLE __SCHEMA__.run_streams ADD COLUMN fork_refs BIGINT DEFAULT 0 NOT NULL;

ALTER TABLE __SCHEMA__.run_streams ADD COLUMN stream_deleted_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE __SCHEMA__.run_streams ADD CONSTRAINT run_streams_fork_check CHECK ((fork_source_run_id IS NULL) = (fork_seq IS NULL) AND fork_refs >= 0);

-- The same function, with a soft-deleted stream (stream_deleted_at) answering 'gone'.
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

-- migrate:downgrade

-- Revision 0006's function again.
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

ALTER TABLE __SCHEMA__.run_streams DROP CONSTRAINT run_streams_fork_check;

ALTER TABLE __SCHEMA__.run_streams DROP COLUMN stream_deleted_at;

ALTER TABLE __SCHEMA__.run_streams DROP COLUMN fork_refs;

ALTER TABLE __SCHEMA__.run_streams DROP COLUMN fork_seq;

ALTER TABLE __SCHEMA__.run_streams DROP COLUMN fork_sub_offset;

ALTER TABLE __SCHEMA__.run_streams DROP COLUMN fork_offset_seq;

ALTER TABLE __SCHEMA__.run_streams DROP COLUMN fork_source_run_id;

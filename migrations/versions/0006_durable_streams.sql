-- Revision 0006: Durable Streams columns, run_stream_producers and pgbridge_stream_append.
--
-- FROZEN: the exact SQL this revision runs, as it ran when the revision was
-- written. Never edit it: a change to the schema is a new revision (see
-- migrations/README.md). __SCHEMA__ stands for the target schema as a quoted
-- identifier ("public"); 0006_durable_streams.py fills it in, runs the
-- statements of "-- migrate:upgrade" on upgrade and those of
-- "-- migrate:downgrade" on downgrade, in order. In psql:
--   sed -n '/^-- migrate:upgrade/,/^-- migrate:downgrade/p' 0006_durable_streams.sql | sed 's/__SCHEMA__/"public"/g' | psql
-- Function bodies are byte for byte what PostgreSQL stores (pg_proc.prosrc).

-- migrate:upgrade

ALTER TABLE __SCHEMA__.run_streams ADD COLUMN content_type TEXT;

ALTER TABLE __SCHEMA__.run_streams ADD COLUMN stream_ttl_seconds BIGINT;

ALTER TABLE __SCHEMA__.run_streams ADD COLUMN stream_expires_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE __SCHEMA__.run_streams ADD COLUMN stream_touched_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE __SCHEMA__.run_streams ADD COLUMN stream_writer_seq TEXT;

ALTER TABLE __SCHEMA__.run_streams ADD COLUMN closed_by_producer_id TEXT;

ALTER TABLE __SCHEMA__.run_streams ADD COLUMN closed_by_epoch BIGINT;

ALTER TABLE __SCHEMA__.run_streams ADD COLUMN closed_by_seq BIGINT;

CREATE TABLE __SCHEMA__.run_stream_producers (
    run_id TEXT NOT NULL,
    producer_id TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    event_seq BIGINT,
    event_ms BIGINT,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (run_id, producer_id),
    FOREIGN KEY(run_id) REFERENCES __SCHEMA__.run_streams (run_id) ON DELETE CASCADE
);

DROP INDEX __SCHEMA__.run_streams_open_updated_idx;

CREATE INDEX run_streams_open_updated_idx ON __SCHEMA__.run_streams (updated_at) WHERE terminal_seq IS NULL AND content_type IS NULL;

-- pgbridge_stream_append: a Durable Streams append, checked and stored in one
-- statement. An append over HTTP, or a Python publish that names its producer,
-- must be refused or stored as a whole, with the refusal decided under the run
-- row's lock, so this function does everything in the caller's one transaction:
--
-- 1. lock the run row (FOR UPDATE): every append to a run, from any process,
--    is serialised here, so checks and writes never race;
-- 2. refuse what the protocol refuses, in its order of precedence: a missing
--    or expired stream; a stale producer epoch (fencing outlives closure); a
--    closed stream (unless this is the retry of the producer request that
--    closed it); a content type other than the stream's; a producer sequence
--    gap, or a new epoch not starting at 0; a Stream-Seq not above the last;
-- 3. a duplicate producer request stores nothing and says so;
-- 4. otherwise append the events through pgbridge_append_batch (the one way
--    events enter run_events: seqs, hash chain, run row), update the
--    producer's state, the writer seq and the TTL clock, and close the stream
--    when asked: closing sets the run's status to ended with its last event as
--    the terminal position, so bridge subscribers end there too.
--
-- The outcome comes back as one row; nothing is written unless it is appended
-- (or closed, for a close-only request).
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

-- migrate:downgrade

DROP FUNCTION IF EXISTS __SCHEMA__.pgbridge_stream_append(text, text, text[], text[], boolean, text, text, bigint, bigint);

DROP INDEX __SCHEMA__.run_streams_open_updated_idx;

CREATE INDEX run_streams_open_updated_idx ON __SCHEMA__.run_streams (updated_at) WHERE terminal_seq IS NULL;

DROP TABLE __SCHEMA__.run_stream_producers;

ALTER TABLE __SCHEMA__.run_streams DROP COLUMN closed_by_seq;

ALTER TABLE __SCHEMA__.run_streams DROP COLUMN closed_by_epoch;

ALTER TABLE __SCHEMA__.run_streams DROP COLUMN closed_by_producer_id;

ALTER TABLE __SCHEMA__.run_streams DROP COLUMN stream_writer_seq;

ALTER TABLE __SCHEMA__.run_streams DROP COLUMN stream_touched_at;

ALTER TABLE __SCHEMA__.run_streams DROP COLUMN stream_expires_at;

ALTER TABLE __SCHEMA__.run_streams DROP COLUMN stream_ttl_seconds;

ALTER TABLE __SCHEMA__.run_streams DROP COLUMN content_type;

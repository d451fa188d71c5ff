-- Durable Streams (pgbridge/durable_streams/streams.py, through pgbridge/store/streams.py).
--
-- A stream is a run: every statement filters on one run_id (a fork's reads follow its chain of
-- sources, docs/scaling.md). "expired" is decided by the server's clock, like every time in
-- pgbridge: a stream past its Expires-At, or idle for longer than its TTL, is gone
-- (docs/behaviour.md §12). The head columns (run row, created_us, soft_deleted, expired) are
-- the same in stream_head, lock_stream and read_stream_page; the stream's last_seq among them is
-- read with pgbridge_run_head (revision 0012: appends leave an open stream's row alone).
--
-- A read along a fork's chain of sources (read_stream_page) has three CTEs:
-- * chain: each run of the chain gives its events in (lo, hi], lo its own fork point (0 for a
--   run that is no fork), hi the lowest fork point below it (none for the run read), so every
--   seq comes from exactly one run;
-- * oldest: the oldest offset a read may start from, the highest point up to which retention
--   deleted a run's part of the chain (0: none did; a run that forks read is never trimmed,
--   so only what went before a fork counts);
-- * stitched: the events after seq $2, at most $3, in order. Seqs are gapless from oldest_seq
--   on, so the wanted events are the seq range (after, after + limit]: bounding the scan by it
--   (not only by LIMIT) keeps the plan an index range scan of those rows whatever the
--   planner's row estimates say (with a LIMIT alone, a stale estimate of a long run's rows
--   made PostgreSQL fetch and sort all of them).


-- name: stream_head
-- Where a stream stands (HEAD, and a PUT's comparison), with whether it expired.
-- $1 run_id (text).
-- One lookup on run_streams_pkey, a backward step on run_events_pkey for the head; no lock.
SELECT {stream_head_columns}
FROM {schema}.run_streams AS r
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
WHERE r.run_id = $1;


-- name: read_stream_page
-- A catch-up read rendered by PostgreSQL, the read of every protocol GET (and of a fork's
-- creation, for its source's oldest offset and next message): one row, whatever
-- the number of messages, so no per-message work is left to Python. A JSON stream's messages
-- come as one comma-joined text (json_messages; for a run born from publish, each event's
-- envelope {"id", "event", "data"}), any other stream's as an array of their stored texts
-- (byte_messages). Seqs are gapless, so the page is the whole rest of the stream exactly when
-- page_last_seq reaches the head's last_seq; page_last_ms is the creation time of that last
-- message (the next offset names it). at_ms is that of the event at seq $2, where the chain
-- holds it (0 for $2 = 0; for a run that is no fork, the kept time of the last event retention
-- deleted when $2 is its seq; NULL when not known): a reader's offset names an event of this
-- history only if its time is this one. No row: no stream.
-- $1 run_id (text), $2 read after this seq (bigint), $3 most messages (bigint), $4 most bytes
-- of message data (bigint; the first message is always taken), $5 the JSON content type (text).
-- run_streams_pkey for each run of the chain, a range scan of run_events_pkey per run, and one
-- run_events_pkey look-up for at_ms; no lock.
WITH RECURSIVE {fork_chain},
{stitched_events},
mode AS (
    SELECT m.content_type IS NULL AS envelopes, coalesce(m.content_type, $5) = $5 AS json_mode
    FROM {schema}.run_streams AS m WHERE m.run_id = $1
),
sized AS (
    SELECT st.seq, st.created_ms, st.event, st.data::text AS data,
        sum(octet_length(st.data::text)) OVER (ORDER BY st.seq) AS bytes_through,
        row_number() OVER (ORDER BY st.seq) AS n
    FROM stitched AS st
),
page AS (
    SELECT count(*) AS taken, max(z.seq) AS page_last_seq,
        string_agg(
            CASE WHEN mode.envelopes
                THEN '{"id":"' || z.created_ms || '-' || z.seq || '","event":'
                    || to_json(z.event)::text || ',"data":' || z.data || '}'
                ELSE z.data END,
            ',' ORDER BY z.seq
        ) FILTER (WHERE mode.json_mode) AS json_messages,
        array_agg(z.data ORDER BY z.seq) FILTER (WHERE NOT mode.json_mode) AS byte_messages,
        (array_agg(z.created_ms ORDER BY z.seq DESC))[1] AS page_last_ms
    FROM sized AS z CROSS JOIN mode
    WHERE z.n = 1 OR z.bytes_through <= $4::bigint
)
SELECT {stream_head_columns},
    oldest.oldest_seq, page.taken, page.page_last_seq, page.page_last_ms, page.json_messages,
    page.byte_messages,
    CASE WHEN $2::bigint = 0 THEN 0::bigint ELSE coalesce(
        (
            SELECT ev.created_ms
            FROM chain AS owner
            JOIN {schema}.run_events AS ev ON ev.run_id = owner.run_id AND ev.seq = $2::bigint
            WHERE $2::bigint > owner.lo AND (owner.hi IS NULL OR $2::bigint <= owner.hi)
        ),
        CASE WHEN r.fork_seq IS NULL AND $2::bigint = r.first_seq - 1 THEN r.trimmed_ms END
    ) END AS at_ms
FROM {schema}.run_streams AS r
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
CROSS JOIN oldest
CROSS JOIN page
WHERE r.run_id = $1;


-- name: touch_stream
-- A read resets a sliding TTL. A stream without one is not written, and an expired stream
-- stays expired: a touch cannot revive it.
-- $1 run_id (text).
-- run_streams_pkey; the row lock of the UPDATE, for this statement only.
UPDATE {schema}.run_streams AS r SET stream_touched_at = now()
WHERE r.run_id = $1 AND r.stream_ttl_seconds IS NOT NULL
  AND NOT (
      (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
      OR (r.stream_ttl_seconds IS NOT NULL
          AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())
  );


-- name: create_stream
-- Create a stream (a run with a content type); no row when its path is taken.
-- $1 run_id (text), $2 content type (text), $3 TTL seconds (bigint or NULL),
-- $4 expires at (timestamptz or NULL).
-- run_streams_pkey (the ON CONFLICT arbiter); the new row's lock until commit.
INSERT INTO {schema}.run_streams AS r (
    run_id, status, content_type, stream_ttl_seconds, stream_expires_at, stream_touched_at)
VALUES ($1, 'active', $2, $3, $4, now())
ON CONFLICT (run_id) DO NOTHING
RETURNING r.run_id;


-- name: lock_stream
-- The stream's row, locked for a create-or-compare, a fork's source check or a delete; with
-- the same head columns as stream_head. Its last_seq is as of this statement's snapshot: when it
-- waited for an append to commit, that append's events are not in it (as if the lock had been
-- taken just before the append: a fork of the stream's tail forks there).
-- $1 run_id (text).
-- run_streams_pkey, a backward step on run_events_pkey for the head; FOR UPDATE on the run row
-- until commit.
SELECT {stream_head_columns}
FROM {schema}.run_streams AS r
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
WHERE r.run_id = $1
FOR UPDATE OF r;


-- name: delete_stream
-- Delete a stream no fork reads: revision 0009's function deletes its events (through the
-- retention trim function, so the audit chain stays right), records the deletion in
-- run_deletions, deletes its row, and releases its source, which goes too when soft-deleted
-- and this was its last fork (up the chain). One row per run row deleted.
-- $1 run_id (text; its row locked by the caller), $2 the path that deletes, for the record
-- (text: http, api, expiry).
-- run_streams_pkey, run_events_pkey, run_deletions_pkey; row locks on each run of the chain it
-- deletes or updates.
SELECT run_id, last_seq, events_deleted FROM {schema}.pgbridge_delete_stream($1, $2::text);


-- name: ensure_run
-- A run born from publish (no content type: a JSON stream of envelopes), if it is new.
-- $1 run_id (text).
-- run_streams_pkey (the ON CONFLICT arbiter); the new row's lock until commit.
INSERT INTO {schema}.run_streams (run_id, status) VALUES ($1, 'active')
ON CONFLICT (run_id) DO NOTHING;


-- name: stream_append
-- One protocol append or close: revision 0006's function checks the producer, closure,
-- content type and Stream-Seq under the run row's lock and appends through the one append
-- function; one row says what happened.
-- $1 run_id (text), $2 request content type (text; NULL: no check), $3 event names (text[]),
-- $4 data texts (text[]), $5 close (boolean), $6 Stream-Seq (text), $7 producer id (text),
-- $8 producer epoch (bigint), $9 producer seq (bigint).
-- run_streams_pkey, run_stream_producers_pkey; FOR UPDATE on the run row until commit.
SELECT outcome, last_seq, last_ms, closed, producer_epoch, producer_seq, event_seq, event_ms
FROM {schema}.pgbridge_stream_append(
    $1::text, $2::text, $3::text[], $4::text[], $5::boolean, $6::text, $7::text,
    $8::bigint, $9::bigint);


-- name: create_fork
-- Create a fork of a source stream: its own events start after fork_seq (none yet); the
-- source's events up to fork_seq are read along the chain, not copied. No row when the path
-- is taken.
-- $1 run_id (text), $2 content type (text), $3 TTL seconds (bigint or NULL), $4 expires at
-- (timestamptz or NULL), $5 source run_id (text), $6 requested offset seq (bigint), $7 sub-offset
-- (bigint), $8 fork_seq (bigint).
-- run_streams_pkey (the ON CONFLICT arbiter); the new row's lock until commit.
INSERT INTO {schema}.run_streams AS r (
    run_id, status, content_type, stream_ttl_seconds, stream_expires_at, stream_touched_at,
    fork_source_run_id, fork_offset_seq, fork_sub_offset, fork_seq, last_seq, first_seq)
VALUES ($1, 'active', $2, $3, $4, now(), $5, $6, $7, $8::bigint, $8::bigint, $8::bigint + 1)
ON CONFLICT (run_id) DO NOTHING
RETURNING r.run_id;


-- name: add_fork_ref
-- One more fork reads the source stream's events (so retention never trims it).
-- $1 source run_id (text; its row locked by the caller).
-- run_streams_pkey; the run row's lock (held already).
UPDATE {schema}.run_streams SET fork_refs = fork_refs + 1 WHERE run_id = $1;


-- name: soft_delete_stream
-- Deleted (or expired) while forks read it: its path answers 410 and its events stay for them.
-- $1 run_id (text; its row locked by the caller).
-- run_streams_pkey; the run row's lock (held already).
UPDATE {schema}.run_streams SET stream_deleted_at = now()
WHERE run_id = $1 AND stream_deleted_at IS NULL;


-- name: stream_append_many
-- Group commit of protocol appends: many requests, one statement (one transaction, one WAL
-- flush), each checked and appended by pgbridge_stream_append in array order, so every request
-- keeps its own outcome; one row per request, in order.
-- Per request, one element each: $1 run_id (text[]), $2 content type (text[]), $3 and $4 the
-- first and last index of its events in $10/$11 (int[]; empty when last < first), $5 close
-- (boolean[]), $6 Stream-Seq (text[]), $7 producer id (text[]), $8 epoch (bigint[]), $9 producer
-- seq (bigint[]); $10 every request's event names (text[]), $11 their data texts (text[]).
-- run_streams_pkey, run_stream_producers_pkey; FOR UPDATE on each run row until commit,
-- taken in the requests' order (the caller sorts them by run_id, so batches never deadlock).
SELECT b.ord, a.outcome, a.last_seq, a.last_ms, a.closed, a.producer_epoch,
    a.producer_seq, a.event_seq, a.event_ms
FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::boolean[], $6::text[],
    $7::text[], $8::bigint[], $9::bigint[])
    WITH ORDINALITY AS b(run_id, content_type, first_event, last_event, close, stream_seq,
        producer_id, epoch, producer_seq, ord)
CROSS JOIN LATERAL {schema}.pgbridge_stream_append(
    b.run_id, b.content_type, ($10::text[])[b.first_event:b.last_event],
    ($11::text[])[b.first_event:b.last_event], b.close, b.stream_seq, b.producer_id,
    b.epoch, b.producer_seq) AS a
ORDER BY b.ord;


-- name: stream_append_simple
-- stream_append_many for its commonest batches, set-based and with no PL/pgSQL: every request
-- one message, no producer, no Stream-Seq, no close, one request per stream. Calling
-- pgbridge_stream_append per request ran six statements of a function each time: ~120 us of
-- PostgreSQL time a request against ~13 for a plain INSERT of the same rows, commit included,
-- and ~32 for this statement (benchmarks/lone_statements.py --streams, docs/performance.md).
-- Here the batch's rows are locked in run_id order (deadlock-free with every other batch, which
-- locks in that order too) and each is checked as locked (its newest version); only if every
-- stream takes its message (it exists, is not deleted, expired or closed, and has the request's
-- content type) does one INSERT store the messages and one UPDATE write the rows that change,
-- by pgbridge_stream_append's rules (revision 0012): each message takes its stream's head
-- (pgbridge_run_head, in this statement's snapshot), is numbered and chained from it with one
-- created_ms for the statement (the fragment event_ms: pgbridge_event_ms written out, odd on an
-- odd timeline, even on an even one);
-- a row is written only for a stream with a TTL (every append touches it), its first retained
-- event, a status other than active, or a head 256 or more events past the row's. Otherwise it
-- writes nothing and gives no row, and the caller sends the batch through stream_append_many,
-- which answers every request (pgbridge.store.streams.StreamStore.append_many): a batch is all
-- stored, or nothing. A batch that committed while this one waited for a row lock and wrote no
-- row version is not in this statement's snapshot: the INSERT meets its seq and fails with
-- unique_violation, having written nothing, and the caller sends the batch through
-- stream_append_many too (append_runs_once in events.sql says why the heads are not read with a
-- snapshot of their own). tests/db/test_stream_append_simple.py compares the two.
-- $1 text[] run ids (distinct), $2 text[] the requests' content types (NULL: no check),
-- $3 text[] event names, $4 text[] data texts, one element per request. No row, or one per
-- request, in no order: ord (1-based), outcome 'appended', the columns of stream_append_many's.
-- Index: run_streams_pkey, run_events primary key (one backward step per stream for its head).
-- Locks: FOR UPDATE on each run row of the batch until commit, taken in run_id order.
WITH batch AS MATERIALIZED (
    SELECT b.run_id, b.content_type, b.event, b.data, b.ord::integer AS ord
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY
        AS b(run_id, content_type, event, data, ord)
),
locked AS MATERIALIZED (
    SELECT r.run_id, r.last_seq, r.last_ms, r.last_hash, r.first_seq,
        r.stream_ttl_seconds IS NOT NULL OR r.status <> 'active' OR r.awaiting_input_since IS NOT NULL
            AS must_write,
        r.stream_deleted_at IS NULL
        AND NOT coalesce(r.stream_expires_at <= now(), false)
        AND NOT coalesce(r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now(), false)
        AND r.terminal_seq IS NULL
        AND (b.content_type IS NULL OR b.content_type = coalesce(r.content_type, 'application/json'))
            AS takes
    FROM {schema}.run_streams AS r JOIN batch AS b ON b.run_id = r.run_id
    ORDER BY r.run_id
    FOR UPDATE OF r
),
verdict AS MATERIALIZED (
    SELECT count(*) = (SELECT count(*) FROM batch) AND coalesce(bool_and(takes), false) AS every_one
    FROM locked
),
clock AS MATERIALIZED (
    SELECT {event_ms} AS ms
),
heads AS MATERIALIZED (
    -- In this statement's snapshot: see the header for the batch that committed during a lock wait.
    SELECT l.run_id, h.last_seq, h.last_ms, h.last_hash
    FROM locked AS l
    CROSS JOIN LATERAL {schema}.pgbridge_run_head(l.run_id, l.last_seq, l.last_ms, l.last_hash) AS h
),
planned AS MATERIALIZED (
    SELECT b.ord, b.run_id, h.last_seq + 1 AS seq, c.ms,
        {schema}.pgbridge_link_hash(
            coalesce(h.last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea),
            b.run_id, h.last_seq + 1, c.ms, b.event, b.data) AS hash,
        b.event, b.data,
        l.first_seq > h.last_seq AS first,
        l.must_write OR l.first_seq > h.last_seq OR h.last_seq + 1 - l.last_seq >= 256 AS writes_row
    FROM verdict AS v
    JOIN batch AS b ON v.every_one
    JOIN locked AS l ON l.run_id = b.run_id
    JOIN heads AS h ON h.run_id = b.run_id
    CROSS JOIN clock AS c
),
stored AS MATERIALIZED (
    INSERT INTO {schema}.run_events (run_id, seq, created_ms, event, data, terminal, hash)
    SELECT p.run_id, p.seq, p.ms, p.event, p.data::json, false, p.hash FROM planned AS p
    RETURNING run_id
),
moved AS MATERIALIZED (
    UPDATE {schema}.run_streams AS r SET
        last_seq = p.seq,
        last_ms = p.ms,
        last_hash = p.hash,
        first_ms = CASE WHEN p.first THEN p.ms ELSE r.first_ms END,
        updated_at = now(),
        stream_touched_at = now(),
        status = 'active',
        awaiting_input_since = NULL,
        closed_by_producer_id = NULL,
        closed_by_epoch = NULL,
        closed_by_seq = NULL
    FROM planned AS p
    WHERE r.run_id = p.run_id AND p.writes_row
    RETURNING r.run_id
)
SELECT p.ord, 'appended'::text AS outcome, p.seq AS last_seq, p.ms AS last_ms, false AS closed,
    NULL::bigint AS producer_epoch, NULL::bigint AS producer_seq, p.seq AS event_seq, p.ms AS event_ms
FROM planned AS p
WHERE (SELECT count(*) FROM stored) >= 0 AND (SELECT count(*) FROM moved) >= 0;  -- both have run

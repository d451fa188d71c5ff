-- Durable Streams (pgbridge/durable_streams/streams.py, through pgbridge/store/streams.py).
--
-- A stream is a run: every statement filters on one run_id (a fork's reads follow its chain of
-- sources, docs/scaling.md). "expired" is decided by the server's clock, like every time in
-- pgbridge: a stream past its Expires-At, or idle for longer than its TTL, is gone
-- (docs/behaviour.md §12). The head columns (run row, created_us, soft_deleted, expired) are
-- the same in stream_head, lock_stream and read_stream_page; the stream's last_seq among them is
-- read with pgbridge_run_head (revision 0011: appends leave an open stream's row alone).
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
-- page_last_seq reaches the head's last_seq. No row: no stream.
-- $1 run_id (text), $2 read after this seq (bigint), $3 most messages (bigint), $4 most bytes
-- of message data (bigint; the first message is always taken), $5 the JSON content type (text).
-- run_streams_pkey for each run of the chain, a range scan of run_events_pkey per run; no lock.
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
        array_agg(z.data ORDER BY z.seq) FILTER (WHERE NOT mode.json_mode) AS byte_messages
    FROM sized AS z CROSS JOIN mode
    WHERE z.n = 1 OR z.bytes_through <= $4::bigint
)
SELECT {stream_head_columns},
    oldest.oldest_seq, page.taken, page.page_last_seq, page.json_messages, page.byte_messages
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

-- The core statements of a bridge (pgbridge.sql.queries.Queries), in the order of an event's life:
--   publish  append_events, append_events_lock_bounded, append_events_notifying, append_runs_once,
--            append_one_event,
--            terminal_event_of_run, mark_awaiting_input, begin_caller_transaction;
--   read     resolve_cursor, read_events_after, read_runs_events_after, resolve_fork_cursor,
--            read_inherited_events_after, run_summary, run_heads, recent_open_runs, recent_ended_runs;
--   wake-ups notify_runs (it writes the wake payload: pgbridge.engine.listen.decode_wake reads it),
--            notify_listener_check, listener_ping;
--   server   schema_revision, replica_replay_position, server_in_recovery, server_system_identifier;
--   audit    chain_head, chain_rows, run_ids, last_deletion.
-- Run through pgbridge.store (events.py, wakeups.py, server.py, audit.py), the connector
-- (schema_revision) and the LISTEN connection (listener_ping).
--
-- Every statement on the publish, subscribe and replay paths filters on a single run_id, so each
-- would route to one shard if the tables were distributed by run_id; the exceptions are named in
-- docs/scaling.md (among them the reads along a Durable Streams fork's chain of sources,
-- resolve_fork_cursor and read_inherited_events_after, run only for a fork).
--
-- A run's head (its newest seq, that event's creation time and hash) is read with
-- pgbridge_run_head (revision 0012): appends leave the run row alone, so an open run's newest event
-- is its highest seq in run_events when that is past the row's last_seq (one backward step on the
-- run_events primary key). An ended run's row is exact. A run's last activity is the later of its
-- row's last write (updated_at) and its newest event's time.
--
-- The fork reads share one shape, written out in each: the CTE "chain" walks run $1's chain of
-- fork sources. Each run of the chain gives its events in (lo, hi], lo its own fork point (0 for a
-- run that is no fork), hi the lowest fork point below it (none for the run read), so every seq
-- comes from exactly one run. "oldest" is the oldest offset a read may start from: the highest
-- point up to which retention deleted a run's part of the chain (0: none did); a run that forks
-- read is never trimmed, so only what went before a fork counts. The creation time of one seq of
-- the view is a scalar subquery over "chain": one primary-key lookup in the run that holds it.

-- name: append_events
-- The append of every publish (one event, or a group-commit batch): pgbridge_append_batch
-- (revisions 0010, 0011 and 0012, set-based) locks or creates every run row of the batch in one
-- statement, reads each run's head (pgbridge_run_head), assigns seqs, chains the hashes, then
-- inserts the events in one statement and writes the run rows that change (a run's first event,
-- a status change, a terminal event, every 256th event) in one more; with publish => true it also
-- refuses a non-JSON stream's run and recreates an expired stream's, on the row it locks anyway.
-- Every event of one call has the same created_ms (odd on an odd timeline, even on an even one).
-- The group commit runs it as append_events_lock_bounded (several batches in flight) or
-- append_events_notifying (a lone batch); publish_in, inside the caller's transaction, runs
-- append_events_notifying with no lock bound (docs/transactions.md).
-- $1 text[] run ids, $2 text[] event names, $3 text[] data (JSON texts), $4 boolean[] terminal
-- flags, $5 text[] statuses, one element per event. One row per event: ord (1-based), seq,
-- created_ms and prev_ms (the creation time of the run's event before it: what the publishing
-- process checks before handing the event to its own readers); seq is NULL where the run refused
-- the event, refused says why ('terminal', 'content_type' or 'gone').
-- Index: run_streams and run_events primary keys. Locks: each run's row (FOR UPDATE, or the
-- row lock of INSERT ... ON CONFLICT DO UPDATE), runs in run_id order (two batches never
-- deadlock on each other).
SELECT ord, seq, created_ms, refused, prev_ms
FROM {schema}.pgbridge_append_batch(
    $1::text[], $2::text[], $3::text[], $4::boolean[], $5::text[], publish => true);

-- name: append_events_lock_bounded
-- append_events for the group commit's batches sent while others are in flight
-- (pgbridge.engine.publish): the same call, whose
-- waits for a row lock give up after $6 (a lock_timeout text such as '100ms'; '0': no bound).
-- A run row another transaction holds (a caller's transaction that published with publish_in
-- and has not ended, docs/transactions.md) then fails the statement with SQLSTATE 55P03, having
-- written nothing, instead of holding up every other run of the batch until that transaction
-- ends. The setting is made by the argument (evaluated before the function runs) with
-- set_config(..., true): it lasts for this statement's own transaction only, so no session
-- state is left on the pooled connection.
-- $1 text[] run ids, $2 text[] event names, $3 text[] data (JSON texts), $4 boolean[] terminal
-- flags, $5 text[] statuses, $6 text the lock wait bound. Rows as append_events.
-- Index: run_streams and run_events primary keys. Locks: as append_events, each wait bounded by $6.
SELECT ord, seq, created_ms, refused, prev_ms
FROM {schema}.pgbridge_append_batch(
    $1::text[], $2::text[], $3::text[], $4::boolean[], $5::text[],
    publish => set_config('lock_timeout', $6::text, true) IS NOT NULL);

-- name: append_events_notifying
-- append_events for a batch that wakes other processes itself (every batch of the group commit
-- that append_runs_once does not take, and publish_in's): the same append, plus one NOTIFY per
-- run that took events, carrying them
-- ("+<seq>@<lsn> <characters in run_id> <run_id><events>", pgbridge.engine.listen.decode_wake),
-- sent inside the append's transaction, so other processes are woken by its commit with no
-- statement after it. <lsn> is the WAL insert position once the events are written, before the
-- commit record: a standby replayed that far may still lack the commit, so a reader with a
-- standby checks what the standby holds before trusting it (pgbridge.engine.replica), as always. A
-- run whose events would not fit in a payload (8,000 bytes) gets no NOTIFY here (notified false):
-- the notifier wakes its readers after the commit. PostgreSQL serialises the commits of notifying
-- transactions; overlapping batches still notify inside, as a statement after each costs more
-- (docs/performance.md).
-- $1 text[] run ids, $2 text[] event names, $3 text[] data (JSON texts), $4 boolean[] terminal
-- flags, $5 text[] statuses, one element per event (as append_events); $6 text the channel.
-- One row per event: ord, seq, created_ms, refused, prev_ms as append_events, and notified (its
-- run's NOTIFY was sent in this transaction). Each carried event says when the event before it
-- was created (prev_ms), so a reader takes it only if it follows what the reader holds.
-- $7 text a lock wait bound as append_events_lock_bounded's $6, or NULL: none set, the session's
-- lock_timeout applies (publish_in, in the caller's transaction, whose settings are its own).
-- Index and locks: those of append_events (each wait bounded by $7 when given); NOTIFY takes
-- PostgreSQL's notification lock at commit.
WITH appended AS MATERIALIZED (
    SELECT a.ord, a.seq, a.created_ms, a.refused, a.prev_ms
    FROM {schema}.pgbridge_append_batch(
        $1::text[], $2::text[], $3::text[], $4::boolean[], $5::text[],
        publish => CASE WHEN $7::text IS NULL THEN true
                        ELSE set_config('lock_timeout', $7::text, true) IS NOT NULL END) AS a
),
given AS MATERIALIZED (
    SELECT u.i::integer AS ord, u.run_id, u.event, u.data, u.terminal
    FROM unnest($1::text[], $2::text[], $3::text[], $4::boolean[]) WITH ORDINALITY
        AS u(run_id, event, data, terminal, i)
),
carried AS MATERIALIZED (
    SELECT g.run_id, max(a.seq) AS seq,
        json_agg(json_build_array(a.seq, a.created_ms, g.event, g.data, g.terminal, a.prev_ms)
                 ORDER BY a.seq)::text
            AS events
    FROM appended AS a JOIN given AS g ON g.ord = a.ord
    WHERE a.seq IS NOT NULL
    GROUP BY g.run_id
),
sent AS MATERIALIZED (
    SELECT c.run_id, n.done
    FROM carried AS c
    CROSS JOIN LATERAL (
        SELECT pg_notify($6::text, '+' || c.seq || '@' || pg_current_wal_insert_lsn()::text || ' '
            || char_length(c.run_id) || ' ' || c.run_id || c.events) IS NULL AS done
    ) AS n
    WHERE octet_length(c.run_id) + octet_length(c.events) < 7900
)
SELECT a.ord, a.seq, a.created_ms, a.refused, a.prev_ms, g.run_id IN (SELECT run_id FROM sent) AS notified
FROM appended AS a JOIN given AS g ON g.ord = a.ord
ORDER BY a.ord;

-- name: append_runs_once
-- append_events_lock_bounded for the batches of a busy moment in their common shape, set-based
-- and with no PL/pgSQL: several runs that exist, one event each. pgbridge_append_batch numbers,
-- checks and chains event by event in PL/pgSQL (~20 us of PostgreSQL time an event for 100 runs
-- x 1 event on the development machine, against ~5 for a plain INSERT of the same rows;
-- docs/performance.md). Here the batch's run rows are locked in run_id order (as the function
-- locks them: batches never deadlock on each other) and each is checked as locked; only if
-- every run takes its event (it exists, has no terminal event, and is no Durable Stream with a
-- content type, a deletion or an expiry to check: the function's short way's rule, revision
-- 0011) does one INSERT store the events and one UPDATE write the run rows that change, by the
-- function's rules (revision 0012): each event takes its run's head (pgbridge_run_head: the
-- locked row's, or its newest event past it), is numbered and chained from it, with one
-- created_ms for the statement (the fragment event_ms: pgbridge_event_ms written out, odd on an
-- odd timeline, even on an even one);
-- a row is written only for a run's first retained event, a status change, a terminal event
-- (which ends the run) or a head 256 or more events past the row's (the CTEs stored and
-- moved). Otherwise it writes nothing
-- and gives no row, and the caller sends the batch through append_events_lock_bounded
-- (pgbridge.store.events.EventStore.append_batch): all or nothing.
-- The heads are read in this statement's snapshot, taken before its row locks. A batch that
-- committed while this one waited for a lock, and wrote no row version (the locked row would
-- show it), stored events this snapshot does not see: the INSERT then meets the seq it took and
-- fails with unique_violation (23505), having written nothing, and the caller sends the batch
-- the function's way, whose separate statements read after the locks. That costs the rare batch
-- that waited one more statement; reading every batch's heads with a snapshot of their own
-- (revision 0012's pgbridge_run_heads_fresh, a PL/pgSQL call) cost 0.4 ms a statement, 11 % of
-- a paced lone publish and ~2 us an event of a 100-run batch (docs/performance.md). So this
-- statement runs only outside a caller's transaction, which a failure would abort.
-- tests/db/test_append_runs_once.py compares the two.
-- $1 text[] run ids (distinct), $2 text[] event names, $3 text[] data (JSON texts), $4 boolean[]
-- terminal flags, $5 text[] statuses, one element per event; $6 text a lock wait bound as
-- append_events_lock_bounded's, or NULL: none set; $7 text the channel, or NULL: no wake-ups.
-- With a channel, each run's wake-up carrying its event is sent inside this transaction, several
-- runs to a NOTIFY payload (append_events_notifying sends one per run): its commit wakes other
-- processes. The CTEs carried and sent build the batched form of
-- pgbridge.engine.listen.decode_wakes: '=<lsn> ' and a JSON array of [run_id, seq, created_ms,
-- event, data, terminal, prev_ms] items in the batch's order, cut into payloads of as many
-- consecutive items as the batch's largest fits 7,800 bytes times, so none reaches PostgreSQL's
-- 8,000 (the NOTIFY comes after the INSERT: the final SELECT's WHERE runs stored first). An event
-- whose item alone is 7,800 bytes or more is not sent (sent lists the run ids it woke) and is left
-- to the notifier, notified false. One NOTIFY per payload, not per run: a subscribing process
-- spent ~10 us an event less (docs/performance.md, session 11); payloads cut by ord, with no sort
-- by run id and no window functions: PostgreSQL's CPU for the wake-ups of a 50-run batch ~3.3 ->
-- ~2 us an event (session 13).
-- No row, or one per event, in no order: ord, seq, created_ms, refused (always NULL), prev_ms as
-- append_events, and notified (the run's NOTIFY was sent in this transaction).
-- Index: run_streams and run_events primary keys (one backward step on the latter per run for
-- its head; its uniqueness catches a head read too early). Locks: FOR UPDATE on each run row of
-- the batch until commit, taken in run_id order, each wait bounded by $6; with a channel,
-- PostgreSQL's notification lock at commit.
WITH batch AS MATERIALIZED (
    SELECT u.run_id, u.event, u.data, u.terminal, u.status, u.ord::integer AS ord
    FROM unnest($1::text[], $2::text[], $3::text[], $4::boolean[], $5::text[]) WITH ORDINALITY
        AS u(run_id, event, data, terminal, status, ord)
),
locked AS MATERIALIZED (
    SELECT r.run_id, r.last_seq, r.last_ms, r.last_hash, r.first_seq, r.status,
        r.awaiting_input_since IS NOT NULL AS awaiting,
        r.terminal_seq IS NULL
        AND coalesce(r.content_type, 'application/json') = 'application/json'
        AND r.stream_deleted_at IS NULL
        AND r.stream_expires_at IS NULL AND r.stream_ttl_seconds IS NULL AS takes
    FROM {schema}.run_streams AS r JOIN batch AS b ON b.run_id = r.run_id
    WHERE CASE WHEN $6::text IS NULL THEN true
               ELSE set_config('lock_timeout', $6::text, true) IS NOT NULL END
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
    SELECT b.ord, b.run_id, h.last_seq + 1 AS seq, c.ms AS created_ms, h.last_ms AS prev_ms,
        {schema}.pgbridge_link_hash(
            coalesce(h.last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea),
            b.run_id, h.last_seq + 1, c.ms, b.event, b.data) AS hash,
        b.event, b.data, b.terminal, b.status,
        l.first_seq > h.last_seq AS first,
        l.first_seq > h.last_seq OR b.terminal OR l.status <> b.status OR l.awaiting
            OR h.last_seq + 1 - l.last_seq >= 256 AS writes_row
    FROM verdict AS v
    JOIN batch AS b ON v.every_one
    JOIN locked AS l ON l.run_id = b.run_id
    JOIN heads AS h ON h.run_id = b.run_id
    CROSS JOIN clock AS c
),
stored AS MATERIALIZED (
    INSERT INTO {schema}.run_events (run_id, seq, created_ms, event, data, terminal, hash)
    SELECT p.run_id, p.seq, p.created_ms, p.event, p.data::json, p.terminal, p.hash FROM planned AS p
    RETURNING seq
),
moved AS MATERIALIZED (
    UPDATE {schema}.run_streams AS r SET
        last_seq = p.seq, last_ms = p.created_ms, last_hash = p.hash, status = p.status,
        first_ms = CASE WHEN p.first THEN p.created_ms ELSE r.first_ms END,
        terminal_seq = CASE WHEN p.terminal THEN p.seq END,
        ended_at = CASE WHEN p.terminal THEN now() END,
        awaiting_input_since = NULL, updated_at = now()
    FROM planned AS p
    WHERE r.run_id = p.run_id AND p.writes_row
    RETURNING r.run_id
),
carried AS MATERIALIZED (
    SELECT p.run_id, p.ord,
        json_build_array(p.run_id, p.seq, p.created_ms, p.event, p.data, p.terminal, p.prev_ms)::text
            AS item
    FROM planned AS p
    WHERE $7::text IS NOT NULL
),
sent AS MATERIALIZED (
    SELECT array_agg(f.run_id) AS run_ids,
        pg_notify($7::text, '=' || pg_current_wal_insert_lsn()::text || ' ['
            || string_agg(f.item, ',' ORDER BY f.ord) || ']') IS NULL AS done
    FROM (
        SELECT c.run_id, c.ord, c.item,
            (c.ord - 1) / greatest(1, 7800 / (SELECT max(octet_length(m.item) + 1) FROM carried AS m))
                AS payload
        FROM carried AS c
        WHERE octet_length(c.item) < 7800
    ) AS f
    GROUP BY f.payload
)
SELECT p.ord, p.seq, p.created_ms, NULL::text AS refused, p.prev_ms,
    p.run_id IN (SELECT unnest(s.run_ids) FROM sent AS s) AS notified
FROM planned AS p
WHERE (SELECT count(*) FROM stored) >= 0 AND (SELECT count(*) FROM moved) >= 0;  -- both have run

-- name: append_one_event
-- append_runs_once for a batch of one event (a lone publish: one event of a run that exists), in
-- a plan with no arrays to unnest, no batch to sort and no verdict to count, and only for an
-- event that leaves its run's row alone: paced, one event every 5 ms, on PostgreSQL 15, a plan
-- with the run-row UPDATE took 0.06-0.08 ms more even when it wrote nothing (the UPDATE's
-- start-up), for a row written once in 256 events (docs/performance.md, session 13). The same
-- rules as append_runs_once: the run row locked and checked as locked (no terminal event, JSON,
-- no deletion or expiry to check), the head read in this statement's snapshot (a stale one,
-- after a lock wait behind an append that wrote no row, fails the INSERT with unique_violation
-- having written nothing: append_runs_once says why), the event numbered, chained and timed (the
-- fragment event_ms). Where the function would write the run's row (the run's first retained
-- event, a status change, a terminal event, a head 256 or more past the row's: revision 0012's
-- rules), and where the run refuses, it stores nothing and gives no row, and the caller sends
-- the event the function's way (pgbridge.store.events.EventStore.append_batch; a terminal event
-- goes there at once). With a channel the run's wake-up carrying the event is sent inside this
-- transaction (the batched payload of append_runs_once, with one item; an event too big for a
-- payload is left to the notifier, notified false), from the final SELECT, after the INSERT (its
-- WHERE runs stored first), not through append_runs_once's payload CTEs: paced, 0.72-0.74 ms p50
-- against 0.81-0.86 through them (session 13).
-- $1 text run id, $2 text event name, $3 text data (JSON text), $4 boolean terminal, $5 text
-- the run's status after it; $6 text a lock wait bound as append_events_lock_bounded's, or NULL:
-- none set; $7 text the channel, or NULL: no wake-up.
-- No row, or one: ord (1), seq, created_ms, refused (NULL), prev_ms, notified.
-- Index: run_streams primary key, run_events primary key (one backward step for the head; its
-- uniqueness catches a head read too early). Locks: FOR UPDATE on the run row until commit, the
-- wait bounded by $6; with a channel, PostgreSQL's notification lock at commit.
WITH locked AS MATERIALIZED (
    SELECT r.run_id, r.last_seq, r.last_ms, r.last_hash, r.first_seq, r.status,
        r.awaiting_input_since IS NOT NULL AS awaiting
    FROM {schema}.run_streams AS r
    WHERE r.run_id = $1::text
      AND r.terminal_seq IS NULL
      AND coalesce(r.content_type, 'application/json') = 'application/json'
      AND r.stream_deleted_at IS NULL
      AND r.stream_expires_at IS NULL AND r.stream_ttl_seconds IS NULL
      AND CASE WHEN $6::text IS NULL THEN true
               ELSE set_config('lock_timeout', $6::text, true) IS NOT NULL END
    FOR UPDATE OF r
),
planned AS MATERIALIZED (
    SELECT l.run_id, h.last_seq + 1 AS seq, c.ms AS created_ms, h.last_ms AS prev_ms,
        {schema}.pgbridge_link_hash(
            coalesce(h.last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea),
            l.run_id, h.last_seq + 1, c.ms, $2::text, $3::text) AS hash,
        $2::text AS event, $3::text AS data, $4::boolean AS terminal,
        l.first_seq > h.last_seq OR $4::boolean OR l.status <> $5::text OR l.awaiting
            OR h.last_seq + 1 - l.last_seq >= 256 AS writes_row
    FROM locked AS l
    CROSS JOIN LATERAL {schema}.pgbridge_run_head(l.run_id, l.last_seq, l.last_ms, l.last_hash) AS h
    CROSS JOIN (SELECT {event_ms} AS ms) AS c
),
stored AS MATERIALIZED (
    INSERT INTO {schema}.run_events (run_id, seq, created_ms, event, data, terminal, hash)
    SELECT p.run_id, p.seq, p.created_ms, p.event, p.data::json, p.terminal, p.hash
    FROM planned AS p
    WHERE NOT p.writes_row
    RETURNING seq
)
SELECT 1 AS ord, p.seq, p.created_ms, NULL::text AS refused, p.prev_ms,
    CASE WHEN $7::text IS NOT NULL AND octet_length(w.item) < 7800
         THEN pg_notify($7::text, '=' || pg_current_wal_insert_lsn()::text || ' [' || w.item || ']') IS NOT NULL
         ELSE false END AS notified
FROM planned AS p
CROSS JOIN LATERAL (
    SELECT json_build_array(p.run_id, p.seq, p.created_ms, p.event, p.data, p.terminal, p.prev_ms)::text AS item
) AS w
WHERE NOT p.writes_row AND (SELECT count(*) FROM stored) >= 0;  -- stored has run first

-- name: terminal_event_of_run
-- The committed terminal event of a run: always its last, so its ID is last_ms-last_seq (a Durable
-- Stream closed before any event has terminal_seq 0 and no ms: last_ms 0).
-- $1 text run id. No row: no such run, or not terminal.
-- Index: run_streams primary key. No locks.
SELECT terminal_seq, coalesce(last_ms, 0) AS last_ms
FROM {schema}.run_streams
WHERE run_id = $1 AND terminal_seq IS NOT NULL;

-- name: begin_caller_transaction
-- publish_in given a SQLAlchemy AsyncConnection or AsyncSession (pgbridge.store.caller): SQLAlchemy
-- begins its transaction on the driver connection only at the first statement it runs, so this
-- no-op runs through SQLAlchemy first when the driver connection is not yet in a transaction;
-- pgbridge's statements then run on that driver connection, inside the transaction SQLAlchemy
-- commits or rolls back.
-- No parameters, no table, no locks.
SELECT 1;

-- name: mark_awaiting_input
-- An open run becomes awaiting_input until its next publish or terminal event (a terminal run is
-- left as it is).
-- $1 text run id.
-- Index: run_streams primary key. Locks: the run's row (an UPDATE), for the statement's length.
UPDATE {schema}.run_streams
SET status = 'awaiting_input', awaiting_input_since = now(), updated_at = now()
WHERE run_id = $1 AND status IN ('active', 'awaiting_input');

-- name: resolve_cursor
-- Where a cursor stands: the run's retained range, the creation time of the event the cursor
-- names, and that of the last event retention deleted (trimmed_ms, NULL if none was or before
-- revision 0012: a cursor at first_seq - 1 is checked against it). fork_seq (NULL but for a
-- Durable Streams fork) comes with the row read anyway: a fork's cursor resolves against its
-- stitched view instead (resolve_fork_cursor), with no extra statement for other runs.
-- $1 text run id, $2 bigint the cursor's seq. No row: no such run.
-- Index: run_streams and run_events primary keys (and one backward step on the latter for the
-- head). No locks.
SELECT r.first_seq, h.last_seq, r.fork_seq, e.created_ms AS stored_ms, r.trimmed_ms
FROM {schema}.run_streams AS r
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
LEFT JOIN {schema}.run_events AS e ON e.run_id = r.run_id AND e.seq = $2
WHERE r.run_id = $1;

-- name: read_events_after
-- The next page of a run's own events after a cursor, with the run's state, in one snapshot, so a
-- reader sees the retained range and the rows consistently. Rows in seq order; a run with no event
-- after the cursor gives one row whose event columns are NULL. after_ms is the creation time of the
-- event at the cursor's seq (NULL when none is stored there): a reader compares it with the event
-- it last yielded, so a run whose history changed under it (an asynchronous failover, a run deleted
-- and published again) is noticed, not continued (pgbridge.engine.subscribe).
-- A run's own rows are gapless from greatest(first_seq, fork_seq + 1) to last_seq, so the page is
-- the seq range (after, after + $3] from where they start: bounding the scan by it (not only by
-- LIMIT) keeps the plan a range scan of those rows whatever the planner's row estimates say. With
-- a LIMIT alone, a long run in a table never analyzed (autovacuum off, or not yet run after a
-- bulk load) was estimated at a few hundred rows: PostgreSQL bitmap-scanned and sorted all of the
-- run's rows for every page (49 ms a page of 1,000 in a 100,000-event run, instead of 2.6 ms).
-- least() keeps the bound from overflowing for a cursor near the largest bigint.
-- The run's state comes in the first row only (NULL in the others): the driver then decodes six
-- columns fewer per event of a replay, which is bound by this process's CPU (docs/performance.md).
-- $1 text run id, $2 bigint cursor seq, $3 bigint page size. No row: no such run.
-- Index: run_streams primary key, then run_events primary key: the event at the cursor, a range
-- scan after it, a backward step for the head. No locks.
SELECT CASE WHEN e.head IS NOT FALSE THEN r.first_seq END AS first_seq,
       CASE WHEN e.head IS NOT FALSE THEN r.first_ms END AS first_ms,
       CASE WHEN e.head IS NOT FALSE THEN h.last_seq END AS last_seq,
       CASE WHEN e.head IS NOT FALSE THEN h.last_ms END AS last_ms,
       CASE WHEN e.head IS NOT FALSE THEN r.terminal_seq END AS terminal_seq,
       CASE WHEN e.head IS NOT FALSE THEN c.created_ms END AS after_ms,
       e.seq, e.created_ms, e.event, e.data::text AS data, e.terminal
FROM {schema}.run_streams AS r
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
LEFT JOIN {schema}.run_events AS c ON c.run_id = r.run_id AND c.seq = $2
LEFT JOIN LATERAL (
    SELECT seq, created_ms, event, data, terminal, row_number() OVER (ORDER BY seq) = 1 AS head
    FROM {schema}.run_events
    WHERE run_id = $1 AND seq > $2
      AND seq <= least(greatest($2, r.first_seq - 1, r.fork_seq), 9223372036854775807 - $3) + $3
    ORDER BY seq
    LIMIT $3
) AS e ON true
WHERE r.run_id = $1
ORDER BY e.seq;

-- name: read_runs_events_after
-- The live tails of every run that woke at once (the feeds of one process, pgbridge.engine.feed):
-- for each run, its next page after its cursor with its state, as read_events_after gives it for
-- one run, all in one statement and one snapshot, so a wake-up costs one statement whatever the
-- number of runs that woke. Rows grouped by ord (the run's 1-based position in $1), in seq order
-- within a run; a run with nothing after its cursor gives one row whose event columns are NULL.
-- Each run's scan starts at its cursor's own event (when stored: its row comes first, with its
-- creation time and no data, and says what read_events_after's after_ms says) and is bounded by
-- its seq range as in read_events_after (the plan stays a range scan whatever the row
-- estimates): one range scan per run, where a separate look-up of the cursor's event cost a
-- quarter of a run's read.
-- No head look-up (pgbridge_run_head, a backward step that cost as much as the rest of a run's
-- read): the row's last_seq and last_ms come as they are (row_last_seq, row_last_ms), and the
-- run's head is what the page shows (pgbridge.store.events: its last event when the page is not
-- full, the cursor's event when it is empty, a lower bound when it is full, and then the feed
-- reads again at once).
-- Cross-run (docs/scaling.md).
-- $1 text[] run ids (distinct), $2 bigint[] their cursor seqs, $3 bigint page size per run. A run
-- that does not exist gives no row.
-- Index: run_streams primary key per run, then a range scan of the run_events primary key per run
-- (from the cursor's seq, bounded by $3). No locks.
SELECT w.ord, w.after_seq, r.first_seq, r.first_ms, r.last_seq AS row_last_seq,
       r.last_ms AS row_last_ms, r.terminal_seq,
       e.seq, e.created_ms, e.event, CASE WHEN e.seq > w.after_seq THEN e.data::text END AS data, e.terminal
FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS w(run_id, after_seq, ord)
JOIN {schema}.run_streams AS r ON r.run_id = w.run_id
LEFT JOIN LATERAL (
    SELECT seq, created_ms, event, data, terminal
    FROM {schema}.run_events
    WHERE run_id = w.run_id AND seq >= w.after_seq
      AND seq <= least(greatest(w.after_seq, r.first_seq - 1, r.fork_seq), 9223372036854775807 - $3) + $3
    ORDER BY seq
    LIMIT $3 + 1
) AS e ON true
ORDER BY w.ord, e.seq;

-- name: resolve_fork_cursor
-- A fork's cursor, resolved against its view along its chain of sources (what a stream read gives):
-- the retained range from oldest_seq + 1 to the fork's last_seq, and the creation time of event $2
-- in whichever run of the chain holds it (stored_ms, NULL when not retained).
-- $1 text the fork's run id, $2 bigint the cursor's seq. No row: no such run.
-- Index: run_streams primary key (one lookup per run of the chain), run_events primary key.
-- No locks.
WITH RECURSIVE {fork_chain}
SELECT oldest.oldest_seq, h.last_seq, r.fork_seq,
       (
           SELECT ev.created_ms
           FROM chain AS owner
           JOIN {schema}.run_events AS ev ON ev.run_id = owner.run_id AND ev.seq = $2::bigint
           WHERE $2::bigint > owner.lo AND (owner.hi IS NULL OR $2::bigint <= owner.hi)
       ) AS stored_ms
FROM {schema}.run_streams AS r CROSS JOIN oldest
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
WHERE r.run_id = $1;

-- name: read_inherited_events_after
-- The events a fork inherits (seq <= fork_seq, stored in its chain of sources) after a cursor,
-- with the stitched view's state in one snapshot: its retained range starts after oldest_seq, and
-- first_ms / last_ms are the creation times of its first and last events, wherever they are
-- stored. The fork's own events come from read_events_after. Seqs are gapless from oldest_seq on,
-- so the wanted events are the seq range (after, after + $3]: bounding each run's scan by it (not
-- only by LIMIT) keeps the plan an index range scan of those rows whatever the planner's row
-- estimates say (with a LIMIT alone, a stale estimate of a long run's rows made PostgreSQL fetch
-- and sort all of them).
-- $1 text the fork's run id, $2 bigint cursor seq, $3 bigint page size. No row: no such run.
-- Index: run_streams primary key (one lookup per run of the chain), range scans of the run_events
-- primary key. No locks.
WITH RECURSIVE {fork_chain},
{stitched_events}
SELECT r.fork_seq, oldest.oldest_seq, h.last_seq, r.terminal_seq,
       (
           SELECT ev.created_ms
           FROM chain AS owner
           JOIN {schema}.run_events AS ev ON ev.run_id = owner.run_id AND ev.seq = oldest.oldest_seq + 1
           WHERE oldest.oldest_seq + 1 > owner.lo AND (owner.hi IS NULL OR oldest.oldest_seq + 1 <= owner.hi)
       ) AS first_ms,
       (
           SELECT ev.created_ms
           FROM chain AS owner
           JOIN {schema}.run_events AS ev ON ev.run_id = owner.run_id AND ev.seq = h.last_seq
           WHERE h.last_seq > owner.lo AND (owner.hi IS NULL OR h.last_seq <= owner.hi)
       ) AS last_ms,
       e.seq, e.created_ms, e.event, e.data::text AS data
FROM {schema}.run_streams AS r
CROSS JOIN oldest
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
LEFT JOIN stitched AS e ON e.seq <= r.fork_seq
WHERE r.run_id = $1
ORDER BY e.seq;

-- name: run_summary
-- What dashboards and health checks show of a run: its row alone (counts and IDs derive from the
-- seqs and their times: pgbridge.store.events.RunInfo). A Durable Streams fork (fork_seq set) is
-- read again with fork_run_summary, whose counts are those of its stitched view.
-- $1 text run id. No row: no such run.
-- Index: run_streams primary key, a backward step on run_events' for the head. No locks.
SELECT r.run_id, r.status, r.first_seq, r.first_ms, h.last_seq, h.last_ms, r.terminal_seq,
       h.last_ms AS terminal_ms, r.created_at,
       greatest(r.updated_at, to_timestamp(h.last_ms / 1000.0)) AS updated_at,
       r.ended_at, r.awaiting_input_since,
       r.fork_seq, r.fork_source_run_id, r.stream_deleted_at IS NOT NULL AS deleted
FROM {schema}.run_streams AS r
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
WHERE r.run_id = $1;

-- name: run_heads
-- The poll (the safety net for lost wake-ups): where many followed runs stand, in one statement; a
-- feed is re-read only if its run moved. Cross-run (docs/scaling.md).
-- $1 text[] run ids. Runs that do not exist give no row.
-- Index: run_streams primary key, a backward step on run_events' per run for the head. No locks.
SELECT r.run_id, r.first_seq, h.last_seq, r.terminal_seq
FROM {schema}.run_streams AS r
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
WHERE r.run_id = ANY($1::text[]);

-- name: fork_run_summary
-- A Durable Streams fork as dashboards see it: run_summary's columns, but first_seq, first_ms and
-- last_ms are those of its stitched view (what a stream read of it gives: its inherited events
-- count as its own, wherever they are stored), so every surface shows the same events. Its
-- terminal ID keeps the fork's own last_ms (terminal_ms): a fork closed before any event of its
-- own ends on an inherited event, and makes up no terminal event ID.
-- $1 text the fork's run id. No row: no such run.
-- Index: run_streams primary key (one lookup per run of the chain), run_events primary key.
-- No locks.
WITH RECURSIVE {fork_chain}
SELECT r.run_id, r.status, oldest.oldest_seq + 1 AS first_seq,
       (
           SELECT ev.created_ms
           FROM chain AS owner
           JOIN {schema}.run_events AS ev ON ev.run_id = owner.run_id AND ev.seq = oldest.oldest_seq + 1
           WHERE oldest.oldest_seq + 1 > owner.lo AND (owner.hi IS NULL OR oldest.oldest_seq + 1 <= owner.hi)
       ) AS first_ms,
       h.last_seq,
       (
           SELECT ev.created_ms
           FROM chain AS owner
           JOIN {schema}.run_events AS ev ON ev.run_id = owner.run_id AND ev.seq = h.last_seq
           WHERE h.last_seq > owner.lo AND (owner.hi IS NULL OR h.last_seq <= owner.hi)
       ) AS last_ms,
       r.terminal_seq, h.last_ms AS terminal_ms,
       r.created_at, greatest(r.updated_at, to_timestamp(h.last_ms / 1000.0)) AS updated_at,
       r.ended_at, r.awaiting_input_since,
       r.fork_seq, r.fork_source_run_id, r.stream_deleted_at IS NOT NULL AS deleted
FROM {schema}.run_streams AS r CROSS JOIN oldest
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
WHERE r.run_id = $1;

-- name: recent_open_runs
-- The open runs (no terminal event yet) by last activity, newest first, for list_runs.
-- $1 text status, or NULL for any; $2 bigint limit.
-- Index: run_streams_open_idx (run_id) WHERE terminal_seq IS NULL: every open run, each with a
-- backward step on the run_events primary key for its head, sorted here by last activity (no
-- index can cover it: it moves with every append). No locks.
SELECT r.run_id, r.status, r.first_seq, r.first_ms, h.last_seq, h.last_ms, r.terminal_seq,
       h.last_ms AS terminal_ms, r.created_at,
       greatest(r.updated_at, to_timestamp(h.last_ms / 1000.0)) AS updated_at,
       r.ended_at, r.awaiting_input_since,
       r.fork_seq, r.fork_source_run_id, r.stream_deleted_at IS NOT NULL AS deleted
FROM {schema}.run_streams AS r
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
WHERE r.terminal_seq IS NULL AND ($1::text IS NULL OR r.status = $1)
ORDER BY updated_at DESC
LIMIT $2;

-- name: recent_ended_runs
-- The ended runs by end time, newest first, for list_runs (see recent_open_runs).
-- $1 text status, or NULL for any; $2 bigint limit.
-- Index: run_streams_ended_idx, read backwards. No locks.
SELECT run_id, status, first_seq, first_ms, last_seq, last_ms, terminal_seq, last_ms AS terminal_ms,
       created_at, updated_at, ended_at, awaiting_input_since,
       fork_seq, fork_source_run_id, stream_deleted_at IS NOT NULL AS deleted
FROM {schema}.run_streams
WHERE ended_at IS NOT NULL AND ($1::text IS NULL OR status = $1)
ORDER BY ended_at DESC
LIMIT $2;

-- name: notify_runs
-- The wake-ups that piled up, one NOTIFY each, in one statement (one transaction); distinct
-- payloads are never merged. This statement is the one definition of the wake payload
-- "<seq>@<lsn> <run_id>": the run's newest seq ('*' for NULL: re-read regardless, e.g. retention
-- deleted events), the primary's WAL insert position read after the commits being reported (how
-- far a standby must have replayed to hold them, pgbridge.engine.replica), and the run id (which
-- may hold spaces). A wake-up given its events (a JSON array, pgbridge.engine.listen.encode_carried)
-- carries them when the payload stays under PostgreSQL's 8,000 bytes:
-- "+<seq>@<lsn> <characters in run_id> <run_id><events>"; a reader that holds the seqs before them
-- takes them without a query. pgbridge.engine.listen.decode_wake reads both forms;
-- tests/db/test_wake_payload.py runs this statement and decodes what arrives.
-- $1 text channel, $2 bigint[] newest seqs (NULL elements: any seq), $3 text[] run ids, $4 text[]
-- the events each wake-up carries (NULL elements: none).
-- publish_in sends it inside the caller's transaction for a run whose events did not fit in
-- append_events_notifying's payload: delivered at that commit, never after a rollback.
-- No table, no locks.
SELECT pg_notify($1, CASE
    WHEN w.events IS NOT NULL AND w.seq IS NOT NULL
         AND octet_length(w.run_id) + octet_length(w.events) < 7900
    THEN '+' || w.seq || '@' || l.lsn || ' ' || char_length(w.run_id) || ' ' || w.run_id || w.events
    ELSE coalesce(w.seq::text, '*') || '@' || l.lsn || ' ' || w.run_id
END)
FROM (SELECT pg_current_wal_insert_lsn()::text AS lsn) AS l,
     unnest($2::bigint[], $3::text[], $4::text[]) AS w(seq, run_id, events);

-- name: notify_listener_check
-- start(): a NOTIFY from a pooled session on a fresh channel that only the starting listener
-- follows; it must arrive, or the listener goes through a transaction-mode pooler
-- (pgbridge.engine.listen).
-- $1 text the probe channel.
-- No table, no locks.
SELECT pg_notify($1, 'pgbridge listener check');

-- name: listener_ping
-- Whether the LISTEN connection still answers (its periodic ping, and the start check's test of a
-- connection that heard nothing).
-- No parameters, no table, no locks.
SELECT 1;

-- name: schema_revision
-- The alembic revision the schema is at: start() refuses any but pgbridge.sql.SCHEMA_REVISION.
-- No parameters.
-- Index: none (alembic_version has one row). No locks.
SELECT version_num FROM {schema}.alembic_version;

-- name: replica_replay_position
-- Where a hot standby's replay stands, as a WAL position text (NULL on a server not in recovery):
-- a read goes to the standby only once it has replayed what the reader was woken for.
-- No parameters, no table, no locks.
SELECT pg_last_wal_replay_lsn()::text;

-- name: server_in_recovery
-- start() with replica_dsn: is that server a hot standby?
-- No parameters, no table, no locks.
SELECT pg_is_in_recovery();

-- name: server_system_identifier
-- start() with replica_dsn: the cluster's system identifier (the standby's must be the primary's).
-- Needs the right to run pg_control_system(); the caller skips the check when refused.
-- No parameters, no table, no locks.
SELECT system_identifier::text FROM pg_control_system();

-- name: chain_head
-- Where a run's hash chain starts (trimmed_hash: the last deleted event's hash, NULL if retention
-- deleted none) and how it ends, for verify and export; read in the same REPEATABLE READ snapshot
-- as chain_rows.
-- $1 text run id. No row: no such run.
-- Index: run_streams primary key, a backward step on run_events' for the head. No locks.
SELECT r.status, r.first_seq, h.last_seq, r.trimmed_hash, h.last_hash
FROM {schema}.run_streams AS r
CROSS JOIN LATERAL {schema}.pgbridge_run_head(r.run_id, r.last_seq, r.last_ms, r.last_hash) AS h
WHERE r.run_id = $1;

-- name: chain_rows
-- Every stored event of a run in seq order with its hash, for verify and export (read through a
-- server-side cursor: constant memory for a run of any length).
-- $1 text run id.
-- Index: range scan of the run_events primary key. No locks.
SELECT seq, created_ms, event, data::text AS data, hash
FROM {schema}.run_events
WHERE run_id = $1
ORDER BY seq;

-- name: run_ids
-- Every run id in order, for verify --all (read through a server-side cursor). Cross-run.
-- No parameters.
-- Index: run_streams primary key (a full index scan). No locks.
SELECT run_id FROM {schema}.run_streams ORDER BY run_id;

-- name: last_deletion
-- The newest record of a run's deletion (run_deletions, revision 0009), for verify when the run
-- has no row: when, by which path, and its chain as it stood. No row: never deleted.
-- $1 text run id.
-- Index: run_deletions primary key (run_id, deleted_at), read backwards from the newest. No locks.
SELECT run_id, deleted_at, via, status, started_at, last_seq, events_deleted, last_hash
FROM {schema}.run_deletions
WHERE run_id = $1
ORDER BY deleted_at DESC
LIMIT 1;

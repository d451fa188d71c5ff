-- A candidate pgbridge_append_batch: set-based (issue 22). NOT APPLIED by any revision yet.
--
-- Same signature, results and rules as the head function (gapless seqs in commit order, first
-- terminal wins, the hash chain byte for byte, the publish checks, run rows created then locked
-- in run_id order), but a batch costs a handful of statements instead of a SELECT ... FOR UPDATE
-- and an UPDATE per run. benchmarks/append_cost.py measures it against the head function
-- (`--candidate benchmarks/candidates/set_based_append.sql`); docs/performance.md has the
-- figures and what is still open (the fixed cost per call, before it can ship as a revision).
-- It passed the db tests of publish, group commit, audit, expiry, retention, forks and the state
-- machine, and a concurrent deadlock test, when installed as a revision on top of 0009.
-- __SCHEMA__ stands for the schema, as in the revisions.

CREATE OR REPLACE FUNCTION __SCHEMA__.pgbridge_append_batch(
    run_ids text[], events text[], datas text[], terminals boolean[], statuses text[],
    publish boolean DEFAULT false
) RETURNS TABLE (ord integer, seq bigint, created_ms bigint, refused text)
LANGUAGE plpgsql
AS $body$
#variable_conflict use_column
DECLARE
    n integer := coalesce(array_length(run_ids, 1), 0);
    stale_runs bigint;
    gone text[] := '{}';
    out_seq bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    out_ms bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    out_refused text[] := array_fill(NULL::text, ARRAY[n]);
    out_hash bytea[] := array_fill(NULL::bytea, ARRAY[n]);
    k integer := 0;  -- events taken so far
    first_ms bigint;
    -- The runs that took events (m of them) and their newest event.
    m integer := 0;
    up_run text[] := '{}';
    up_seq bigint[] := '{}';
    up_ms bigint[] := '{}';
    up_hash bytea[] := '{}';
    up_ord integer[] := '{}';
    up_first_ms bigint[] := '{}';
    stale record;
    e record;
    current_run text := NULL;
    refusal text;
    held boolean;
    first_k integer;
    next_seq bigint;
    stamp bigint;
    chain bytea;
    ended boolean;
    last_ord integer;
BEGIN
    -- The batch's runs in one order (run_id): every batch creates the missing run rows, then
    -- locks them all, in that order, so two batches never wait on each other in a cycle. The
    -- lock also tells whether a publish must look at a stream that expired or was deleted.
    INSERT INTO __SCHEMA__.run_streams AS r (run_id, status, last_seq)
    SELECT DISTINCT u.r, 'active', 0 FROM unnest(run_ids) AS u(r)
    WHERE NOT EXISTS (SELECT FROM __SCHEMA__.run_streams AS x WHERE x.run_id = u.r)
    ORDER BY u.r
    ON CONFLICT (run_id) DO NOTHING;
    SELECT count(*) FILTER (WHERE l.stale) INTO stale_runs
    FROM (
        SELECT r.stream_deleted_at IS NOT NULL OR (
            (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
            OR (r.stream_ttl_seconds IS NOT NULL
                AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())
        ) AS stale
        FROM __SCHEMA__.run_streams AS r WHERE r.run_id = ANY (run_ids) ORDER BY r.run_id FOR UPDATE
    ) AS l;

    -- Publish checks, on the rare rows they concern: a stream gone while forks read it refuses
    -- the run's events; an expired one no fork reads is deleted as a DELETE would, and starts anew.
    IF publish AND stale_runs > 0 THEN
        FOR stale IN
            SELECT r.run_id, r.fork_refs, r.stream_deleted_at IS NOT NULL AS soft_deleted
            FROM __SCHEMA__.run_streams AS r
            WHERE r.run_id = ANY (run_ids) AND (r.stream_deleted_at IS NOT NULL OR (
                (r.stream_expires_at IS NOT NULL AND r.stream_expires_at <= now())
                OR (r.stream_ttl_seconds IS NOT NULL
                    AND r.stream_touched_at + make_interval(secs => r.stream_ttl_seconds) <= now())))
            ORDER BY r.run_id
        LOOP
            IF stale.soft_deleted OR stale.fork_refs > 0 THEN
                UPDATE __SCHEMA__.run_streams SET stream_deleted_at = now()
                WHERE run_id = stale.run_id AND stream_deleted_at IS NULL;
                gone := gone || stale.run_id;
            ELSE
                PERFORM __SCHEMA__.pgbridge_delete_stream(stale.run_id, 'expiry');
                INSERT INTO __SCHEMA__.run_streams (run_id, status, last_seq) VALUES (stale.run_id, 'active', 0);
            END IF;
        END LOOP;
    END IF;

    -- Every event in (run, place) order with its run's row: number it, or say why its run
    -- refuses it (a run takes its events up to and with its first terminal event), and chain.
    FOR e IN
        WITH locked AS MATERIALIZED (
            SELECT r.run_id, r.last_seq, r.last_hash, r.first_seq, r.content_type, r.terminal_seq
            FROM __SCHEMA__.run_streams AS r WHERE r.run_id = ANY (run_ids)
        )
        SELECT u.i::integer AS i, u.rid, u.event, u.data, u.terminal,
            r.last_seq, r.last_hash, r.first_seq <= r.last_seq AS holds_events,
            CASE
                WHEN u.rid = ANY (gone) THEN 'gone'
                WHEN publish AND coalesce(r.content_type, 'application/json') <> 'application/json'
                    THEN 'content_type'
                WHEN r.terminal_seq IS NOT NULL THEN 'terminal'
            END AS why
        FROM unnest(run_ids, events, datas, terminals) WITH ORDINALITY AS u(rid, event, data, terminal, i)
        JOIN locked AS r ON r.run_id = u.rid
        ORDER BY u.rid, u.i
    LOOP
        IF current_run IS DISTINCT FROM e.rid THEN
            IF k >= first_k THEN  -- the previous run took events: its update
                m := m + 1;
                up_run[m] := current_run; up_seq[m] := next_seq; up_ms[m] := stamp; up_hash[m] := chain;
                up_ord[m] := last_ord; up_first_ms[m] := CASE WHEN NOT held THEN first_ms END;
            END IF;
            current_run := e.rid;
            refusal := e.why;
            held := e.holds_events;
            first_k := k + 1;
            next_seq := e.last_seq;
            chain := coalesce(e.last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
            ended := false;
        END IF;
        IF refusal IS NOT NULL OR ended THEN
            out_refused[e.i] := coalesce(refusal, 'terminal');
            CONTINUE;
        END IF;
        next_seq := next_seq + 1;
        stamp := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
        chain := __SCHEMA__.pgbridge_link_hash(chain, e.rid, next_seq, stamp, e.event, e.data);
        ended := e.terminal;
        last_ord := e.i;
        k := k + 1;
        out_seq[e.i] := next_seq; out_ms[e.i] := stamp; out_hash[e.i] := chain;
        IF k = first_k THEN first_ms := stamp; END IF;
    END LOOP;
    IF k >= first_k THEN
        m := m + 1;
        up_run[m] := current_run; up_seq[m] := next_seq; up_ms[m] := stamp; up_hash[m] := chain;
        up_ord[m] := last_ord; up_first_ms[m] := CASE WHEN NOT held THEN first_ms END;
    END IF;

    IF k > 0 THEN
        INSERT INTO __SCHEMA__.run_events (run_id, seq, created_ms, event, data, terminal, hash)
        SELECT u.rid, u.seq, u.ms, u.event, u.data::json, u.terminal, u.hash
        FROM unnest(run_ids, events, datas, terminals, out_seq, out_ms, out_hash)
            AS u(rid, event, data, terminal, seq, ms, hash)
        WHERE u.seq IS NOT NULL;
        -- One statement updates every run that took events: its newest event (whose status and
        -- terminal flag the run takes), and first_ms when it held no event before.
        UPDATE __SCHEMA__.run_streams AS r SET
            last_seq = a.last_seq, last_ms = a.last_ms, last_hash = a.last_hash,
            status = statuses[a.i],
            first_ms = coalesce(a.first_ms, r.first_ms),
            terminal_seq = CASE WHEN terminals[a.i] THEN a.last_seq END,
            ended_at = CASE WHEN terminals[a.i] THEN now() END,
            awaiting_input_since = NULL, updated_at = now()
        FROM unnest(up_run, up_seq, up_ms, up_hash, up_ord, up_first_ms)
            AS a(run_id, last_seq, last_ms, last_hash, i, first_ms)
        WHERE r.run_id = a.run_id;
    END IF;

    RETURN QUERY
        SELECT o::integer, x.seq, x.ms, x.refused
        FROM unnest(out_seq, out_ms, out_refused) WITH ORDINALITY AS x(seq, ms, refused, o);
END
$body$;

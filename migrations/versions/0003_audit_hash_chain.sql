-- Revision 0003: audit, a per-run hash chain and an append-only run_events.
--
-- FROZEN: the exact SQL this revision runs, as it ran when the revision was
-- written. Never edit it: a change to the schema is a new revision (see
-- migrations/README.md). __SCHEMA__ stands for the target schema as a quoted
-- identifier ("public"); 0003_audit_hash_chain.py fills it in, runs the
-- statements of "-- migrate:upgrade" on upgrade and those of
-- "-- migrate:downgrade" on downgrade, in order. In psql:
--   sed -n '/^-- migrate:upgrade/,/^-- migrate:downgrade/p' 0003_audit_hash_chain.sql | sed 's/__SCHEMA__/"public"/g' | psql
-- Function bodies are byte for byte what PostgreSQL stores (pg_proc.prosrc).

-- migrate:upgrade

ALTER TABLE __SCHEMA__.run_events ADD COLUMN hash BYTEA;

ALTER TABLE __SCHEMA__.run_streams ADD COLUMN last_hash BYTEA;

ALTER TABLE __SCHEMA__.run_streams ADD COLUMN trimmed_hash BYTEA;

-- pgbridge_link_hash: the same bytes as pgbridge's chain.link_hash (Python).
CREATE FUNCTION __SCHEMA__.pgbridge_link_hash(
    prev bytea, run_id text, seq bigint, created_ms bigint, event text, data text
) RETURNS bytea
LANGUAGE sql STABLE STRICT PARALLEL SAFE
-- STABLE (as convert_to is) and a quoted body: PostgreSQL inlines it
-- into the append statement, so it costs no function call. Declared
-- IMMUTABLE it would not be inlined (its body is not immutable).
AS $$
            SELECT sha256(
                prev
                || int4send(octet_length(convert_to(run_id, 'UTF8'))) || convert_to(run_id, 'UTF8')
                || int8send(seq) || int8send(created_ms)
                || int4send(octet_length(convert_to(event, 'UTF8'))) || convert_to(event, 'UTF8')
                || int4send(octet_length(convert_to(data, 'UTF8'))) || convert_to(data, 'UTF8')
            )
        $$;

-- Chain what is already stored. Events deleted before this revision are
-- unknown: such a run's chain starts from its first retained event.
DO $$
DECLARE
    run record;
    ev record;
    prev bytea;
BEGIN
    FOR run IN SELECT run_id FROM __SCHEMA__.run_streams LOOP
        prev := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
        FOR ev IN
            SELECT seq, created_ms, event, data::text AS data
            FROM __SCHEMA__.run_events WHERE run_id = run.run_id ORDER BY seq
        LOOP
            prev := __SCHEMA__.pgbridge_link_hash(
                prev, run.run_id, ev.seq, ev.created_ms, ev.event, ev.data);
            UPDATE __SCHEMA__.run_events SET hash = prev WHERE run_id = run.run_id AND seq = ev.seq;
        END LOOP;
        UPDATE __SCHEMA__.run_streams SET last_hash = prev
        WHERE run_id = run.run_id AND last_seq > 0 AND first_seq <= last_seq;
    END LOOP;
END $$;

ALTER TABLE __SCHEMA__.run_events ALTER COLUMN hash SET NOT NULL;

-- pgbridge_trim_run_prefixes: the one way events leave run_events. Deletes
-- runs' oldest events (from_seqs..throughs, the caller holds the run rows'
-- locks), moves first_seq/first_ms and records the last deleted event's
-- hash in trimmed_hash, all in one statement. Runs as its owner (SECURITY
-- DEFINER) with the guard's setting on, so a runtime role needs EXECUTE on
-- it and no DELETE on run_events.
CREATE FUNCTION __SCHEMA__.pgbridge_trim_run_prefixes(run_ids text[], from_seqs bigint[], throughs bigint[])
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

REVOKE ALL ON FUNCTION __SCHEMA__.pgbridge_trim_run_prefixes(text[], bigint[], bigint[]) FROM PUBLIC;

-- The guard: UPDATE and TRUNCATE always fail; DELETE only inside the trim function.
CREATE FUNCTION __SCHEMA__.pgbridge_guard_run_events() RETURNS trigger
LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' AND current_setting('pgbridge.retention', true) = 'on' THEN
                RETURN NULL;
            END IF;
            RAISE EXCEPTION 'pgbridge: run_events is append-only, % is refused', TG_OP
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'events leave run_events only through retention (pgbridge retention)';
        END
        $$;

CREATE TRIGGER run_events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON __SCHEMA__.run_events
    FOR EACH STATEMENT EXECUTE FUNCTION __SCHEMA__.pgbridge_guard_run_events();

-- migrate:downgrade

DROP TRIGGER IF EXISTS run_events_append_only ON __SCHEMA__.run_events;

DROP FUNCTION IF EXISTS __SCHEMA__.pgbridge_guard_run_events();

DROP FUNCTION IF EXISTS __SCHEMA__.pgbridge_trim_run_prefixes(text[], bigint[], bigint[]);

DROP FUNCTION IF EXISTS __SCHEMA__.pgbridge_link_hash(bytea, text, bigint, bigint, text, text);

ALTER TABLE __SCHEMA__.run_streams DROP COLUMN trimmed_hash;

ALTER TABLE __SCHEMA__.run_streams DROP COLUMN last_hash;

ALTER TABLE __SCHEMA__.run_events DROP COLUMN hash;

"""The database objects behind the audit guarantees (revision 0003), as DDL text.

Alembic does not track functions and triggers, so their definitions live
here, named, and the revision executes them. See docs/audit.md.
"""

from __future__ import annotations

from pgbridge.sql import quote_identifier

#: The trigger that keeps run_events append-only.
GUARD_TRIGGER = "run_events_append_only"
#: The setting that lets a DELETE through the guard; only the trim function sets it.
RETENTION_SETTING = "pgbridge.retention"


def create_link_hash_function_sql(schema: str) -> list[str]:
    """``pgbridge_link_hash``: the same bytes as :func:`pgbridge.audit.chain.link_hash`."""
    s = quote_identifier(schema)
    return [
        f"""
        CREATE FUNCTION {s}.pgbridge_link_hash(
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
        $$
        """
    ]


def create_trim_function_sql(schema: str) -> list[str]:
    """``pgbridge_trim_run_prefixes``: the one way events leave run_events.

    Deletes runs' oldest events (``from_seqs..throughs``, the caller holds the
    run rows' locks), moves ``first_seq``/``first_ms`` and records the last
    deleted event's hash in ``trimmed_hash``, all in one statement. Runs as
    its owner (SECURITY DEFINER) with the guard's setting on, so a runtime
    role needs EXECUTE on it and no DELETE on run_events.
    """
    s = quote_identifier(schema)
    return [
        f"""
        CREATE FUNCTION {s}.pgbridge_trim_run_prefixes(run_ids text[], from_seqs bigint[], throughs bigint[])
        RETURNS bigint
        LANGUAGE sql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        SET {RETENTION_SETTING} = 'on'
        AS $$
            WITH plan AS (
                SELECT * FROM unnest(run_ids, from_seqs, throughs) AS p(run_id, from_seq, through)
            ),
            moved AS (
                UPDATE {s}.run_streams AS r SET
                    first_seq = p.through + 1,
                    first_ms = (SELECT e.created_ms FROM {s}.run_events AS e
                                WHERE e.run_id = p.run_id AND e.seq = p.through + 1),
                    trimmed_hash = (SELECT e.hash FROM {s}.run_events AS e
                                    WHERE e.run_id = p.run_id AND e.seq = p.through)
                FROM plan AS p
                WHERE r.run_id = ANY(run_ids) AND r.run_id = p.run_id
                  AND r.first_seq = p.from_seq AND p.through BETWEEN p.from_seq AND r.last_seq
                RETURNING r.run_id, p.from_seq, p.through
            ),
            gone AS (
                DELETE FROM {s}.run_events AS e
                USING moved AS m
                WHERE e.run_id = m.run_id AND e.seq BETWEEN m.from_seq AND m.through
                RETURNING 1
            )
            SELECT count(*) FROM gone
        $$
        """,
        f"REVOKE ALL ON FUNCTION {s}.pgbridge_trim_run_prefixes(text[], bigint[], bigint[]) FROM PUBLIC",
    ]


def create_guard_sql(schema: str) -> list[str]:
    """The trigger: UPDATE and TRUNCATE always fail; DELETE only inside the trim function."""
    s = quote_identifier(schema)
    return [
        f"""
        CREATE FUNCTION {s}.pgbridge_guard_run_events() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' AND current_setting('{RETENTION_SETTING}', true) = 'on' THEN
                RETURN NULL;
            END IF;
            RAISE EXCEPTION 'pgbridge: run_events is append-only, % is refused', TG_OP
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'events leave run_events only through retention (pgbridge retention)';
        END
        $$
        """,
        f"""
        CREATE TRIGGER {GUARD_TRIGGER}
            BEFORE UPDATE OR DELETE OR TRUNCATE ON {s}.run_events
            FOR EACH STATEMENT EXECUTE FUNCTION {s}.pgbridge_guard_run_events()
        """,
    ]


def drop_audit_objects_sql(schema: str) -> list[str]:
    s = quote_identifier(schema)
    return [
        f"DROP TRIGGER IF EXISTS {GUARD_TRIGGER} ON {s}.run_events",
        f"DROP FUNCTION IF EXISTS {s}.pgbridge_guard_run_events()",
        f"DROP FUNCTION IF EXISTS {s}.pgbridge_trim_run_prefixes(text[], bigint[], bigint[])",
        f"DROP FUNCTION IF EXISTS {s}.pgbridge_link_hash(bytea, text, bigint, bigint, text, text)",
    ]

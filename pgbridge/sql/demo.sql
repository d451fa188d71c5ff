-- The statement `pgbridge demo` shows the user (run by pgbridge/cli/demo.py): a run
-- is plain SQL over run_events. The demo prints this text, with the schema and the
-- run id filled in, then runs it, so keep it short and readable as it is.


-- name: last_events
-- The run's last three events, oldest first (the newest three, read newest first, then put
-- back in order): each one's event ID (created_ms-seq), name, and data as stored (its exact
-- JSON text). The demo prints the rows in the order this returns them.
-- $1 text: the run id.
-- Index: run_events' primary key (run_id, seq), read backwards. Locks: none (a plain read).
SELECT event_id, event, data FROM (
    SELECT seq, created_ms || '-' || seq AS event_id, event, data::text AS data
    FROM {schema}.run_events WHERE run_id = $1 ORDER BY seq DESC LIMIT 3
) AS last_three
ORDER BY seq;

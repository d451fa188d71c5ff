-- The statement `pgbridge demo` shows the user (run by pgbridge/cli/demo.py): a run
-- is plain SQL over run_events. The demo prints this text, with the schema and the
-- run id filled in, then runs it, so keep it short and readable as it is.


-- name: last_events
-- The run's last three events, newest first: each one's event ID (created_ms-seq),
-- name, and data as stored (its exact JSON text).
-- $1 text: the run id.
-- Index: run_events' primary key (run_id, seq), read backwards. Locks: none (a plain read).
SELECT created_ms || '-' || seq AS event_id, event, data::text AS data
FROM {schema}.run_events WHERE run_id = $1 ORDER BY seq DESC LIMIT 3;

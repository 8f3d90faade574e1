-- Backfill: the run reports and failed lines of backfill(), which reads NDJSON
-- in Rust (src/api/backfill.rs) and inserts each event as emit() and enqueue()
-- do (src/api/events.rs).

CREATE TABLE backfill_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    run_by      text NOT NULL DEFAULT session_user,
    endpoint_id bigint,
    dry_run     boolean NOT NULL,
    mode        text NOT NULL,
    processed   bigint NOT NULL DEFAULT 0,
    created     bigint NOT NULL DEFAULT 0,
    enqueued    bigint NOT NULL DEFAULT 0,
    duplicates  bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE backfill_runs IS
'One row per backfill() call, dry runs included, with its counts. Written in the caller''s transaction: a run that is rolled back leaves nothing.';
COMMENT ON COLUMN backfill_runs.run_by IS 'session_user of the call (the login, not the extension owner).';
COMMENT ON COLUMN backfill_runs.endpoint_id IS 'The endpoint given to backfill(); NULL = fanned out to subscribed endpoints.';

CREATE TABLE backfill_errors (
    run_id     bigint NOT NULL REFERENCES backfill_runs (id) ON DELETE CASCADE,
    line_no    integer NOT NULL,
    reason     text NOT NULL,
    line       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, line_no)
);
COMMENT ON TABLE backfill_errors IS
'Lines backfill() could not accept: line number (1-based, blank lines included), reason, and the first 1 kB of the line. '
'Delete old runs from backfill_runs; their errors go with them.';

COMMENT ON FUNCTION backfill(text, bigint, boolean, integer, integer) IS
'Queue historical events from NDJSON text, one JSON object per line with event_id, event_type, request_id, schema_version and actor.user_id '
'(the whole object is the payload, actor.user_id the subject_id). endpoint_id NULL fans out to the enabled endpoints subscribed to '
'each event_type, as emit() does (endpoints as they are when each chunk of 5,000 lines is written). processed = non-blank lines = created + duplicates + failed: '
'created counts events that got at least one new delivery, enqueued the delivery rows written (one per event and endpoint), duplicates '
'the events already in the outbox for every target endpoint or repeated in the input, failed the lines rejected (bad JSON, missing '
'field, over max_payload_bytes, no subscribed endpoint), each reported by NOTICE (the first 100) and in backfill_errors. mode shadow '
'records shadow rows; mode off refuses to run except as a dry run. dry_run queues nothing and returns the counts a real run would; '
'its report is still kept in backfill_runs/backfill_errors. max_attempts overrides the endpoint''s; progress_every N prints a '
'NOTICE every N lines.';

-- Tables of webhook_outbox. Loaded first (bootstrap): the Rust functions
-- return these row types.

-- CREATE EXTENSION installs into an existing schema of this name as it finds
-- it. One that another role owns (and so may write to, or drop objects from),
-- may create objects in, or has already put objects in, would sit in the
-- search_path of every SECURITY DEFINER function: refuse it unless a
-- superuser owns it, no one else may create in it, and it is empty.
DO $$
DECLARE
    nsp pg_catalog.oid := 'webhook_outbox'::pg_catalog.regnamespace;
    owner_is_superuser boolean;
    others_may_create boolean;
    objects bigint;
BEGIN
    SELECT r.rolsuper INTO owner_is_superuser
    FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
    WHERE n.oid OPERATOR(pg_catalog.=) nsp;
    SELECT EXISTS (
        SELECT FROM pg_catalog.pg_namespace n
        CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) a
        LEFT JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) a.grantee
        WHERE n.oid OPERATOR(pg_catalog.=) nsp
          AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'::pg_catalog.text
          AND (a.grantee OPERATOR(pg_catalog.=) 0::pg_catalog.oid OR NOT r.rolsuper))
      INTO others_may_create;
    -- Every object in a schema depends on it; the extension being created does too.
    SELECT pg_catalog.count(*) INTO objects
    FROM pg_catalog.pg_depend d
    WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
      AND d.refobjid OPERATOR(pg_catalog.=) nsp
      AND d.classid OPERATOR(pg_catalog.<>) 'pg_catalog.pg_extension'::pg_catalog.regclass;
    IF NOT owner_is_superuser OR others_may_create OR objects OPERATOR(pg_catalog.>) 0 THEN
        RAISE EXCEPTION 'schema webhook_outbox already exists and was not left empty and closed by a superuser'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = pg_catalog.format('Owner: %s; others may create in it: %s; objects in it: %s.',
                                             (SELECT nspowner::pg_catalog.regrole FROM pg_catalog.pg_namespace
                                              WHERE oid OPERATOR(pg_catalog.=) nsp),
                                             others_may_create, objects),
                  HINT = 'Another role could change what the extension''s functions run as superuser. '
                         'Inspect the schema, drop it (DROP SCHEMA webhook_outbox CASCADE) and run CREATE EXTENSION again.';
    END IF;
END
$$;

CREATE TABLE endpoints (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text UNIQUE,
    url             text NOT NULL,
    secret          text NOT NULL,
    event_types     text[],
    headers         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(headers) = 'object'),
    enabled         boolean NOT NULL DEFAULT true,
    rate_limit_rps  double precision CHECK (rate_limit_rps >= 0),
    max_attempts    integer CHECK (max_attempts BETWEEN 1 AND 100),
    -- What parse_schedule() accepts: 1 to 99 steps, each from 1 ms to 7 days.
    retry_schedule  interval[] CHECK (cardinality(retry_schedule) BETWEEN 1 AND 99
                                      AND array_position(retry_schedule, NULL) IS NULL
                                      AND interval '1 millisecond' <= ALL (retry_schedule)
                                      AND interval '7 days' >= ALL (retry_schedule)),
    -- Secrets rotate_secret() replaced, each signing until its time, newest first.
    retired_secrets text[],
    retired_until   timestamptz[],
    CHECK (coalesce(cardinality(retired_secrets), 0) = coalesce(cardinality(retired_until), 0)
           AND coalesce(cardinality(retired_secrets), 0) <= 4),
    disabled_reason text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      name NOT NULL DEFAULT session_user,
    -- delete_endpoint() keeps the row, so that its deliveries (dead letters
    -- among them) keep their endpoint until retention removes them.
    deleted_at      timestamptz,
    CHECK (deleted_at IS NULL OR NOT enabled)
);
COMMENT ON TABLE endpoints IS 'Webhook receivers. id is the endpoint id (webhook_id in health_metrics and the views); secret signs every request (Standard Webhooks).';
COMMENT ON COLUMN endpoints.secret IS 'whsec_ + base64 key (HMAC, v1 signatures) or whsk_ + base64 ed25519 key (v1a); never exposed by the v_ views.';
COMMENT ON COLUMN endpoints.retired_secrets IS 'Secrets rotate_secret() replaced, newest first (at most 4): requests are signed with each as well until its retired_until.';
COMMENT ON COLUMN endpoints.retired_until IS 'When each of retired_secrets stops signing.';
COMMENT ON COLUMN endpoints.event_types IS 'Event types emit() sends here; NULL = all.';
COMMENT ON COLUMN endpoints.headers IS 'Extra request headers, {"name": "value"}.';
COMMENT ON COLUMN endpoints.rate_limit_rps IS 'Requests per second; NULL = webhook_outbox.rate_limit_rps, 0 = unlimited.';
COMMENT ON COLUMN endpoints.max_attempts IS 'Attempts before dead; NULL = one more than the steps of retry_schedule if set, else webhook_outbox.max_attempts.';
COMMENT ON COLUMN endpoints.retry_schedule IS 'Delay before each retry (the last repeats), each spread by +/-10%; NULL = webhook_outbox.retry_schedule.';
COMMENT ON COLUMN endpoints.disabled_reason IS 'Why the endpoint is disabled (disable_endpoint(), delete_endpoint()); NULL while enabled.';
COMMENT ON COLUMN endpoints.updated_by IS 'session_user of the last change (the login role: current_user is the extension owner inside the management functions).';
COMMENT ON COLUMN endpoints.deleted_at IS 'When delete_endpoint() removed it: never sent to again, kept for its deliveries'' history; NULL = not deleted.';

-- Every change of an endpoint, written by a trigger (sql/endpoints.sql), so
-- that direct UPDATEs are recorded too. Never a secret: no signing secret, no
-- header value, and of the URL only scheme, host and port (_url_origin);
-- "changed" names every column that changed, those included.
CREATE TABLE endpoint_changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No foreign key: the trail outlives the endpoint.
    endpoint_id bigint NOT NULL,
    operation   text NOT NULL CHECK (operation IN ('create', 'update', 'disable', 'enable', 'delete', 'rotate_secret',
                                                   'purge')),
    changed_at  timestamptz NOT NULL DEFAULT now(),
    changed_by  name NOT NULL DEFAULT session_user,
    changed     text[],
    reason      text,
    old_value   jsonb,
    new_value   jsonb
);
CREATE INDEX endpoint_changes_endpoint_idx ON endpoint_changes (endpoint_id, changed_at);
COMMENT ON TABLE endpoint_changes IS
'Audit trail of endpoints: who (session_user), when and what, one row per change, whether made by create_endpoint(), update_endpoint(), '
'disable_endpoint(), enable_endpoint(), delete_endpoint() or a direct UPDATE. Holds no secret.';
COMMENT ON COLUMN endpoint_changes.endpoint_id IS 'The endpoint (endpoints.id; ids start again after TRUNCATE ... RESTART IDENTITY).';
COMMENT ON COLUMN endpoint_changes.changed_at IS 'When the change was made (the transaction''s start).';
COMMENT ON COLUMN endpoint_changes.changed_by IS 'session_user: the role that logged in (the worker''s for a 410 or an auto-disable).';
COMMENT ON COLUMN endpoint_changes.operation IS
'create, update, disable, enable, delete (delete_endpoint()), rotate_secret, purge (the row itself removed: DELETE or TRUNCATE).';
COMMENT ON COLUMN endpoint_changes.changed IS 'The columns that changed (update, disable, enable, delete), secret and headers included; their values are not recorded.';
COMMENT ON COLUMN endpoint_changes.reason IS 'disable and delete: the reason given.';
COMMENT ON COLUMN endpoint_changes.old_value IS 'The endpoint before, without secret and header values, its URL cut to scheme, host and port; NULL for create.';
COMMENT ON COLUMN endpoint_changes.new_value IS 'The endpoint after, likewise; NULL for purge.';

-- The secrets of a rotation that still sign, each until its time, newest
-- first. Read by the claim for every request (so plain SQL, inlined), and by
-- rotate_secret() and public_keys().
CREATE FUNCTION _retired_secrets(e endpoints) RETURNS TABLE (secret text, valid_until timestamptz)
LANGUAGE sql STABLE PARALLEL SAFE ROWS 4
AS $$
    SELECT u.s, u.t FROM ROWS FROM (pg_catalog.unnest(e.retired_secrets), pg_catalog.unnest(e.retired_until)) AS u(s, t)
    WHERE u.t OPERATOR(pg_catalog.>) pg_catalog.now()
    ORDER BY u.t DESC
$$;
COMMENT ON FUNCTION _retired_secrets(endpoints) IS 'Internal: the secrets rotate_secret() replaced that still sign, and until when, newest first.';

-- Where a URL points, without what it may carry: scheme, host and port,
-- never credentials, the path, query or fragment, which often hold a token
-- of their own. What operators see of a URL (the views, the endpoint audit).
CREATE FUNCTION _url_origin(url text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.regexp_replace(pg_catalog.substring(url, '^[^:/?#]+://[^/?#]*'), '//.*@', '//')
$$;
COMMENT ON FUNCTION _url_origin(text) IS 'Internal: scheme, host and port of a URL, without path, query or fragment.';

-- A restore (pg_dump keeps the configuration and its audit trails,
-- sql/backup.sql) inserts rows as they were, with their past updated_at:
-- such a row, written by a superuser (who alone can restore an extension),
-- is neither stamped nor audited again; its history comes back with the
-- audit table, whose ids a new audit row would collide with. Anyone else's
-- INSERT is stamped and audited like any change.
CREATE FUNCTION _restored(updated_at timestamptz) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
    SELECT updated_at < now() AND (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = session_user)
$$;
COMMENT ON FUNCTION _restored(timestamptz) IS
'Internal: whether a row being inserted into endpoints or feature_flags comes from a restore (a superuser inserting it with a past updated_at).';

-- SECURITY DEFINER: it runs for whoever changes the row, who need not be
-- able to call the functions it asks.
CREATE FUNCTION _stamp() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' AND _restored(NEW.updated_at) THEN
        RETURN NEW;
    END IF;
    -- Nothing changed: nothing to stamp (nor to audit).
    IF TG_OP = 'UPDATE' AND NEW IS NOT DISTINCT FROM OLD THEN
        RETURN NEW;
    END IF;
    NEW.updated_at := now();
    NEW.updated_by := session_user;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION _stamp() IS 'Trigger: records when and by whom a row (an endpoint, a flag) was last changed.';
CREATE TRIGGER endpoints_stamp
BEFORE INSERT OR UPDATE ON endpoints
FOR EACH ROW EXECUTE FUNCTION _stamp();

CREATE FUNCTION _check_name(param text, value text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', param USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- Blank: no character but white space (tabs and newlines too). A
    -- bracket expression: a backslash would depend on
    -- standard_conforming_strings.
    IF value !~ '[^[:space:]]' THEN
        RAISE EXCEPTION '% must not be empty', param USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
-- An operator's reason, kept with the endpoint and in every delivery it
-- makes dead: required, and short enough to read.
CREATE FUNCTION _check_reason(param text, value text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
BEGIN
    PERFORM _check_name(param, value);
    IF octet_length(value) > 1000 THEN
        RAISE EXCEPTION '% is % bytes long; at most 1000', param, octet_length(value)
            USING ERRCODE = 'string_data_right_truncation';
    END IF;
END
$$;
COMMENT ON FUNCTION _check_reason(text, text) IS 'Raises a clear error when a reason is NULL, blank or longer than 1000 bytes.';
COMMENT ON FUNCTION _check_name(text, text) IS 'Raises a clear error when a required name (flag key, subject, salt, reason) is NULL or blank.';

CREATE TABLE deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id      bigint NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    event_id         text COLLATE "C" NOT NULL,
    event_type       text NOT NULL,
    payload          jsonb NOT NULL,
    subject_id       text,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('shadow', 'pending', 'retry', 'sent', 'dead')),
    attempt_count    integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    locked_until     timestamptz,
    -- Not NULL, and as wide before the first claim as after: see below.
    lease_token      uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    dead_at          timestamptz,
    flag_key         text,
    UNIQUE (endpoint_id, event_id),
    -- Only a due delivery can be leased; settling presents the lease's token (_held_by).
    CHECK (locked_until IS NULL OR status IN ('pending', 'retry'))
)
-- A queue: every row is updated twice within seconds of its insert. The claim
-- only writes columns no index covers (locked_until, lease_token,
-- attempt_count), so it is a HOT update, with no new index entries, when the
-- page has room for the new version: hence the free space left on every page,
-- and a lease_token that takes its 16 bytes from the insert on (a NULL that
-- the claim filled would make each claimed version larger than the inserted
-- one, and a page of them would no longer fit). That is also why a claimed
-- row keeps its status (status is in the partial indexes' predicates) and
-- "sending" is derived from the lease (delivery_state()). Settled rows leave
-- dead entries at the head of the due index that only VACUUM removes, and
-- every claim steps over them; vacuum early and without pauses.
WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 5000,
      autovacuum_vacuum_cost_delay = 0);
-- Partial indexes: a status change only touches the index of the new status,
-- and claiming reads the due rows in order without scanning history. The
-- history (sent, shadow) is only ever read by age for retention: BRIN, which
-- costs next to nothing to maintain on the hot path.
-- The due index is per endpoint, and within it per status: a claim reads only
-- the endpoints it may send to, and each one's fresh and retried rows in turn
-- (see _claim).
CREATE INDEX deliveries_due_idx ON deliveries (endpoint_id, status, next_attempt_at) WHERE status IN ('pending', 'retry');
CREATE INDEX deliveries_dead_idx ON deliveries (dead_at) WHERE status = 'dead';
CREATE INDEX deliveries_sent_brin ON deliveries USING brin (sent_at) WHERE status = 'sent';
CREATE INDEX deliveries_shadow_brin ON deliveries USING brin (created_at) WHERE status = 'shadow';
-- v_rollout_status counts recent events per flag; most rows carry none.
CREATE INDEX deliveries_flag_idx ON deliveries (flag_key, created_at) WHERE flag_key IS NOT NULL;
COMMENT ON TABLE deliveries IS 'The outbox: one row per (endpoint, event). Written in the caller''s transaction; delivered by the worker.';
COMMENT ON COLUMN deliveries.event_id IS 'Idempotency key, unique per endpoint; sent as webhook-id.';
COMMENT ON COLUMN deliveries.status IS 'shadow (recorded, never sent) | pending | retry | sent | dead. A pending or retry row under a live lease is being sent: see delivery_state().';
COMMENT ON COLUMN deliveries.locked_until IS 'End of the latest claim''s lease (see _leased()); once past, the delivery can be claimed again. NULL: not claimed since it was last settled.';
COMMENT ON COLUMN deliveries.lease_token IS
'Random token of the latest claim: while locked_until is set, only its holder can settle or release the delivery (record_attempt() takes it). '
'All zeros before the first claim.';
COMMENT ON COLUMN deliveries.attempt_count IS 'Attempts started; a claim counts one.';

-- Where emit() writes. emit() runs in the application's own transaction,
-- often from a trigger on its busiest table, and a row of deliveries costs it
-- most of its write rate (BENCHMARKS.md): a foreign key whose lock on the
-- endpoint's row every concurrent emitter shares, the idempotency key, the
-- partial indexes, the free space. An event here costs a primary key and
-- nothing else, and emit() finds the endpoints in a per-session cache
-- (src/api/routes.rs). The worker moves it into deliveries, one row per
-- endpoint it was routed to (_route_intake), in one transaction, so that the
-- event is never both here and there, nor neither. A queue: while a worker
-- runs, each row lives milliseconds.
CREATE TABLE intake (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_ids bigint[] NOT NULL,
    event_id     text COLLATE "C" NOT NULL,
    event_type   text NOT NULL,
    payload      jsonb NOT NULL,
    subject_id   text,
    -- 'shadow' or 'pending' (emit()'s new_status): no CHECK, whose
    -- expression each insert would load again; deliveries checks it.
    status       text NOT NULL,
    flag_key     text,
    created_at   timestamptz NOT NULL DEFAULT now()
)
WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
      autovacuum_vacuum_cost_delay = 0);
COMMENT ON TABLE intake IS
'Events emit() accepted that the worker has not yet turned into deliveries (one per endpoint in endpoint_ids); '
'counted as pending (or shadow) deliveries by v_queue_status and the dashboard. Without a worker, get_ready_deliveries() and run_once() move them.';
COMMENT ON COLUMN intake.endpoint_ids IS 'The endpoints the event was routed to when emit() ran (_routes()): each gets a delivery, if it still exists.';

-- What a lease means, defined once. A delivery is under a lease while
-- locked_until is in the future: no claim takes it, and operators see it as
-- sending. Once that time has passed the delivery is due again, in its old
-- place, even though locked_until still holds the time.
CREATE FUNCTION _leased(locked_until timestamptz) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT locked_until OPERATOR(pg_catalog.>) pg_catalog.now() $$;
COMMENT ON FUNCTION _leased(timestamptz) IS 'Internal: whether a delivery is under a live lease (locked_until in the future).';

-- Whose result may settle a delivery: the holder of its latest claim, even
-- after the lease ran out, as long as no other claim took it since (which
-- would have changed the token) and nothing settled or released it (which
-- clears locked_until). Settle, release and record_attempt() all ask this.
CREATE FUNCTION _held_by(locked_until timestamptz, lease_token uuid, token uuid) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT locked_until IS NOT NULL AND lease_token OPERATOR(pg_catalog.=) token $$;
COMMENT ON FUNCTION _held_by(timestamptz, uuid, uuid) IS
'Internal: whether the claim that took this token may still settle or release the delivery.';

CREATE FUNCTION delivery_state(status text, locked_until timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN webhook_outbox._leased(locked_until) THEN 'sending'::pg_catalog.text ELSE status END $$;
COMMENT ON FUNCTION delivery_state(text, timestamptz) IS
'The status operators see: a pending or retry delivery under a live lease is sending; once its lease has run out it is due again. '
'Usage: delivery_state(d.status, d.locked_until).';
COMMENT ON COLUMN deliveries.flag_key IS 'The rollout flag emit() checked before writing this row (feature_flags.flag_key, not a foreign key); NULL = none.';

CREATE TABLE attempts (
    delivery_id   bigint NOT NULL,
    attempt_no    integer NOT NULL,
    endpoint_id   bigint NOT NULL,
    attempted_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms   integer,
    status_code   integer,
    error         text,
    response_body text,
    failure_class text,
    remote_addr   inet
);
-- A log: no key of its own (attempt numbers restart when a dead letter is
-- requeued) and no foreign key (a per-row RI check would cost more than the
-- insert; cleanup() removes attempts with their delivery).
CREATE INDEX attempts_delivery_idx ON attempts (delivery_id, attempt_no);
-- Append-only in time order: BRIN serves the last-hour/last-day views at a fraction of a btree's upkeep.
CREATE INDEX attempts_time_brin ON attempts USING brin (attempted_at);
COMMENT ON TABLE attempts IS 'One row per HTTP attempt: when, how long, status or error, why it failed, the address it went to, first bytes of the response.';
COMMENT ON COLUMN attempts.failure_class IS
'Why it failed; NULL for a success: timeout, dns, connect (refused, unreachable, connect_timeout), tls, policy (refused by the '
'SSRF guard or allow_http), invalid_request, connection (broken before a complete response), invalid_response, http_status, '
'redirect (never followed), response_body. An external worker''s report: the class it names (record_attempt(failure_class => ...)), '
'else http_status, redirect or connection.';
COMMENT ON COLUMN attempts.remote_addr IS 'The address the request was sent to (after DNS and the SSRF check); NULL when no connection was made or an external worker reported it.';

CREATE TABLE health_metrics (
    webhook_id            bigint PRIMARY KEY REFERENCES endpoints (id) ON DELETE CASCADE,
    total_deliveries      bigint NOT NULL DEFAULT 0,
    successful_deliveries bigint NOT NULL DEFAULT 0,
    failed_deliveries     bigint NOT NULL DEFAULT 0,
    consecutive_failures  integer NOT NULL DEFAULT 0,
    avg_response_time_ms  double precision,
    last_status_code      integer,
    last_success_at       timestamptz,
    last_failure_at       timestamptz,
    last_error            text,
    health_status         text NOT NULL DEFAULT 'healthy'
                          CHECK (health_status IN ('healthy', 'degraded', 'unavailable')),
    circuit_state         text NOT NULL DEFAULT 'closed'
                          CHECK (circuit_state IN ('closed', 'open', 'half_open')),
    circuit_opened_at     timestamptz,
    circuit_probe_until   timestamptz,
    failing_since         timestamptz,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE health_metrics IS 'Per endpoint: counters, EWMA response time, health status and circuit breaker state.';
COMMENT ON COLUMN health_metrics.avg_response_time_ms IS 'Exponentially weighted moving average (alpha 0.2).';
COMMENT ON COLUMN health_metrics.circuit_state IS 'closed: deliveries flow. open: none until circuit_open_seconds pass. half_open: one probe in flight.';
COMMENT ON COLUMN health_metrics.failing_since IS 'The first failure since the last success; NULL after a success. Past webhook_outbox.auto_disable_after the endpoint is disabled.';
COMMENT ON COLUMN health_metrics.circuit_probe_until IS 'half_open: when the probe''s lease ends; another probe may go then if it brought no result.';
COMMENT ON COLUMN health_metrics.webhook_id IS 'The endpoint (endpoints.id). The name predates endpoint_id; it is not the webhook-id header, which carries the event id.';

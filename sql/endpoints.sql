-- Endpoints and their lifecycle. create_endpoint() and update_endpoint() are
-- Rust (src/api/endpoints.rs): their checks need the URL policy and the
-- secret format of the delivery code. Disabling, enabling, deleting and the
-- audit trail are here.

COMMENT ON FUNCTION create_endpoint(text, text, text[], text, double precision, integer, jsonb, text, text) IS
'Register a webhook receiver; returns its id (the webhook id). The URL must be https (or http while webhook_outbox.allow_http is on), '
'without credentials. A signing secret (whsec_...) is generated when not given. retry_schedule (e.g. ''1m,10m,1h''): its own delays '
'between retries instead of webhook_outbox.retry_schedule, and one more attempt than its steps unless max_attempts is given. '
'signing: v1 (HMAC-SHA256 with a whsec_ secret, the default) or v1a (ed25519 with a whsk_ key; receivers verify with the '
'whpk_ public key from public_keys()).';
-- The statement that calls it holds the secret, header values and the URL
-- (often a credential itself); on an ERROR the server would log that text
-- (log_min_error_statement = error by default). The error message itself
-- names no value.
ALTER FUNCTION create_endpoint(text, text, text[], text, double precision, integer, jsonb, text, text)
    SET log_min_error_statement = panic;

COMMENT ON FUNCTION update_endpoint(bigint, text, text, text[], double precision, integer, jsonb, text[], text) IS
'Change an endpoint with create_endpoint()''s checks: the arguments given change, NULL ones stay; reset names fields to put back '
'to their defaults (name, event_types: all types, rate_limit_rps, max_attempts and retry_schedule: the settings, headers: none). '
'Returns whether anything changed. The signing secret is not changed here. emit() sees the change at its next call; '
'deliveries already queued keep their max_attempts. Audited in endpoint_changes.';
ALTER FUNCTION update_endpoint(bigint, text, text, text[], double precision, integer, jsonb, text[], text)
    SET log_min_error_statement = panic;

-- emit() caches where each event type goes (src/api/routes.rs): any change
-- of the endpoints makes this session read them again at once, every other
-- session once it commits.
CREATE TRIGGER endpoints_changed
AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON endpoints
FOR EACH STATEMENT EXECUTE FUNCTION _endpoints_changed();

-- An endpoint enabled again has deliveries waiting: wake the worker at
-- commit, as a commit that queued them would.
CREATE TRIGGER endpoints_enabled
AFTER UPDATE OF enabled ON endpoints
FOR EACH STATEMENT EXECUTE FUNCTION _wake_trigger();

-- The audit trail (endpoint_changes): one row per change of an endpoint, from
-- the management functions or a direct UPDATE alike. What an endpoint looks
-- like there: no secret, no header values, the URL cut to its origin.
CREATE FUNCTION _endpoint_audit_value(e endpoints) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
    SELECT to_jsonb(e) - '{secret,retired_secrets,headers,url,updated_at,updated_by}'::text[]
           || jsonb_build_object('url', _url_origin(e.url),
                                 'header_names', (SELECT coalesce(jsonb_agg(k ORDER BY k), '[]')
                                                  FROM jsonb_object_keys(e.headers) k))
$$;
COMMENT ON FUNCTION _endpoint_audit_value(endpoints) IS
'Internal: an endpoint as the audit trail records it: no secret, header names without values, the URL''s scheme, host and port.';

-- SECURITY DEFINER: a role allowed to UPDATE endpoints directly is audited
-- without being able to write the audit trail itself.
CREATE FUNCTION _endpoints_audit() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
DECLARE
    operation text;
    changed text[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO endpoint_changes (endpoint_id, operation, old_value)
        SELECT e.id, 'purge', _endpoint_audit_value(e) FROM endpoints e;
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        IF _restored(NEW.updated_at) THEN
            RETURN NULL;
        END IF;
        operation := 'create';
    ELSIF TG_OP = 'DELETE' THEN
        operation := 'purge';
    ELSE
        SELECT array_agg(n.key ORDER BY n.key) INTO changed
        FROM jsonb_each(to_jsonb(NEW)) n
        WHERE n.value IS DISTINCT FROM to_jsonb(OLD) -> n.key
          AND n.key NOT IN ('updated_at', 'updated_by');
        IF changed IS NULL THEN
            RETURN NULL;
        END IF;
        operation := CASE WHEN NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL THEN 'delete'
                          WHEN OLD.enabled AND NOT NEW.enabled THEN 'disable'
                          WHEN NEW.enabled AND NOT OLD.enabled THEN 'enable'
                          WHEN NEW.secret IS DISTINCT FROM OLD.secret THEN 'rotate_secret'
                          ELSE 'update' END;
    END IF;
    INSERT INTO endpoint_changes (endpoint_id, operation, changed, reason, old_value, new_value)
    VALUES (coalesce(NEW.id, OLD.id), operation, changed,
            CASE WHEN operation IN ('disable', 'delete') THEN NEW.disabled_reason END,
            CASE WHEN TG_OP <> 'INSERT' THEN _endpoint_audit_value(OLD) END,
            CASE WHEN TG_OP <> 'DELETE' THEN _endpoint_audit_value(NEW) END);
    -- Whoever disabled it (a 410, auto_disable_after, an operator), operators hear of it.
    IF operation = 'disable' THEN
        INSERT INTO operational_events (event_type, endpoint_id, data)
        VALUES ('endpoint.disabled', NEW.id, jsonb_build_object('reason', NEW.disabled_reason));
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION _endpoints_audit() IS 'Trigger: writes the endpoint_changes row of each change of an endpoint.';
CREATE TRIGGER endpoints_audit
AFTER INSERT OR UPDATE OR DELETE ON endpoints
FOR EACH ROW EXECUTE FUNCTION _endpoints_audit();
-- BEFORE: the rows are gone afterwards.
CREATE TRIGGER endpoints_truncated
BEFORE TRUNCATE ON endpoints
FOR EACH STATEMENT EXECUTE FUNCTION _endpoints_audit();

-- The endpoint, locked for the caller's change, or an error naming it.
-- A deleted endpoint cannot be changed any more. FOR NO KEY UPDATE, which
-- the foreign key's share lock does not wait for: an operator's open
-- transaction never holds back enqueue() or the worker's intake moves.
CREATE FUNCTION _lock_endpoint(endpoint_id bigint) RETURNS endpoints
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
DECLARE
    e endpoints;
BEGIN
    IF endpoint_id IS NULL THEN
        RAISE EXCEPTION 'endpoint_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO e FROM endpoints x WHERE x.id = _lock_endpoint.endpoint_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint % does not exist', endpoint_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'List endpoints with SELECT webhook_id, name, url FROM webhook_outbox.v_webhook_health_dashboard.';
    END IF;
    IF e.deleted_at IS NOT NULL THEN
        RAISE EXCEPTION 'endpoint % was deleted at %', endpoint_id, e.deleted_at
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'A deleted endpoint cannot be changed; create a new one with webhook_outbox.create_endpoint(url).';
    END IF;
    RETURN e;
END
$$;
COMMENT ON FUNCTION _lock_endpoint(bigint) IS
'Internal: locks and returns an endpoint; undefined_object when there is none, object_not_in_prerequisite_state when it was deleted.';

CREATE FUNCTION disable_endpoint(endpoint_id bigint, reason text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
DECLARE
    e endpoints;
BEGIN
    PERFORM _check_reason('reason', reason);
    e := _lock_endpoint(endpoint_id);
    IF e.enabled OR e.disabled_reason IS DISTINCT FROM reason THEN
        UPDATE endpoints x SET enabled = false, disabled_reason = reason WHERE x.id = e.id;
    END IF;
    RETURN e.enabled;
END
$$;
COMMENT ON FUNCTION disable_endpoint(bigint, text) IS
'Stop sending to an endpoint, with the reason operators see in v_degraded_webhooks. emit() no longer routes events to it; '
'its pending and retry deliveries wait (requests in flight finish) and go out once enable_endpoint() is called. '
'Returns false when it was already disabled (the reason is updated). Audited in endpoint_changes.';

CREATE FUNCTION enable_endpoint(endpoint_id bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
DECLARE
    e endpoints := _lock_endpoint(endpoint_id);
BEGIN
    IF e.enabled THEN
        RETURN false;
    END IF;
    -- The worker wakes at commit (trigger endpoints_enabled).
    UPDATE endpoints x SET enabled = true, disabled_reason = NULL WHERE x.id = e.id;
    -- A fresh count for auto_disable_after: its next failure must not
    -- disable it again at once.
    UPDATE health_metrics h SET failing_since = NULL WHERE h.webhook_id = e.id;
    -- What waited goes now, retries included: the operator says the receiver
    -- is back. The circuit breaker still admits one probe first if it is open.
    -- Each kind from its own range of the due index (endpoint_id, status,
    -- next_attempt_at): only the rows waiting for later are read.
    UPDATE deliveries d SET next_attempt_at = now()
    FROM (VALUES ('pending'::text), ('retry'::text)) k (status)
    WHERE d.endpoint_id = e.id AND d.status = k.status AND d.next_attempt_at > now()
      AND (d.locked_until IS NULL OR NOT _leased(d.locked_until));
    RETURN true;
END
$$;
COMMENT ON FUNCTION enable_endpoint(bigint) IS
'Send to a disabled endpoint again: its waiting deliveries are due at once (an open circuit still admits one probe first), '
'and emit() routes events to it again. Returns false when it was already enabled. Audited in endpoint_changes.';

CREATE FUNCTION delete_endpoint(endpoint_id bigint, dead_reason text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
DECLARE
    e endpoints := _lock_endpoint(endpoint_id);
    undelivered bigint;
BEGIN
    IF dead_reason IS NOT NULL THEN
        PERFORM _check_reason('dead_reason', dead_reason);
    END IF;
    -- emit()'s events still in the intake become its deliveries first, so
    -- that they are counted (and made dead) like the rest: their rows locked
    -- before the endpoint, in the order the worker's move takes them (it
    -- holds intake rows, then waits on the endpoint through the foreign key).
    -- Then FOR UPDATE: enqueue() and the worker's move wait for this delete,
    -- and then find the endpoint gone (_routes). An event emitted after this
    -- point finds it gone as well, as if emitted after the commit.
    PERFORM _move_intake(ARRAY(SELECT i.id FROM intake i WHERE e.id = ANY (i.endpoint_ids) ORDER BY i.id FOR UPDATE));
    PERFORM FROM endpoints x WHERE x.id = e.id FOR UPDATE;
    SELECT count(*) INTO undelivered
    FROM deliveries d WHERE d.endpoint_id = e.id AND d.status IN ('pending', 'retry');
    IF undelivered > 0 AND dead_reason IS NULL THEN
        RAISE EXCEPTION 'endpoint % still has % undelivered deliveries', e.id, undelivered
            USING ERRCODE = 'object_in_use',
                  HINT = 'Wait until they are sent, or make them dead letters: delete_endpoint(endpoint_id, dead_reason => ''why'').';
    END IF;
    -- Requests in flight are not waited for: they may still reach the
    -- receiver, but their results are no longer recorded.
    UPDATE deliveries d
    SET status = 'dead', dead_at = now(), locked_until = NULL, last_error = 'endpoint deleted: ' || dead_reason
    WHERE d.endpoint_id = e.id AND d.status IN ('pending', 'retry');
    UPDATE endpoints x
    SET enabled = false, deleted_at = now(), name = NULL,
        disabled_reason = 'deleted' || coalesce(': ' || dead_reason, '')
    WHERE x.id = e.id;
    RETURN undelivered;
END
$$;
COMMENT ON FUNCTION delete_endpoint(bigint, text) IS
'Remove an endpoint: nothing more is sent to it (requests already in flight finish, unrecorded), emit() and enqueue() no longer know it, and its name is free. '
'Refused while it has pending or retry deliveries (emit()''s events not yet routed included), unless dead_reason is given: '
'they then become dead letters with that reason. Its history stays until retention removes it. Returns the deliveries made dead. '
'Audited in endpoint_changes.';

-- A rotation, once rotate_secret() (src/api/endpoints.rs) has checked or
-- made the new secret: the old one keeps signing for the overlap (none when
-- it is zero), beside those of earlier rotations still in theirs; at most
-- four, the newest.
CREATE FUNCTION _rotate_secret(endpoint_id bigint, new_secret text, overlap interval) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
    UPDATE endpoints e
    SET secret = _rotate_secret.new_secret, retired_secrets = k.secrets, retired_until = k.until
    FROM endpoints x
    CROSS JOIN LATERAL (
        SELECT array_agg(r.secret ORDER BY r.valid_until DESC) AS secrets,
               array_agg(r.valid_until ORDER BY r.valid_until DESC) AS until
        FROM (SELECT r.secret, r.valid_until
              FROM (SELECT x.secret, now() + _rotate_secret.overlap AS valid_until
                    WHERE _rotate_secret.overlap > interval '0'
                    UNION ALL
                    SELECT * FROM _retired_secrets(x)) r
              ORDER BY r.valid_until DESC
              LIMIT 4) r
    ) k
    WHERE e.id = x.id AND x.id = _rotate_secret.endpoint_id
$$;
COMMENT ON FUNCTION _rotate_secret(bigint, text, interval) IS
'Internal: make new_secret the endpoint''s signing secret, the old one signing too for the overlap (see rotate_secret()).';

COMMENT ON FUNCTION rotate_secret(bigint, text, interval) IS
'Replace an endpoint''s signing secret. During the overlap (24 hours by default; 0 for none) every request carries a signature '
'from the old secret as well, space-separated in webhook-signature, so a receiver holding either verifies it; at most four old '
'secrets sign at once. new_secret: whsec_... (HMAC, v1) or whsk_... (ed25519, v1a); generated of the current kind when NULL. '
'Returns what the receiver needs: the new whsec_ secret, or for ed25519 the whpk_ public key. Audited in endpoint_changes (without the secret).';
ALTER FUNCTION rotate_secret(bigint, text, interval) SET log_min_error_statement = panic;

CREATE FUNCTION public_keys(endpoint_id bigint)
RETURNS TABLE (public_key text, valid_until timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
    SELECT _public_key(k.secret), k.valid_until
    FROM endpoints e
    CROSS JOIN LATERAL (SELECT e.secret, NULL::timestamptz AS valid_until
                        UNION ALL
                        SELECT * FROM _retired_secrets(e)) k
    WHERE e.id = public_keys.endpoint_id AND e.deleted_at IS NULL AND _public_key(k.secret) IS NOT NULL
$$;
COMMENT ON FUNCTION public_keys(bigint) IS
'The whpk_ public keys that verify an ed25519 (v1a) endpoint''s requests: the current one (valid_until NULL), and those of a '
'rotation still in its overlap. None for an HMAC (whsec_) endpoint: its secret is all a receiver needs.';

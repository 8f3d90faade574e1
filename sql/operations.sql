-- Operational events: what operators learn without polling. Each is a row
-- here, a NOTIFY on the channel webhook_outbox_events at commit, and, when
-- webhook_outbox.operations_endpoint names an endpoint, a webhook to it sent
-- through the outbox and signed like any other. Written by the settle
-- (src/settle: failing, recovered, circuit opened or closed, a delivery
-- exhausted) and by the endpoint audit (disabled: 410, auto-disable, an
-- operator).
CREATE TABLE operational_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_type  text NOT NULL CHECK (event_type IN ('endpoint.failing', 'endpoint.recovered', 'endpoint.disabled',
                                                    'delivery.exhausted', 'circuit.opened', 'circuit.closed')),
    endpoint_id bigint NOT NULL,
    delivery_id bigint,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    data        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX operational_events_time_brin ON operational_events USING brin (occurred_at);
COMMENT ON TABLE operational_events IS
'What happened to endpoints and deliveries that operators should know: endpoint.failing (after webhook_outbox.failing_after '
'consecutive failures), endpoint.recovered (its first success after that), endpoint.disabled (410 Gone, auto_disable_after, '
'an operator), delivery.exhausted (a delivery went dead), circuit.opened, circuit.closed. Each is also a NOTIFY on '
'webhook_outbox_events and, with webhook_outbox.operations_endpoint set, a webhook to that endpoint.';
COMMENT ON COLUMN operational_events.data IS
'Details: the failure count, status and error (failing, exhausted), the reason (disabled), the event (exhausted). Never a secret.';

-- The JSON an event is published as: the webhook's body. The NOTIFY payload
-- leaves out data: any role may LISTEN, so it carries only what names the
-- event; its details are in the table, for those granted it.
CREATE FUNCTION _operational_json(e operational_events) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
    SELECT jsonb_build_object('id', e.id, 'type', e.event_type, 'endpoint_id', e.endpoint_id,
                              'delivery_id', e.delivery_id, 'occurred_at', e.occurred_at, 'data', e.data)
$$;
COMMENT ON FUNCTION _operational_json(operational_events) IS 'Internal: an operational event as published (the webhook body; the NOTIFY payload without data).';

-- Published once per statement, for all its rows: the NOTIFYs go at commit;
-- the webhooks are deliveries like any other (event_id op_<id>, so each is
-- sent once). Events about the operations endpoint itself are not sent to it:
-- its own failures would otherwise feed themselves. Rows a restore brings
-- back (_restored) were published when they happened.
CREATE FUNCTION _operational_events_published() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
DECLARE
    target bigint := nullif(_setting('operations_endpoint')::bigint, 0);
    sending text := _setting('mode');
BEGIN
    PERFORM pg_notify('webhook_outbox_events', (_operational_json(n) - 'data')::text)
    FROM published n WHERE NOT _restored(n.occurred_at) ORDER BY n.id;
    IF target IS NULL OR sending = 'off' THEN
        RETURN NULL;
    END IF;
    -- The operations endpoint locked as enqueue() locks it, but never waited
    -- for: this runs inside the worker's settle, which must not stall on an
    -- operator's open transaction. Held (or deleted): no webhook this time;
    -- the event stays in the table and was NOTIFYed.
    PERFORM FROM endpoints x
    WHERE x.id = target AND x.deleted_at IS NULL
    FOR KEY SHARE SKIP LOCKED;
    IF FOUND THEN
        INSERT INTO deliveries (endpoint_id, event_id, event_type, payload, status, max_attempts)
        SELECT r.endpoint_id, 'op_' || n.id, n.event_type, _operational_json(n),
               CASE sending WHEN 'on' THEN 'pending' ELSE 'shadow' END, r.max_attempts
        FROM published n
        CROSS JOIN LATERAL _routes(target, n.event_type, NULL) r
        WHERE n.endpoint_id <> target AND NOT _restored(n.occurred_at)
        ORDER BY n.id
        ON CONFLICT ON CONSTRAINT deliveries_endpoint_id_event_id_key DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION _operational_events_published() IS
'Trigger: NOTIFY webhook_outbox_events for each new operational event, and queue it for webhook_outbox.operations_endpoint.';
CREATE TRIGGER operational_events_published
AFTER INSERT ON operational_events
REFERENCING NEW TABLE AS published
FOR EACH STATEMENT EXECUTE FUNCTION _operational_events_published();

-- The INSERT into the outbox of enqueue() and backfill() (src/api/events.rs):
-- one event, written for every endpoint _routes() names for it, with the
-- status the mode gives; an event already in the outbox for an endpoint (same
-- event_id) is left as it is. Each endpoint is locked (as the foreign key
-- would) and checked again once locked: after a delete_endpoint() this
-- waited for, there is nothing to write to. Returns the ids created.
-- $1: the endpoint named, NULL to fan out; $2: event_id; $3: event_type;
-- $4: payload; $5: subject_id; $6: status; $7: rollout flag; $8: max_attempts
-- override. Planned once per session as a generic plan.
INSERT INTO webhook_outbox.deliveries AS d
    (endpoint_id, event_id, event_type, payload, subject_id, status, max_attempts, flag_key)
SELECT r.endpoint_id, $2, $3, $4, $5, $6, r.max_attempts, $7
FROM webhook_outbox._routes($1, $3, $8) r
WHERE EXISTS (SELECT FROM webhook_outbox.endpoints x
              WHERE x.id OPERATOR(pg_catalog.=) r.endpoint_id AND x.deleted_at IS NULL
              FOR KEY SHARE)
ON CONFLICT ON CONSTRAINT deliveries_endpoint_id_event_id_key DO NOTHING
RETURNING d.id

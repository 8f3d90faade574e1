-- emit()'s one statement (src/api/events.rs): the event into the intake,
-- with the endpoints it goes to (src/api/routes.rs); the worker makes one
-- delivery per endpoint of it (_route_intake). Planned once per session.
-- $1: endpoint ids; $2: event_id; $3: event_type; $4: payload;
-- $5: subject_id; $6: status; $7: rollout flag.
INSERT INTO webhook_outbox.intake (endpoint_ids, event_id, event_type, payload, subject_id, status, flag_key)
VALUES ($1, $2, $3, $4, $5, $6, $7)

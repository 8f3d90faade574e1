-- Move up to $1 of emit()'s events from the intake into deliveries: the
-- worker, in a transaction of its own, and run_once(), before its claim.
-- Returns the events moved.
SELECT webhook_outbox._route_intake($1::pg_catalog.int4)

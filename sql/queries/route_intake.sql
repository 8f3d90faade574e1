-- Move up to $1 of emit()'s events from the intake into deliveries (a claim
-- does it first; the worker runs this while the mode is not on). Returns the
-- events moved.
SELECT webhook_outbox._route_intake($1::pg_catalog.int4)

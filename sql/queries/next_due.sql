-- Milliseconds until the next claim may find something (NULL: nothing waits).
SELECT webhook_outbox._ms_until(webhook_outbox._next_due())

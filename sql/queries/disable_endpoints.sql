-- Disable endpoints $1 with reasons $2 (the first for an endpoint listed
-- twice): a 410 Gone, or failing for webhook_outbox.auto_disable_after.
-- Rows another session holds are skipped, never waited for. Returns those of
-- $1 that are disabled now (by this statement or before it).
WITH disabled AS (
    UPDATE webhook_outbox.endpoints e
    SET enabled = false, disabled_reason = u.reason
    FROM (SELECT DISTINCT ON (r.id) r.id, r.reason
          FROM unnest($1::bigint[], $2::pg_catalog.text[]) WITH ORDINALITY AS r(id, reason, n)
          ORDER BY r.id, r.n) u
    WHERE e.id OPERATOR(pg_catalog.=) u.id
      AND e.id OPERATOR(pg_catalog.=) ANY (ARRAY(
          SELECT x.id FROM webhook_outbox.endpoints x
          WHERE x.id OPERATOR(pg_catalog.=) ANY ($1::bigint[]) AND x.enabled
          ORDER BY x.id
          FOR NO KEY UPDATE SKIP LOCKED))
    RETURNING e.id
)
SELECT d.id FROM disabled d
UNION
SELECT x.id FROM webhook_outbox.endpoints x
WHERE x.id OPERATOR(pg_catalog.=) ANY ($1::bigint[]) AND NOT x.enabled

-- The installed extension's oid, if the schema the worker calls into is its
-- own: `webhook_outbox` is in pg_extension, its schema is that extension's
-- (pg_depend), owned by the extension's owner or a superuser and closed to
-- everyone else's CREATE (as CREATE EXTENSION requires, sql/schema.sql), and
-- the claim function is a member of it. A schema of that name that another role created, in a database
-- without the extension or after DROP EXTENSION, is never called.
SELECT (
    SELECT x.oid FROM pg_catalog.pg_extension x
    JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) x.extnamespace
    JOIN pg_catalog.pg_roles o ON o.oid OPERATOR(pg_catalog.=) n.nspowner
    WHERE x.extname OPERATOR(pg_catalog.=) 'webhook_outbox'::pg_catalog.name
      AND n.nspname OPERATOR(pg_catalog.=) 'webhook_outbox'::pg_catalog.name
      AND (n.nspowner OPERATOR(pg_catalog.=) x.extowner OR o.rolsuper)
      -- The schema is the extension's.
      AND EXISTS (
          SELECT FROM pg_catalog.pg_depend s
          WHERE s.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
            AND s.objid OPERATOR(pg_catalog.=) x.oid
            AND s.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
            AND s.refobjid OPERATOR(pg_catalog.=) n.oid)
      -- The claim function is a member of it.
      AND EXISTS (
          SELECT FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_depend m
            ON m.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
           AND m.objid OPERATOR(pg_catalog.=) p.oid
           AND m.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
           AND m.refobjid OPERATOR(pg_catalog.=) x.oid
           AND m.deptype OPERATOR(pg_catalog.=) 'e'::pg_catalog."char"
          WHERE p.pronamespace OPERATOR(pg_catalog.=) n.oid
            AND p.proname OPERATOR(pg_catalog.=) '_claim'::pg_catalog.name)
      -- No one but superusers may create objects in the schema.
      AND NOT EXISTS (
          SELECT FROM pg_catalog.aclexplode(n.nspacl) a
          LEFT JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) a.grantee
          WHERE a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'::pg_catalog.text
            AND (a.grantee OPERATOR(pg_catalog.=) 0::pg_catalog.oid OR NOT r.rolsuper)))

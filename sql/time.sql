-- Time conversions for the statements Rust runs (sql/queries/, the settle
-- and the worker), where times travel as Unix milliseconds.
-- Plain SQL without a SET clause, so that they are inlined: an inlined body
-- is parsed under the caller's search_path, so every function, operator and
-- type in them is qualified (type names that are SQL keywords, like bigint
-- and interval, always mean pg_catalog's). Any timestamp,
-- infinite ones included, converts without an error: a row a less careful
-- role wrote must not stop the worker's transactions.
CREATE FUNCTION _epoch_ms(t timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    -- Infinity compares like any other float8; 1e18 ms is 30 million years.
    SELECT pg_catalog.round(GREATEST(LEAST(pg_catalog.date_part('epoch', t) OPERATOR(pg_catalog.*) 1000::pg_catalog.float8,
                                           1e18::pg_catalog.float8), '-1e18'::pg_catalog.float8))::bigint
$$;
COMMENT ON FUNCTION _epoch_ms(timestamptz) IS 'Internal: Unix milliseconds of a timestamp, infinities clamped to +-1e18.';

CREATE FUNCTION _from_epoch_ms(ms bigint) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    -- Clamped to the years 1970..9999: to_timestamp() raises an ERROR out of its range.
    SELECT pg_catalog.to_timestamp(GREATEST(LEAST(ms, 253402300799000::bigint), 0::bigint)::pg_catalog.float8
                                   OPERATOR(pg_catalog./) 1000::pg_catalog.float8)
$$;
COMMENT ON FUNCTION _from_epoch_ms(bigint) IS 'Internal: the timestamp of Unix milliseconds (clamped to 1970..9999).';

CREATE FUNCTION _after_ms(delay_ms bigint) RETURNS timestamptz
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
    SELECT pg_catalog.now() OPERATOR(pg_catalog.+)
           (LEAST(delay_ms, 315360000000::bigint)::pg_catalog.float8 OPERATOR(pg_catalog.*) interval '1 millisecond')
$$;
COMMENT ON FUNCTION _after_ms(bigint) IS 'Internal: now() plus a delay in milliseconds (capped at ten years).';

-- Milliseconds from now until t, within 0 .. one day (NULL stays NULL: nothing waits).
CREATE FUNCTION _ms_until(t timestamptz) RETURNS bigint
LANGUAGE sql VOLATILE STRICT
AS $$
    SELECT pg_catalog.round(pg_catalog.date_part('epoch',
               GREATEST(LEAST(t, c OPERATOR(pg_catalog.+) interval '1 day'), c) OPERATOR(pg_catalog.-) c)
           OPERATOR(pg_catalog.*) 1000::pg_catalog.float8)::bigint
    FROM (SELECT pg_catalog.clock_timestamp() AS c) now
$$;
COMMENT ON FUNCTION _ms_until(timestamptz) IS 'Internal: how long the worker may sleep until t, 0 .. one day.';


-- Endpoints: create_endpoint() is Rust (src/api/endpoints.rs): its checks need
-- the URL policy and the secret format of the delivery code.

COMMENT ON FUNCTION create_endpoint(text, text, text[], text, double precision, integer, jsonb) IS
'Register a webhook receiver; returns its id (the webhook id). The URL must be https (or http while webhook_outbox.allow_http is on), '
'without credentials. A signing secret (whsec_...) is generated when not given.';
-- The statement that calls it holds the secret, header values and the URL
-- (often a credential itself); on an ERROR the server would log that text
-- (log_min_error_statement = error by default). The error message itself
-- names no value.
ALTER FUNCTION create_endpoint(text, text, text[], text, double precision, integer, jsonb)
    SET log_min_error_statement = panic;

-- emit() caches where each event type goes (src/api/routes.rs): any change
-- of the endpoints makes this session read them again at once, every other
-- session once it commits.
CREATE TRIGGER endpoints_changed
AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON endpoints
FOR EACH STATEMENT EXECUTE FUNCTION _endpoints_changed();

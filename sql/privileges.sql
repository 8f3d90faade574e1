-- Loaded last. PUBLIC gets nothing: grant what each role needs (README, "Privileges").
-- The API functions are SECURITY DEFINER with a fixed search_path, so EXECUTE
-- on them is the whole capability; roles need no rights on the tables.
REVOKE ALL ON ALL TABLES IN SCHEMA webhook_outbox FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA webhook_outbox FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA webhook_outbox FROM PUBLIC;
-- Except the pure expressions the views call: function rights are the
-- reader's, so a role granted a view needs them.
GRANT EXECUTE ON FUNCTION delivery_state(text, timestamptz) TO PUBLIC;
GRANT EXECUTE ON FUNCTION _leased(timestamptz) TO PUBLIC;
GRANT EXECUTE ON FUNCTION _url_origin(text) TO PUBLIC;
-- And feature_flags.phase's: a generated column is computed with the rights
-- of the role writing the row.
GRANT EXECUTE ON FUNCTION _rollout_phase(boolean, integer) TO PUBLIC;

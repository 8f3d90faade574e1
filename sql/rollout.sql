-- Canary rollout flags: the flags, their audit trail, the management functions
-- and the status view. should_emit_event / rollout_decision are Rust
-- (src/rollout): they cache flags per backend, and the trigger below makes
-- every change reach those caches (this session at once, all at commit).

CREATE TABLE feature_flags (
    flag_key    text PRIMARY KEY CHECK (btrim(flag_key) <> ''),
    enabled     boolean NOT NULL DEFAULT true,
    percentage  integer NOT NULL DEFAULT 0 CHECK (percentage BETWEEN 0 AND 100),
    -- array_position(.., NULL) finds NULL elements: a list holds subjects only.
    allowlist   text[] NOT NULL DEFAULT '{}' CHECK (array_position(allowlist, NULL) IS NULL),
    denylist    text[] NOT NULL DEFAULT '{}' CHECK (array_position(denylist, NULL) IS NULL),
    salt        text CHECK (salt <> ''),
    description text,
    phase       text NOT NULL GENERATED ALWAYS AS (_rollout_phase(enabled, percentage)) STORED,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  name NOT NULL DEFAULT session_user
);
COMMENT ON TABLE feature_flags IS
'Rollout flags read by should_emit_event(): master switch, sticky percentage, allowlist and denylist. '
'Change them with set_rollout(), allowlist_add() & co. and disable_flag(); every change is audited in feature_flag_changes.';
COMMENT ON COLUMN feature_flags.enabled IS 'Master switch: false stops emission for everybody, allowlist included.';
COMMENT ON COLUMN feature_flags.percentage IS 'Share of subjects that emit: those whose bucket (0..99) is below it.';
COMMENT ON COLUMN feature_flags.allowlist IS 'Subjects that always emit while the flag is enabled.';
COMMENT ON COLUMN feature_flags.denylist IS 'Subjects that never emit; wins over the allowlist.';
COMMENT ON COLUMN feature_flags.salt IS
'NULL: bucket = first 8 hex digits of md5(subject_id) mod 100, the same bucket for a subject in every flag. '
'Otherwise md5(salt || '':'' || subject_id), so that flags need not pick the same subjects first. Fixed at creation.';
COMMENT ON COLUMN feature_flags.phase IS 'disabled | canary_2pct (<= 5%) | canary_10pct (<= 15%) | canary_50pct (<= 60%) | full_rollout.';
COMMENT ON COLUMN feature_flags.updated_by IS 'session_user of the last change (the login role: current_user is the extension owner inside the management functions).';

CREATE TABLE feature_flag_changes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flag_key   text NOT NULL,
    operation  text NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')),
    changed_at timestamptz NOT NULL DEFAULT now(),
    changed_by name NOT NULL DEFAULT session_user,
    old_value  jsonb,
    new_value  jsonb
);
CREATE INDEX feature_flag_changes_flag_idx ON feature_flag_changes (flag_key, changed_at);
COMMENT ON TABLE feature_flag_changes IS
'Audit trail of feature_flags: one row per changed flag, written by a trigger, so direct UPDATEs are recorded too.';
COMMENT ON COLUMN feature_flag_changes.changed_by IS 'session_user: the role that logged in.';
COMMENT ON COLUMN feature_flag_changes.old_value IS 'The row before the change as jsonb; NULL for INSERT.';
COMMENT ON COLUMN feature_flag_changes.new_value IS 'The row after the change as jsonb; NULL for DELETE and TRUNCATE.';

CREATE TRIGGER feature_flags_stamp
BEFORE INSERT OR UPDATE ON feature_flags
FOR EACH ROW EXECUTE FUNCTION _stamp();

-- SECURITY DEFINER, as the endpoints' audit: a role allowed to change
-- feature_flags directly is audited without being able to write the audit
-- trail itself.
CREATE FUNCTION _feature_flags_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO feature_flag_changes (flag_key, operation, old_value)
        SELECT f.flag_key, TG_OP, to_jsonb(f) FROM feature_flags f;
    ELSIF TG_OP = 'INSERT' AND _restored(NEW.updated_at) THEN
        NULL;
    ELSE
        INSERT INTO feature_flag_changes (flag_key, operation, old_value, new_value)
        VALUES (coalesce(NEW.flag_key, OLD.flag_key), TG_OP, to_jsonb(OLD), to_jsonb(NEW));
    END IF;
    PERFORM _rollout_changed();
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION _feature_flags_changed() IS
'Trigger: writes the audit row and invalidates the flag caches (this session now, every session at commit).';
CREATE TRIGGER feature_flags_changed
AFTER INSERT OR UPDATE OR DELETE ON feature_flags
FOR EACH ROW EXECUTE FUNCTION _feature_flags_changed();
-- BEFORE: the rows are gone afterwards.
CREATE TRIGGER feature_flags_truncated
BEFORE TRUNCATE ON feature_flags
FOR EACH STATEMENT EXECUTE FUNCTION _feature_flags_changed();

-- The flag, locked for the caller's update, or an error naming it.
CREATE FUNCTION _lock_flag(flag_key text) RETURNS feature_flags
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
DECLARE
    flag feature_flags;
BEGIN
    PERFORM _check_name('flag_key', _lock_flag.flag_key);
    SELECT * INTO flag FROM feature_flags f WHERE f.flag_key = _lock_flag.flag_key FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'feature flag "%" does not exist', _lock_flag.flag_key
            USING ERRCODE = 'undefined_object',
                  HINT = format('Create it with SELECT webhook_outbox.set_rollout(%L, 0);', _lock_flag.flag_key);
    END IF;
    RETURN flag;
END
$$;
COMMENT ON FUNCTION _lock_flag(text) IS 'Locks and returns a flag; undefined_object when there is none.';

CREATE FUNCTION set_rollout(
    flag_key text,
    percentage integer,
    enabled boolean DEFAULT true,
    description text DEFAULT NULL,
    salt text DEFAULT NULL
) RETURNS feature_flags
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
DECLARE
    result feature_flags;
BEGIN
    PERFORM _check_name('flag_key', set_rollout.flag_key);
    IF set_rollout.percentage IS NULL THEN
        RAISE EXCEPTION 'percentage must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Give 0 to 100; 0 keeps the flag but admits only the allowlist.';
    END IF;
    IF set_rollout.percentage NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'percentage must be between 0 and 100, got %', set_rollout.percentage
            USING ERRCODE = 'invalid_parameter_value', HINT = 'It is the share of subjects that emit, e.g. 2, 10, 50, 100.';
    END IF;
    IF set_rollout.enabled IS NULL THEN
        RAISE EXCEPTION 'enabled must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Switch a flag off with webhook_outbox.disable_flag(flag_key).';
    END IF;
    IF set_rollout.salt IS NOT NULL THEN
        PERFORM _check_name('salt', set_rollout.salt);
    END IF;

    INSERT INTO feature_flags AS f (flag_key, percentage, enabled, description, salt)
    VALUES (set_rollout.flag_key, set_rollout.percentage, set_rollout.enabled, set_rollout.description, set_rollout.salt)
    ON CONFLICT ON CONSTRAINT feature_flags_pkey DO UPDATE
    SET percentage  = EXCLUDED.percentage,
        enabled     = EXCLUDED.enabled,
        description = coalesce(EXCLUDED.description, f.description)
    RETURNING f.* INTO result;
    -- Raised after the upsert so that the check and the write see the same row.
    IF result.salt IS DISTINCT FROM coalesce(set_rollout.salt, result.salt) THEN
        RAISE EXCEPTION 'the salt of feature flag "%" cannot change', set_rollout.flag_key
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'A new salt reshuffles which subjects are in the rollout: create a new flag instead, or pass salt => NULL.';
    END IF;
    RETURN result;
END
$$;
COMMENT ON FUNCTION set_rollout(text, integer, boolean, text, text) IS
'Create or update a flag: percentage 0..100 of subjects emit, enabled (default true) is the master switch. '
'description NULL keeps the current one; salt is set only when the flag is created (NULL = unsalted: md5(subject_id)). Returns the flag.';

CREATE FUNCTION _edit_list(flag_key text, subject_id text, list_name text, adding boolean) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
DECLARE
    flag feature_flags := _lock_flag(_edit_list.flag_key);
    members text[];
BEGIN
    PERFORM _check_name('subject_id', _edit_list.subject_id);
    members := CASE list_name WHEN 'allowlist' THEN flag.allowlist ELSE flag.denylist END;
    IF (_edit_list.subject_id = ANY (members)) = adding THEN
        RETURN false;  -- nothing to do: no write, no audit row
    END IF;
    IF adding AND list_name = 'allowlist' AND _edit_list.subject_id = ANY (flag.denylist) THEN
        RAISE NOTICE 'subject "%" is also on the denylist of "%", which takes precedence', _edit_list.subject_id, _edit_list.flag_key;
    END IF;
    members := CASE WHEN adding THEN array_append(members, _edit_list.subject_id)
                    ELSE array_remove(members, _edit_list.subject_id) END;
    UPDATE feature_flags f
    SET allowlist = CASE list_name WHEN 'allowlist' THEN members ELSE f.allowlist END,
        denylist  = CASE list_name WHEN 'denylist' THEN members ELSE f.denylist END
    WHERE f.flag_key = _edit_list.flag_key;
    RETURN true;
END
$$;
COMMENT ON FUNCTION _edit_list(text, text, text, boolean) IS
'Adds a subject to (or removes it from) a flag''s allowlist or denylist; true if the list changed.';

CREATE FUNCTION allowlist_add(flag_key text, subject_id text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$ SELECT _edit_list(flag_key, subject_id, 'allowlist', true) $$;
COMMENT ON FUNCTION allowlist_add(text, text) IS
'Always emit for this subject while the flag is enabled (unless it is on the denylist). True if added, false if already there.';

CREATE FUNCTION allowlist_remove(flag_key text, subject_id text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$ SELECT _edit_list(flag_key, subject_id, 'allowlist', false) $$;
COMMENT ON FUNCTION allowlist_remove(text, text) IS 'Take a subject off the allowlist. True if removed, false if it was not there.';

CREATE FUNCTION denylist_add(flag_key text, subject_id text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$ SELECT _edit_list(flag_key, subject_id, 'denylist', true) $$;
COMMENT ON FUNCTION denylist_add(text, text) IS
'Never emit for this subject, whatever the percentage or allowlist. True if added, false if already there.';

CREATE FUNCTION denylist_remove(flag_key text, subject_id text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$ SELECT _edit_list(flag_key, subject_id, 'denylist', false) $$;
COMMENT ON FUNCTION denylist_remove(text, text) IS 'Take a subject off the denylist. True if removed, false if it was not there.';

CREATE FUNCTION disable_flag(flag_key text) RETURNS feature_flags
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, webhook_outbox, pg_temp
AS $$
DECLARE
    result feature_flags;
BEGIN
    PERFORM _lock_flag(disable_flag.flag_key);
    UPDATE feature_flags f SET enabled = false WHERE f.flag_key = disable_flag.flag_key RETURNING f.* INTO result;
    RETURN result;
END
$$;
COMMENT ON FUNCTION disable_flag(text) IS
'Emergency rollback: switch the flag off. Once committed, should_emit_event() returns false in every session from its next call. '
'Percentage and lists are kept; set_rollout() switches it back on.';

CREATE VIEW v_rollout_status AS
SELECT f.flag_key,
       f.enabled,
       f.percentage,
       f.phase,
       cardinality(f.allowlist) AS allowlist_size,
       cardinality(f.denylist)  AS denylist_size,
       e.events_last_hour,
       e.events_last_24h,
       f.description,
       f.updated_at             AS last_changed_at,
       f.updated_by             AS last_changed_by
FROM feature_flags f
CROSS JOIN LATERAL (
    -- One event fans out to a row per endpoint: count events, not rows.
    SELECT count(DISTINCT d.event_id) FILTER (WHERE d.created_at >= now() - interval '1 hour') AS events_last_hour,
           count(DISTINCT d.event_id)                                                           AS events_last_24h
    FROM deliveries d
    WHERE d.flag_key = f.flag_key AND d.created_at >= now() - interval '24 hours'
) e
ORDER BY f.flag_key;
COMMENT ON VIEW v_rollout_status IS
'Per flag: switch, percentage, phase, list sizes, events emitted under the flag in the last hour and 24 hours, last change and who made it.';

COMMENT ON FUNCTION should_emit_event(text, text) IS
'Whether subject_id gets events under the flag: unknown flag or disabled -> false; denylist -> false; allowlist -> true; '
'otherwise true iff bucket < percentage (a NULL subject: only at 100%). Sticky per subject. '
'Cached per session; a committed flag change is seen at the next call.';
COMMENT ON FUNCTION rollout_decision(text, text) IS
'should_emit_event() with its reason (unknown_flag, disabled, denylist, allowlist, percentage) '
'and the subject''s bucket 0..99 when the percentage decided.';
COMMENT ON FUNCTION _rollout_phase(boolean, integer) IS 'The phase name of a flag, for feature_flags.phase.';
COMMENT ON FUNCTION _rollout_changed() IS
'Invalidates this session''s caches of flags and routes now and, at commit, every session''s. Called by the feature_flags trigger.';

-- A session may still cache flags or routes of an earlier install of the extension
-- (DROP EXTENSION fires no trigger): make it reload once this commits.
SELECT _rollout_changed();

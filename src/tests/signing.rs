//! Signing secrets: v1 (HMAC) and v1a (ed25519) endpoints, rotate_secret()
//! and public_keys(). What receivers verify is in pgrx-tests/tests/signing.rs.

use super::{assert_fails, endpoint, one, run};
use pgrx::prelude::*;

fn secret(id: i64) -> String {
    one(&format!(
        "SELECT secret FROM webhook_outbox.endpoints WHERE id = {id}"
    ))
}

/// `secret-prefix@seconds-left` of each old secret that still signs.
fn retired(id: i64) -> Vec<String> {
    super::column(&format!(
        "SELECT left(r.secret, 5) || '@' || extract(epoch FROM r.valid_until - now())::bigint
         FROM webhook_outbox.endpoints e, webhook_outbox._retired_secrets(e) r WHERE e.id = {id}"
    ))
}

#[pg_test(schema = "tests")]
fn rotate_secret_keeps_the_old_one_signing_for_the_overlap() {
    let id = endpoint("");
    let old = secret(id);
    let new = one::<String>(&format!("SELECT webhook_outbox.rotate_secret({id})"));
    assert!(new.starts_with("whsec_") && new != old, "{new}");
    assert_eq!(secret(id), new, "returned: the secret the receiver needs");
    assert_eq!(retired(id), ["whsec@86400"]);
    assert_eq!(
        one::<String>(&format!(
            "SELECT retired_secrets[1] FROM webhook_outbox.endpoints WHERE id = {id}"
        )),
        old
    );
    // A given secret, no overlap: the one before stops at once; the first keeps its day.
    let given = "whsec_bmV3LXNlY3JldC1rZXktMjQtYnl0ZXMhIQ==";
    assert_eq!(
        one::<String>(&format!(
            "SELECT webhook_outbox.rotate_secret({id}, '{given}', '0')"
        )),
        given
    );
    assert_eq!(retired(id), ["whsec@86400"]);
    // At most four old secrets sign at once: the newest.
    for hours in 1..=6 {
        run(&format!(
            "SELECT webhook_outbox.rotate_secret({id}, overlap => '{hours} hours')"
        ));
    }
    assert_eq!(
        retired(id),
        ["whsec@86400", "whsec@21600", "whsec@18000", "whsec@14400"]
    );
    // Expired ones stop signing (and are dropped at the next rotation).
    run(&format!(
        "UPDATE webhook_outbox.endpoints SET retired_until = array_fill(now() - interval '1 second', ARRAY[4])
         WHERE id = {id}"
    ));
    assert!(retired(id).is_empty());
    run(&format!(
        "SELECT webhook_outbox.rotate_secret({id}, overlap => '1 hour')"
    ));
    assert_eq!(
        one::<i32>(&format!(
            "SELECT cardinality(retired_secrets) FROM webhook_outbox.endpoints WHERE id = {id}"
        )),
        1
    );
}

#[pg_test(schema = "tests")]
fn rotate_secret_refuses_what_would_not_sign() {
    let id = endpoint("");
    let call = |args: &str| format!("SELECT webhook_outbox.rotate_secret({id}, {args})");
    assert_fails(&call("'whsec_c2hvcnQ='"), "22023", "must be 24 to 64");
    assert_fails(&call("'nope'"), "22023", "must start with");
    assert_fails(&call("NULL, '-1 hour'"), "22023", "between 0 and 30 days");
    assert_fails(&call("NULL, '31 days'"), "22023", "between 0 and 30 days");
    assert_fails(&call("NULL, NULL"), "22004", "overlap");
    let current = secret(id);
    assert_fails(&call(&format!("'{current}'")), "22023", "current secret");
    assert_fails(
        "SELECT webhook_outbox.rotate_secret(NULL)",
        "22004",
        "endpoint_id",
    );
    assert_fails(
        "SELECT webhook_outbox.rotate_secret(999999)",
        "42704",
        "does not exist",
    );
    run(&format!("SELECT webhook_outbox.delete_endpoint({id})"));
    assert_fails(&call("NULL"), "55000", "was deleted");
}

#[pg_test(schema = "tests")]
fn v1a_endpoints_have_an_ed25519_key_and_show_its_public_key() {
    let id = endpoint("signing => 'v1a'");
    assert!(secret(id).starts_with("whsk_"));
    let public = one::<String>(&format!(
        "SELECT public_key FROM webhook_outbox.public_keys({id})"
    ));
    assert!(
        public.starts_with("whpk_") && public.len() == 5 + 44,
        "{public}"
    );
    // Rotated: a new key of the same kind, whose public key is returned; both verify for the overlap.
    let next = one::<String>(&format!("SELECT webhook_outbox.rotate_secret({id})"));
    assert!(next.starts_with("whpk_") && next != public, "{next}");
    assert_eq!(
        super::column::<String>(&format!(
            "SELECT public_key || '|' || (valid_until IS NULL) FROM webhook_outbox.public_keys({id})"
        )),
        [format!("{next}|true"), format!("{public}|false")]
    );
    // An HMAC endpoint has no public key; its secret is what a receiver holds.
    let hmac = endpoint("");
    assert_eq!(
        one::<i64>(&format!(
            "SELECT count(*) FROM webhook_outbox.public_keys({hmac})"
        )),
        0
    );
    // Switching kinds is a rotation like any other.
    let switched = one::<String>(&format!(
        "SELECT webhook_outbox.rotate_secret({hmac}, 'whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=')"
    ));
    assert_eq!(
        switched,
        "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    );
    assert_eq!(
        super::column::<String>(&format!(
            "SELECT public_key FROM webhook_outbox.public_keys({hmac})"
        )),
        [switched]
    );

    assert_fails(
        "SELECT webhook_outbox.create_endpoint('https://example.com/', signing => 'v2')",
        "22023",
        "v1 (HMAC-SHA256) or v1a (ed25519)",
    );
    assert_fails(
        "SELECT webhook_outbox.create_endpoint('https://example.com/', secret => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', signing => 'v1a')",
        "22023",
        "signs v1, not v1a",
    );
    assert_fails(
        "SELECT webhook_outbox.create_endpoint('https://example.com/', secret => 'whsk_AAAA')",
        "22023",
        "ed25519 secret key decodes to 3 bytes",
    );
}

/// The audit names the rotation, and holds neither secret.
#[pg_test(schema = "tests")]
fn rotations_are_audited_without_the_secrets() {
    let id = endpoint("");
    let old = secret(id);
    let new = one::<String>(&format!("SELECT webhook_outbox.rotate_secret({id})"));
    let row = one::<String>(&format!(
        "SELECT operation || '|' || array_to_string(changed, ',') || '|' || old_value::text || new_value::text
         FROM webhook_outbox.endpoint_changes WHERE endpoint_id = {id} ORDER BY id DESC LIMIT 1"
    ));
    assert!(
        row.starts_with("rotate_secret|retired_secrets,retired_until,secret|"),
        "{row}"
    );
    for s in [&old, &new] {
        assert!(!row.contains(&s[6..20]), "a secret in the audit: {row}");
    }
}

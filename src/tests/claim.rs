//! get_ready_deliveries: which rows a claim hands out, and what it does to them.

use super::{
    assert_fails, claim, delivery, endpoint, enqueue, health, make_due, maybe, one, run, update,
};
use pgrx::prelude::*;

/// A lease of 30 seconds taken by a claim just now (a lease runs from the
/// claim's clock_timestamp(), not from the transaction's start).
const LEASED_30S: &str =
    "locked_until BETWEEN clock_timestamp() + interval '29 seconds' AND clock_timestamp() + interval '30 seconds'";

#[pg_test(schema = "tests")]
fn claim_leases_due_pending_and_retry_rows() {
    let e = endpoint("");
    let (pending, retry) = (enqueue(e), enqueue(e));
    update(
        "deliveries",
        retry,
        "status = 'retry', attempt_count = 2, next_attempt_at = now() - interval '1 minute'",
    );
    let rows = one::<String>(
        &format!(
            "SELECT string_agg(format('%s:%s:%s:%s', id, status, attempt_count, {LEASED_30S}), ' ' ORDER BY id)
             FROM webhook_outbox.get_ready_deliveries()"
        ),
    );
    // A claimed row keeps its status (the claim is a HOT update); its lease
    // says sending, from the moment of the claim.
    assert_eq!(rows, format!("{pending}:pending:1:t {retry}:retry:3:t"));
    // The returned rows are what the table now holds.
    for d in [pending, retry] {
        assert_eq!(
            delivery::<String>(d, "webhook_outbox.delivery_state(status, locked_until)"),
            "sending"
        );
        assert!(delivery::<bool>(d, LEASED_30S));
    }
    // Leased rows are not handed out again.
    assert_eq!(claim(10), Vec::<i64>::new());
}

#[pg_test(schema = "tests")]
fn claim_uses_the_given_lease() {
    let d = enqueue(endpoint(""));
    assert_eq!(
        one::<i64>("SELECT id FROM webhook_outbox.get_ready_deliveries(1, '5 minutes')"),
        d
    );
    assert!(delivery::<bool>(
        d,
        "locked_until BETWEEN clock_timestamp() + interval '4 minutes 59 seconds' AND clock_timestamp() + interval '5 minutes'"
    ));
}

#[pg_test(schema = "tests")]
fn claim_respects_batch_size() {
    let e = endpoint("");
    for _ in 0..5 {
        enqueue(e);
    }
    assert_eq!(claim(2).len(), 2);
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.deliveries WHERE locked_until IS NULL"),
        3
    );
    assert_eq!(claim(10).len(), 3);
    assert_eq!(claim(10).len(), 0);
}

#[pg_test(schema = "tests")]
fn claim_takes_the_oldest_due_first() {
    let e = endpoint("");
    let ids: Vec<i64> = (0..3).map(|_| enqueue(e)).collect();
    for (i, &d) in ids.iter().enumerate() {
        update(
            "deliveries",
            d,
            &format!("next_attempt_at = now() - interval '{i} minutes'"),
        );
    }
    assert_eq!(claim(1), vec![ids[2]]);
    assert_eq!(claim(1), vec![ids[1]]);
}

/// Each endpoint is read from its own range of the due index; the batch still
/// takes the oldest rows of all of them.
#[pg_test(schema = "tests")]
fn claim_takes_the_oldest_due_first_across_endpoints() {
    let (a, b) = (endpoint(""), endpoint(""));
    let rows: Vec<i64> = [(a, 50), (b, 40), (a, 30), (b, 20), (a, 10)]
        .iter()
        .map(|&(e, minutes_ago)| {
            let d = enqueue(e);
            update(
                "deliveries",
                d,
                &format!("next_attempt_at = now() - interval '{minutes_ago} minutes'"),
            );
            d
        })
        .collect();
    assert_eq!(claim(3), rows[..3].to_vec());
    assert_eq!(claim(10), rows[3..].to_vec());
}

/// When the worker's next claim may find something: the earliest due row of
/// an enabled endpoint, not before its circuit lets a probe through; rows
/// under a lease do not count.
#[pg_test(schema = "tests")]
fn next_due_follows_rows_circuits_and_leases() {
    let next = || {
        maybe::<f64>("SELECT round(extract(epoch FROM webhook_outbox._next_due() - now()))::float8")
    };
    assert_eq!(next(), None, "nothing waits");
    let (closed, open, disabled) = (endpoint(""), endpoint(""), endpoint(""));
    update(
        "deliveries",
        enqueue(closed),
        "next_attempt_at = now() + interval '300 seconds'",
    );
    assert_eq!(next(), Some(300.0));
    // A retry due earlier than the fresh rows counts, and vice versa.
    let retry = enqueue(closed);
    update(
        "deliveries",
        retry,
        "status = 'retry', next_attempt_at = now() + interval '200 seconds'",
    );
    assert_eq!(next(), Some(200.0));
    update(
        "deliveries",
        retry,
        "next_attempt_at = now() + interval '400 seconds'",
    );
    assert_eq!(next(), Some(300.0));
    // An open circuit with a row due now: the probe time (circuit_open_seconds = 60).
    enqueue(open);
    update(
        "health_metrics",
        open,
        "circuit_state = 'open', circuit_opened_at = now() - interval '20 seconds'",
    );
    assert_eq!(next(), Some(40.0));
    // A disabled endpoint's rows wait for nothing.
    enqueue(disabled);
    run(&format!(
        "UPDATE webhook_outbox.endpoints SET enabled = false WHERE id = {disabled}"
    ));
    assert_eq!(next(), Some(40.0));
    // A leased row is its worker's: the next unleased one counts.
    let leased = enqueue(closed);
    assert_eq!(next(), Some(0.0));
    update(
        "deliveries",
        leased,
        "locked_until = now() + interval '30 seconds'",
    );
    assert_eq!(next(), Some(40.0));
    // A probe is out: not before its lease ends, whoever claimed it with what lease.
    update(
        "health_metrics",
        open,
        "circuit_state = 'half_open', circuit_probe_until = now() + interval '25 seconds'",
    );
    assert_eq!(next(), Some(25.0));
}

#[pg_test(schema = "tests")]
fn claim_skips_rows_not_yet_due() {
    let e = endpoint("");
    let (later, now) = (enqueue(e), enqueue(e));
    update(
        "deliveries",
        later,
        "next_attempt_at = now() + interval '1 second'",
    );
    assert_eq!(claim(10), vec![now]);
    assert_eq!(delivery::<String>(later, "status"), "pending");
    assert_eq!(delivery::<i32>(later, "attempt_count"), 0);
}

#[pg_test(schema = "tests")]
fn claim_skips_finished_and_shadow_rows() {
    let e = endpoint("");
    for status in ["sent", "dead", "shadow"] {
        update("deliveries", enqueue(e), &format!("status = '{status}'"));
    }
    assert_eq!(claim(10), Vec::<i64>::new());
}

#[pg_test(schema = "tests")]
fn claim_skips_disabled_endpoints() {
    let (off, on) = (endpoint(""), endpoint(""));
    let (d_off, d_on) = (enqueue(off), enqueue(on));
    update("endpoints", off, "enabled = false");
    assert_eq!(claim(10), vec![d_on]);
    assert_eq!(delivery::<String>(d_off, "status"), "pending");
}

#[pg_test(schema = "tests")]
fn claim_skips_open_circuits() {
    let (broken, fine) = (endpoint(""), endpoint(""));
    let (d_broken, d_fine) = (enqueue(broken), enqueue(fine));
    update(
        "health_metrics",
        broken,
        "circuit_state = 'open', circuit_opened_at = now()",
    );
    assert_eq!(claim(10), vec![d_fine]);
    assert_eq!(delivery::<String>(d_broken, "status"), "pending");
    assert_eq!(health::<String>(broken, "circuit_state"), "open");
    // Still open one second before circuit_open_seconds (60) have passed.
    update(
        "health_metrics",
        broken,
        "circuit_opened_at = now() - interval '59 seconds'",
    );
    assert_eq!(claim(10), Vec::<i64>::new());
    // A shorter open period makes it due for a probe.
    run("SET LOCAL webhook_outbox.circuit_open_seconds = 30");
    assert_eq!(claim(10), vec![d_broken]);
}

#[pg_test(schema = "tests")]
fn claim_lets_one_probe_through_an_expired_open_circuit() {
    let e = endpoint("");
    let ids: Vec<i64> = (0..3).map(|_| enqueue(e)).collect();
    // Fresh and retried rows due: still one probe.
    update("deliveries", ids[0], "status = 'retry'");
    update(
        "health_metrics",
        e,
        "circuit_state = 'open', circuit_opened_at = now() - interval '61 seconds'",
    );
    let probe = claim(10);
    assert_eq!(probe.len(), 1, "exactly one probe: {probe:?}");
    assert!(ids.contains(&probe[0]));
    assert_eq!(health::<String>(e, "circuit_state"), "half_open");
    // Until the probe's lease ends (claim() leases for 30 seconds).
    assert!(health::<bool>(
        e,
        "circuit_probe_until - now() BETWEEN interval '29 seconds' AND interval '31 seconds'"
    ));
    assert_eq!(
        one::<i64>("SELECT count(*) FROM webhook_outbox.deliveries WHERE locked_until IS NULL"),
        2
    );
    // While the probe is out, nothing else goes.
    assert_eq!(claim(10), Vec::<i64>::new());
    // A probe whose lease ran out without a result lets another one through.
    update(
        "health_metrics",
        e,
        "circuit_probe_until = now() - interval '1 second'",
    );
    assert_eq!(claim(10).len(), 1);
}

/// The probe of one endpoint does not shrink the batch for the others, even
/// when that endpoint's backlog is older than everything else.
#[pg_test(schema = "tests")]
fn claim_fills_the_batch_beside_a_probe() {
    let (probing, healthy) = (endpoint(""), endpoint(""));
    for _ in 0..3 {
        let d = enqueue(probing);
        update(
            "deliveries",
            d,
            "next_attempt_at = now() - interval '1 hour'",
        );
    }
    let fresh = [enqueue(healthy), enqueue(healthy)];
    update(
        "health_metrics",
        probing,
        "circuit_state = 'open', circuit_opened_at = now() - interval '61 seconds'",
    );
    let claimed = claim(3);
    assert_eq!(
        claimed.len(),
        3,
        "one probe and both healthy deliveries: {claimed:?}"
    );
    assert!(fresh.iter().all(|d| claimed.contains(d)), "{claimed:?}");
}

#[pg_test(schema = "tests")]
fn claim_reclaims_rows_with_an_expired_lease() {
    let e = endpoint("");
    let (expired, leased) = (enqueue(e), enqueue(e));
    assert_eq!(claim(10), vec![expired, leased]);
    update(
        "deliveries",
        expired,
        "locked_until = now() - interval '1 second'",
    );
    update(
        "deliveries",
        leased,
        "locked_until = now() + interval '1 second'",
    );
    assert_eq!(claim(10), vec![expired]);
    assert_eq!(delivery::<i32>(expired, "attempt_count"), 2);
    assert!(delivery::<bool>(
        expired,
        &format!("status = 'pending' AND {LEASED_30S}")
    ));
    assert_eq!(delivery::<i32>(leased, "attempt_count"), 1);
}

#[pg_test(schema = "tests")]
fn claim_returns_nothing_in_mode_shadow_or_off() {
    let d = enqueue(endpoint(""));
    for mode in ["shadow", "off"] {
        run(&format!("SET LOCAL webhook_outbox.mode = '{mode}'"));
        assert_eq!(claim(10), Vec::<i64>::new(), "mode {mode}");
    }
    assert_eq!(delivery::<String>(d, "status"), "pending");
    run("SET LOCAL webhook_outbox.mode = 'on'");
    make_due(d);
    assert_eq!(claim(10), vec![d]);
}

#[pg_test(schema = "tests")]
fn claim_rejects_bad_arguments() {
    let claim = |args: &str| format!("SELECT * FROM webhook_outbox.get_ready_deliveries({args})");
    assert_fails(&claim("0"), "22023", "batch_size must be at least 1, got 0");
    assert_fails(
        &claim("-5"),
        "22023",
        "batch_size must be at least 1, got -5",
    );
    assert_fails(
        &claim("10, '0 seconds'"),
        "22023",
        "lease must be a positive interval",
    );
    assert_fails(
        &claim("10, '-1 minute'"),
        "22023",
        "lease must be a positive interval",
    );
}

#[pg_test(schema = "tests", error = "batch_size must be at least 1, got 0")]
fn claim_zero_batch_size_is_an_error() {
    run("SELECT * FROM webhook_outbox.get_ready_deliveries(0)");
}

/// An open or half-open circuit without its time (a row written by hand)
/// lets a probe through, whose result repairs the state: it never strands
/// the endpoint.
#[pg_test(schema = "tests")]
fn claim_probes_a_circuit_state_without_its_time() {
    let e = endpoint("");
    let ids: Vec<i64> = (0..2).map(|_| enqueue(e)).collect();
    update(
        "health_metrics",
        e,
        "circuit_state = 'open', circuit_opened_at = NULL",
    );
    assert_eq!(claim(10).len(), 1, "one probe");
    update(
        "health_metrics",
        e,
        "circuit_state = 'half_open', circuit_probe_until = NULL",
    );
    let probe = claim(10);
    assert_eq!(probe.len(), 1, "another probe: {probe:?}");
    assert!(ids.contains(&probe[0]));
}

/// With more endpoints due than a batch has rows, each claim takes one row
/// of as many endpoints: successive claims reach every endpoint, none twice
/// while leased. Endpoints with nothing waiting are not walked at all.
#[pg_test(schema = "tests")]
fn claims_spread_over_more_endpoints_than_a_batch() {
    for _ in 0..200 {
        endpoint("");
    }
    let due: Vec<i64> = (0..40).map(|_| enqueue(endpoint(""))).collect();
    let mut claimed = Vec::new();
    for round in 0..4 {
        let batch = claim(10);
        assert_eq!(batch.len(), 10, "round {round}: {batch:?}");
        claimed.extend(batch);
    }
    claimed.sort_unstable();
    assert_eq!(claimed, due, "every endpoint once");
    assert!(claim(10).is_empty());
}

/// An endpoint with a large backlog does not take a whole batch while others
/// have rows due: each gets a share.
#[pg_test(schema = "tests")]
fn claim_shares_a_batch_among_endpoints() {
    let (big, small) = (endpoint(""), endpoint(""));
    for _ in 0..30 {
        let d = enqueue(big);
        update(
            "deliveries",
            d,
            "next_attempt_at = now() - interval '1 hour'",
        );
    }
    let fresh: Vec<i64> = (0..3).map(|_| enqueue(small)).collect();
    let batch = claim(10);
    assert_eq!(batch.len(), 10, "{batch:?}");
    assert!(fresh.iter().all(|d| batch.contains(d)), "{batch:?}");
}

/// Where the walk starts is random: claims given back each time still reach
/// endpoints beyond the first batch's worth (a walk from the lowest id would
/// take the same five every time).
#[pg_test(schema = "tests")]
fn claims_start_at_a_random_endpoint() {
    for _ in 0..40 {
        enqueue(endpoint(""));
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.extend(claim(5));
        Spi::run("UPDATE webhook_outbox.deliveries SET locked_until = NULL").expect("release");
    }
    assert!(seen.len() > 10, "claims kept to {seen:?}");
}

/// Beside a large backlog, more than eight endpoints with one row each all
/// get theirs, and the backlog fills part of what is left.
#[pg_test(schema = "tests")]
fn claim_fills_beside_many_small_endpoints() {
    let big = endpoint("");
    for _ in 0..30 {
        let d = enqueue(big);
        update(
            "deliveries",
            d,
            "next_attempt_at = now() - interval '1 hour'",
        );
    }
    let small: Vec<i64> = (0..12).map(|_| enqueue(endpoint(""))).collect();
    let batch = claim(20);
    assert!(small.iter().all(|d| batch.contains(d)), "{batch:?}");
    assert!(batch.len() > small.len() + 1, "nothing filled: {batch:?}");
}

/// An external worker gets all a request needs, signed: the secret stays in
/// the database.
#[pg_test(schema = "tests")]
fn claim_hands_out_what_a_request_needs_signed() {
    let e = endpoint("headers => '{\"X-Team\": \"a\"}'");
    let d = enqueue(e);
    let row = one::<String>(
        "SELECT format('%s|%s|%s|%s|%s', id, url, headers, body,
                      (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(webhook_headers) k))
         FROM webhook_outbox.get_ready_deliveries(1)",
    );
    assert_eq!(
        row,
        format!(
            r#"{d}|https://example.com/hook|{{"X-Team": "a"}}|{{"n": 1}}|webhook-id,webhook-signature,webhook-timestamp"#
        )
    );
    // webhook-id is the event id; the timestamp is the claim's; one v1 signature,
    // two during a rotation's overlap.
    run(&format!("SELECT webhook_outbox.rotate_secret({e})"));
    enqueue(e);
    assert_eq!(
        one::<String>(
            "SELECT format('%s|%s|%s', webhook_headers->>'webhook-id' = event_id,
                          abs((webhook_headers->>'webhook-timestamp')::bigint - extract(epoch FROM clock_timestamp())) < 5,
                          array_length(string_to_array(webhook_headers->>'webhook-signature', ' '), 1))
             FROM webhook_outbox.get_ready_deliveries(1)"
        ),
        "t|t|2"
    );
}

/// A storm of retries on one endpoint leaves room for its new events: fresh
/// and retried rows take turns in its share, whatever their age.
#[pg_test(schema = "tests")]
fn claim_gives_fresh_rows_their_turn_beside_a_retry_storm() {
    let e = endpoint("");
    let retries: Vec<i64> = (0..30)
        .map(|i| {
            let d = enqueue(e);
            update(
                "deliveries",
                d,
                &format!("status = 'retry', attempt_count = 1, next_attempt_at = now() - interval '1 hour' + interval '{i} seconds'"),
            );
            d
        })
        .collect();
    let fresh: Vec<i64> = (0..3).map(|_| enqueue(e)).collect();
    let batch = claim(10);
    assert_eq!(batch.len(), 10, "{batch:?}");
    assert!(fresh.iter().all(|d| batch.contains(d)), "{batch:?}");
    // And the retries still get theirs, oldest first.
    let taken: Vec<i64> = retries
        .iter()
        .copied()
        .filter(|d| batch.contains(d))
        .collect();
    assert_eq!(taken, retries[..7].to_vec());
    // Beside another endpoint too: each endpoint's share is split the same way.
    let other = endpoint("");
    let (mine, theirs) = (enqueue(e), enqueue(other));
    let batch = claim(6);
    assert!(
        batch.contains(&mine) && batch.contains(&theirs),
        "{batch:?}"
    );
}

/// A share of one row is the oldest row, fresh or retried: a steady stream
/// of new events never keeps an older retry waiting.
#[pg_test(schema = "tests")]
fn claim_of_one_takes_the_oldest_row_of_either_kind() {
    let e = endpoint("");
    let retry = enqueue(e);
    update(
        "deliveries",
        retry,
        "status = 'retry', attempt_count = 1, next_attempt_at = now() - interval '1 minute'",
    );
    let fresh: Vec<i64> = (0..3).map(|_| enqueue(e)).collect();
    assert_eq!(claim(1), vec![retry]);
    let next = claim(1);
    assert!(next.len() == 1 && fresh.contains(&next[0]), "{next:?}");
}

//! Operational events: the rows, and the webhooks to the operations
//! endpoint. The NOTIFYs and a real operations receiver are in
//! pgrx-tests/tests/operations.rs.

use super::{attempt, endpoint, enqueue, one, run};
use pgrx::prelude::*;

/// `type:endpoint` of the events, oldest first.
fn events() -> Vec<String> {
    super::column(
        "SELECT event_type || ':' || endpoint_id FROM webhook_outbox.operational_events ORDER BY id",
    )
}

#[pg_test(schema = "tests")]
fn health_changes_are_published_once_each() {
    run("SET LOCAL webhook_outbox.failing_after = 3");
    let e = endpoint("");
    for n in 1..=6 {
        if n <= 5 {
            assert_eq!(attempt(enqueue(e), "500, 1"), "retry", "attempt {n}");
        } else {
            // The circuit is open: health still learns of results reported.
            run(&format!(
                "SELECT webhook_outbox.update_webhook_health({e}, 503, 1)"
            ));
        }
    }
    assert_eq!(
        events(),
        [
            format!("endpoint.failing:{e}"),
            format!("circuit.opened:{e}")
        ]
    );
    assert_eq!(
        one::<String>(
            "SELECT data->>'consecutive_failures' || '|' || (data->>'last_error')
             FROM webhook_outbox.operational_events WHERE event_type = 'endpoint.failing'"
        ),
        "3|HTTP 500"
    );
    run(&format!(
        "SELECT webhook_outbox.update_webhook_health({e}, 200, 1)"
    ));
    assert_eq!(
        events()[2..],
        [
            format!("endpoint.recovered:{e}"),
            format!("circuit.closed:{e}")
        ]
    );
}

#[pg_test(schema = "tests")]
fn dead_deliveries_and_disabled_endpoints_are_published() {
    let e = endpoint("max_attempts => 1");
    let d = enqueue(e);
    assert_eq!(attempt(d, "500, 1"), "dead");
    assert_eq!(
        one::<String>(
            "SELECT format('%s|%s|%s|%s', delivery_id, data->>'attempts', data->>'last_error', data->>'event_id' = d.event_id)
             FROM webhook_outbox.operational_events o JOIN webhook_outbox.deliveries d ON d.id = o.delivery_id
             WHERE o.event_type = 'delivery.exhausted'"
        ),
        format!("{d}|1|HTTP 500|t")
    );
    run(&format!(
        "SELECT webhook_outbox.disable_endpoint({e}, 'customer asked')"
    ));
    assert_eq!(
        one::<String>(
            "SELECT data->>'reason' FROM webhook_outbox.operational_events WHERE event_type = 'endpoint.disabled'"
        ),
        "customer asked"
    );
}

/// With an operations endpoint, each event is also a webhook to it, signed
/// like any other delivery; events about that endpoint itself are not.
#[pg_test(schema = "tests")]
fn the_operations_endpoint_gets_each_event_but_its_own() {
    let ops = endpoint("name => 'ops'");
    let e = endpoint("");
    run(&format!(
        "SET LOCAL webhook_outbox.operations_endpoint = {ops}"
    ));
    run(&format!(
        "SELECT webhook_outbox.disable_endpoint({e}, 'maintenance')"
    ));
    run(&format!(
        "SELECT webhook_outbox.disable_endpoint({ops}, 'its own')"
    ));
    assert_eq!(
        events(),
        [
            format!("endpoint.disabled:{e}"),
            format!("endpoint.disabled:{ops}")
        ]
    );
    assert_eq!(
        one::<String>(&format!(
            "SELECT string_agg(format('%s|%s|%s|%s', d.event_id = 'op_' || o.id, d.event_type, d.status,
                                      d.payload->'data'->>'reason'), ',')
             FROM webhook_outbox.deliveries d JOIN webhook_outbox.operational_events o ON d.payload->>'id' = o.id::text
             WHERE d.endpoint_id = {ops}"
        )),
        "t|endpoint.disabled|pending|maintenance"
    );
}

#!/usr/bin/env bash
# Sets everything up and shows real deliveries: builds and installs the
# extension, starts a throwaway cluster with the library preloaded and a
# receiver on loopback, emits events, prints the dashboard views.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
install_extension

DIR=${DEMO_DIR:-/tmp/webhook_outbox_demo}
PORT=55432; RECEIVER_PORT=18090
BIN=/usr/lib/postgresql/15/bin
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

as_postgres "$BIN/pg_ctl" -D "$DIR/pg" stop -m immediate >/dev/null 2>&1 || true
rm -rf "$DIR"; mkdir -p "$DIR/pg"; [ "$(id -u)" = 0 ] && chown postgres "$DIR/pg"
as_postgres "$BIN/initdb" -D "$DIR/pg" -A trust -U postgres >/dev/null
cat >> "$DIR/pg/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR/pg'
shared_preload_libraries = 'webhook_outbox'
# The demo receiver is on loopback, which the SSRF guard refuses unless allowed.
webhook_outbox.allowed_cidrs = '127.0.0.0/8'
webhook_outbox.allow_http = on
webhook_outbox.retry_schedule = '1s,2s,4s,8s'
webhook_outbox.circuit_open_seconds = 5
CONF
as_postgres "$BIN/pg_ctl" -D "$DIR/pg" -l "$DIR/pg/log" -w start >/dev/null
PSQL="psql -X -h $DIR/pg -p $PORT -U postgres -d postgres -v ON_ERROR_STOP=1"
trap 'kill $RECEIVER 2>/dev/null; as_postgres "$BIN/pg_ctl" -D "$DIR/pg" stop -m fast >/dev/null 2>&1' EXIT

show() { echo; echo "== $1"; }
show "psql> CREATE EXTENSION webhook_outbox;"
$PSQL -qc "CREATE EXTENSION webhook_outbox"

show "three endpoints: one healthy, one failing with 500, one answering 410 Gone"
$PSQL -q <<SQL
SELECT webhook_outbox.create_endpoint('http://127.0.0.1:$RECEIVER_PORT/ok', 'billing', event_types => '{order.paid,order.refunded}') AS billing;
SELECT webhook_outbox.create_endpoint('http://127.0.0.1:$RECEIVER_PORT/fail', 'crm', max_attempts => 3) AS crm;
SELECT webhook_outbox.create_endpoint('http://127.0.0.1:$RECEIVER_PORT/gone', 'legacy') AS legacy;
SQL
SECRET_ARGS=$($PSQL -Atc "SELECT string_agg(substring(url from '/[a-z]+\$') || '=' || secret, ' ') FROM webhook_outbox.endpoints")
python3 scripts/receiver.py $RECEIVER_PORT $SECRET_ARGS &
RECEIVER=$!
sleep 0.5

show "an application table whose trigger emits an event in the same transaction"
$PSQL -q <<'SQL'
CREATE TABLE orders (id bigint PRIMARY KEY, customer text, amount_cents int, status text);
CREATE FUNCTION orders_emit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM webhook_outbox.emit('order.' || NEW.status,
        jsonb_build_object('order_id', NEW.id, 'amount_cents', NEW.amount_cents),
        event_id => 'order-' || NEW.id || '-' || NEW.status, subject_id => NEW.customer);
    RETURN NEW;
END $$;
CREATE TRIGGER orders_emit AFTER INSERT OR UPDATE OF status ON orders FOR EACH ROW EXECUTE FUNCTION orders_emit();
INSERT INTO orders VALUES (1, 'alice', 1999, 'paid'), (2, 'bob', 4500, 'paid');
BEGIN;
INSERT INTO orders VALUES (3, 'carol', 100, 'paid');
ROLLBACK;  -- rolled back: no webhook, ever
UPDATE orders SET status = 'refunded' WHERE id = 2;
SQL
sleep 4

show "psql> SELECT * FROM webhook_outbox.v_queue_status;"
$PSQL -c "SELECT * FROM webhook_outbox.v_queue_status"
show "psql> SELECT * FROM webhook_outbox.v_webhook_health_dashboard;"
$PSQL -c "SELECT webhook_id, name, enabled, disabled_reason, health_status, circuit_state, success_rate_pct, pending, retry, dead, last_error FROM webhook_outbox.v_webhook_health_dashboard"
show "psql> SELECT * FROM webhook_outbox.operational_events;   -- also NOTIFYed on webhook_outbox_events"
$PSQL -c "SELECT id, event_type, endpoint_id, data FROM webhook_outbox.operational_events ORDER BY id"
show "psql> SELECT * FROM webhook_outbox.v_dead_letters;"
$PSQL -c "SELECT delivery_id, endpoint_name, event_id, attempt_count, last_status_code, last_error FROM webhook_outbox.v_dead_letters"
show "psql> SELECT * FROM webhook_outbox.v_webhook_performance;"
$PSQL -c "SELECT * FROM webhook_outbox.v_webhook_performance"
show "psql> SELECT * FROM webhook_outbox.v_worker_status;"
$PSQL -c "SELECT worker, pid, running, sent, failed, last_error FROM webhook_outbox.v_worker_status"
SENT=$($PSQL -Atc "SELECT count(*) FROM webhook_outbox.deliveries WHERE status = 'sent'")
echo
echo "demo: $SENT deliveries sent to the receiver. The cluster is stopped on exit; its data stays in $DIR/pg."
[ "$SENT" -ge 3 ]

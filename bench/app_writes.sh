#!/usr/bin/env bash
# What emit() costs the application's own write path: pgbench with 16
# clients, each transaction one INSERT of an application row (autocommit),
# without and with an AFTER INSERT trigger that emit()s an event for it, as
# applications wire the outbox to their hot tables; in the same run:
#   bare      INSERT INTO orders ...
#   shadow    INSERT INTO orders_emitting ... (the trigger's emit(), webhook_outbox.mode = shadow: recorded, never sent)
#   on        the same with mode = on, the worker delivering to nginx meanwhile
#   floor     INSERT INTO orders_copied ... whose trigger INSERTs the same row into a
#             copy of the intake (emit()'s table: its columns and primary key),
#             plain SQL, no function: what the row emit() writes costs, for reference
# Reports transactions/s of each and the ratios to bare, medians of ROUNDS
# rounds (default 3) of DURATION seconds each (default 10).
#   bench/app_writes.sh
# Needs the release build installed: cargo pgrx install --release --pg-config /usr/bin/pg_config
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
WORK=${BENCH_DIR:-/tmp/wo-bench-app}
PGPORT=55480; HTTPPORT=18206
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10}; CLIENTS=${CLIENTS:-16}
mkdir -p "$WORK"
nginx_start "$WORK/nginx" $HTTPPORT
bench_cluster_start "$WORK/pg" $PGPORT "webhook_outbox.mode='shadow'" "max_connections=100"
trap 'bench_cluster_stop "$WORK/pg"; nginx_stop "$WORK/nginx"' EXIT
$PSQL <<SQL >/dev/null
CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL, amount integer NOT NULL,
                     created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders_emitting (LIKE orders INCLUDING ALL);
$(emitting_trigger_sql orders_emitting)
CREATE TABLE orders_copied (LIKE orders INCLUDING ALL);
CREATE TABLE intake_copy (LIKE webhook_outbox.intake INCLUDING ALL);
CREATE FUNCTION order_copied() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    INSERT INTO intake_copy (endpoint_ids, event_id, event_type, payload, subject_id, status)
    VALUES ('{1}', gen_random_uuid()::text, 'order.paid',
            jsonb_build_object('order_id', NEW.id, 'amount', NEW.amount, 'customer', NEW.customer), NEW.customer, 'shadow');
    RETURN NULL;
END \$\$;
CREATE TRIGGER order_copied AFTER INSERT ON orders_copied FOR EACH ROW EXECUTE FUNCTION order_copied();
SELECT webhook_outbox.create_endpoint('http://127.0.0.1:$HTTPPORT/hook', 'bench', rate_limit_rps => 0);
SQL
cat > "$WORK/bare.sql" <<'SQL'
\set c random(1, 100000)
INSERT INTO orders (customer, amount) VALUES ('customer-' || :c, 1999);
SQL
cat > "$WORK/floor.sql" <<'SQL'
\set c random(1, 100000)
INSERT INTO orders_copied (customer, amount) VALUES ('customer-' || :c, 1999);
SQL
cat > "$WORK/emit.sql" <<'SQL'
\set c random(1, 100000)
INSERT INTO orders_emitting (customer, amount) VALUES ('customer-' || :c, 1999);
SQL
PGBENCH="pgbench -n -h $WORK/pg -p $PGPORT -U postgres -c $CLIENTS -j 2 -T $DURATION postgres"
tps() { $PGBENCH -f "$WORK/$1.sql" 2>/dev/null | awk '/^tps/ {printf "%.0f", $3}'; }
mode() { $PSQL -c "ALTER SYSTEM SET webhook_outbox.mode = '$1'" -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.5; }
BARE=(); SHADOW=(); ON=(); FLOOR=()
for round in $(seq "$ROUNDS"); do
    mode shadow
    BARE+=("$(tps bare)")
    FLOOR+=("$(tps floor)")
    SHADOW+=("$(tps emit)")
    mode on
    ON+=("$(tps emit)")
    # Let the worker catch up before the next round's bare run.
    while [ "$($PSQL -Atc "SELECT coalesce(sum(count), 0) FROM webhook_outbox.v_queue_status WHERE status IN ('pending', 'retry', 'sending')")" != 0 ]; do sleep 0.5; done
    $PSQL -c "CHECKPOINT" >/dev/null
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
B=$(median "${BARE[@]}"); S=$(median "${SHADOW[@]}"); O=$(median "${ON[@]}"); F=$(median "${FLOOR[@]}")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $CLIENTS clients, $ROUNDS rounds of $DURATION s"
echo "tps, median (rounds): bare $B (${BARE[*]}); emit, shadow $S (${SHADOW[*]}); emit, on $O (${ON[*]}); floor $F (${FLOOR[*]})"
echo "ratio to bare: shadow $(echo "scale=2; $S / $B" | bc), on $(echo "scale=2; $O / $B" | bc), floor $(echo "scale=2; $F / $B" | bc)"
$PSQL -Atc "SELECT 'delivered: ' || count(*) FILTER (WHERE status = 'sent') || ' sent, ' || count(*) FILTER (WHERE status = 'shadow') || ' shadow, ' || count(*) FILTER (WHERE status NOT IN ('sent', 'shadow')) || ' other' FROM webhook_outbox.deliveries"

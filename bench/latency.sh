#!/usr/bin/env bash
# Latency from COMMIT to the receiver at low load, with the default poll
# interval raised to 10 s so that only the commit wake-up can explain a fast delivery.
#   bench/latency.sh [N]     (default 1000)
# EMIT=1: the events are emit()ted (through the intake) instead of enqueue()d.
# LOAD=C: the same while C pgbench clients (16, say) each commit an order row
# whose AFTER INSERT trigger emit()s an event to a second endpoint (nginx on
# loopback), the worker delivering those meanwhile; also reports the orders
# committed and the deliveries sent per second during the measurement.
# WORKERS=n: run n delivery workers (webhook_outbox.workers; default 1).
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
N=${1:-1000}
WORK=${BENCH_DIR:-/tmp/wo-bench-latency}
HTTPPORT=18209
python3 -c 'import psycopg' 2>/dev/null || python3 -m pip install -q 'psycopg[binary]'
mkdir -p "$WORK"
bench_cluster_start "$WORK/pg" 55441 "webhook_outbox.poll_interval='10s'" "max_connections=100" "webhook_outbox.workers=${WORKERS:-1}"
LOADER=
cleanup() {
    [ -n "$LOADER" ] && kill "$LOADER" 2>/dev/null && wait "$LOADER" 2>/dev/null
    bench_cluster_stop "$WORK/pg"
    [ "${LOAD:-0}" -gt 0 ] && nginx_stop "$WORK/nginx"
    return 0
}
trap cleanup EXIT
if [ "${LOAD:-0}" -gt 0 ]; then
    nginx_start "$WORK/nginx" $HTTPPORT
    $PSQL <<SQL >/dev/null
SELECT webhook_outbox.create_endpoint('http://127.0.0.1:$HTTPPORT/hook', rate_limit_rps => 0, event_types => ARRAY['order.paid']);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL, amount integer NOT NULL,
                     created_at timestamptz NOT NULL DEFAULT now());
$(emitting_trigger_sql orders)
SQL
    printf '\\set c random(1, 100000)\nINSERT INTO orders (customer, amount) VALUES (%s, 1999);\n' "'customer-' || :c" > "$WORK/load.sql"
    pgbench -n -h "$WORK/pg" -p 55441 -U postgres -c "$LOAD" -j 2 -T 3600 -f "$WORK/load.sql" postgres >/dev/null 2>&1 &
    LOADER=$!
    sleep 3
    WORKER_PIDS=$($PSQL -Atc "SELECT pid FROM webhook_outbox.v_worker_status WHERE pid IS NOT NULL")
    # Time, orders, deliveries sent, the workers' CPU time (all threads, in clock ticks).
    snapshot() { echo "$($PSQL -Atc "SELECT extract(epoch FROM clock_timestamp()), (SELECT count(*) FROM orders),
                                     (SELECT count(*) FROM webhook_outbox.deliveries WHERE status = 'sent')")|$(for p in $WORKER_PIDS; do cat /proc/$p/stat; done | awk '{t += $14 + $15} END {print t}')"; }
    BEFORE=$(snapshot)
fi
python3 latency.py "$WORK/pg" 55441 "$N" "$([ "${EMIT:-0}" = 1 ] && echo emit || echo enqueue)"
if [ -n "$LOADER" ]; then
    AFTER=$(snapshot)
    PENDING=$($PSQL -Atc "SELECT coalesce(sum(count), 0) FROM webhook_outbox.v_queue_status WHERE status IN ('pending', 'retry')")
    python3 - "$BEFORE" "$AFTER" "$PENDING" "$LOAD" "$(getconf CLK_TCK)" <<'PY'
import sys
(t0, o0, s0, c0), (t1, o1, s1, c1) = ([float(x) for x in v.split("|")] for v in sys.argv[1:3])
dt, tick = t1 - t0, float(sys.argv[5])
print(f"meanwhile, {sys.argv[4]} clients: {(o1 - o0) / dt:.0f} orders committed/s (each emitting one event), "
      f"{(s1 - s0) / dt:.0f} deliveries sent/s, {sys.argv[3]} waiting at the end; "
      f"workers' CPU {(c1 - c0) / tick / dt * 100:.0f}% of a core, {(c1 - c0) / tick * 1e6 / max(s1 - s0, 1):.0f} us per delivery")
PY
fi

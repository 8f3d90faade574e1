#!/usr/bin/env bash
# Many endpoints: N deliveries (default 20,000) drained to one endpoint, then
# the same N spread over E endpoints (default 5,000; N/E each), all pointing
# at the same nginx on loopback answering 204, rate limits off; in the same
# run, on the same cluster. A sender with many customers has thousands of
# endpoints; most have little queued at any moment.
#   bench/endpoints.sh [N] [E]
# IDLE=M adds M more endpoints with nothing queued, and DISABLED=M disabled
# ones with rows queued: neither may slow the drain.
# Needs the release build installed: cargo pgrx install --release --pg-config /usr/bin/pg_config
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
N=${1:-20000}; E=${2:-5000}
WORK=${BENCH_DIR:-/tmp/wo-bench-endpoints}
PGPORT=55450; HTTPPORT=18208
mkdir -p "$WORK"
nginx_start "$WORK/nginx" $HTTPPORT
bench_cluster_start "$WORK/pg" $PGPORT "webhook_outbox.mode='off'"
trap 'bench_cluster_stop "$WORK/pg"; nginx_stop "$WORK/nginx"' EXIT
WRK_RATE=$(wrk -t1 -c16 -d3s "http://127.0.0.1:$HTTPPORT/" | awk '/Requests\/sec/ {print $2}')

# Drain what is queued until TOTAL deliveries are sent: from switching
# sending on to the last attempt, by the database's clock. Prints N/s.
drain() {
    local total=$1 n=$2 start done end
    $PSQL -c "CHECKPOINT" >/dev/null; sync
    $PSQL -c "ALTER SYSTEM SET webhook_outbox.mode = 'on'" >/dev/null
    start=$($PSQL -Atc "SELECT extract(epoch FROM clock_timestamp()), pg_reload_conf()" | cut -d'|' -f1)
    while :; do
        done=$($PSQL -Atc "SELECT count(*) FROM webhook_outbox.deliveries WHERE status = 'sent'")
        [ "$done" -ge "$total" ] && break
        sleep 0.5
    done
    end=$($PSQL -Atc "SELECT extract(epoch FROM max(attempted_at)) FROM webhook_outbox.attempts")
    $PSQL -c "ALTER SYSTEM SET webhook_outbox.mode = 'off'" -c "SELECT pg_reload_conf()" >/dev/null
    echo "$n / ($end - $start)" | bc -l | xargs printf '%.0f'
}
queue() {  # queue N deliveries over the endpoints with ids in [first, first + count)
    $PSQL -c "INSERT INTO webhook_outbox.deliveries (endpoint_id, event_id, event_type, payload, max_attempts)
              SELECT $2 + (i % $3), 'evt-' || $2 || '-' || i, 'order.paid', '{\"order_id\": 42}', 5 FROM generate_series(1, $1) i" >/dev/null
}
$PSQL -c "SELECT count(webhook_outbox.create_endpoint('http://127.0.0.1:$HTTPPORT/hook', rate_limit_rps => 0))
          FROM generate_series(1, 1 + $E + ${IDLE:-0} + ${DISABLED:-0})" >/dev/null
if [ "${DISABLED:-0}" -gt 0 ]; then
    $PSQL -c "UPDATE webhook_outbox.endpoints SET enabled = false WHERE id > 1 + $E + ${IDLE:-0}" >/dev/null
    queue $((DISABLED * 4)) $((2 + E + ${IDLE:-0})) "$DISABLED"
fi
queue "$N" 1 1
ONE=$(drain "$N" "$N")
queue "$N" 2 "$E"
MANY=$(drain $((N * 2)) "$N")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); wrk ceiling $WRK_RATE req/s"
echo "$N deliveries: one endpoint $ONE/s; over $E endpoints ($((N / E)) each${IDLE:+, $IDLE idle}${DISABLED:+, $DISABLED disabled with $((DISABLED * 4)) rows}) $MANY/s; ratio $(echo "scale=2; $MANY / $ONE" | bc)"

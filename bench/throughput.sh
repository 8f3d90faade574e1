#!/usr/bin/env bash
# Throughput: drain N queued deliveries (300-byte payloads, rate limits off)
# to nginx on loopback answering 204, with wrk's raw rate for the same request
# as the ceiling, measured in the same run. Also worker RSS while draining.
#   bench/throughput.sh [N]          (default 50000)
# DEAD_BACKLOG=M adds a second endpoint whose circuit is open (a dead
# receiver) holding M rows older than the N: they must cost the drain nothing.
# TLS=1: the same over HTTPS (HTTP/1.1, keep-alive), nginx with a test CA
# given to the worker through webhook_outbox.ca_file; the ceiling is wrk over
# TLS. H2=1: HTTPS with nginx offering HTTP/2 (the worker then sends its
# requests as streams of one connection); the ceiling is h2load with the same
# shape (one connection, CONCURRENCY streams), and h2load with 16 connections
# is shown too.
# Needs the release build installed: cargo pgrx install --release --pg-config /usr/bin/pg_config
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
N=${1:-50000}
WORK=${BENCH_DIR:-/tmp/wo-bench}
PGPORT=55440; HTTPPORT=18204
mkdir -p "$WORK"
nginx_start "$WORK/nginx" $HTTPPORT
SCHEME=http; CA_CONF=()
if [ "${TLS:-0}" = 1 ] || [ "${H2:-0}" = 1 ]; then
    SCHEME=https
    # The cluster runs as postgres: a copy of the CA it can read.
    cp "$WORK/nginx/ca.pem" "$WORK/ca.pem"; chmod 644 "$WORK/ca.pem"
    CA_CONF=("webhook_outbox.ca_file='$WORK/ca.pem'")
fi
bench_cluster_start "$WORK/pg" $PGPORT "${CA_CONF[@]}" "webhook_outbox.mode='off'" "webhook_outbox.concurrency=${CONCURRENCY:-16}" "webhook_outbox.batch_size=${BATCH:-500}" "webhook_outbox.workers=${WORKERS:-1}"
trap 'bench_cluster_stop "$WORK/pg"; nginx_stop "$WORK/nginx"' EXIT

PAYLOAD=$(python3 -c 'import json; print(json.dumps({"type":"order.paid","data":{"order_id":"ord_0000000001","customer":"cus_00000042","amount":1999,"currency":"EUR","items":[{"sku":"SKU-1","qty":1},{"sku":"SKU-2","qty":2}],"note":"x"*120}}, separators=(",",":")))')
echo "payload bytes: ${#PAYLOAD}"

# Ceiling: wrk POSTing the same body with 16 connections for 5 s.
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = [[$PAYLOAD]]
wrk.headers["content-type"] = "application/json"
LUA
if [ "${H2:-0}" = 1 ]; then
    printf '%s' "$PAYLOAD" > "$WORK/payload.json"
    h2rate() { h2load -t1 "$@" -d "$WORK/payload.json" -H 'content-type: application/json' \
                   "https://127.0.0.1:$HTTPPORT/" | awk '/^finished in/ {print $4}'; }
    WRK_RATE=$(h2rate -c1 -m"${CONCURRENCY:-16}" -n 200000)
    echo "h2load ceiling, 1 connection x ${CONCURRENCY:-16} streams: $WRK_RATE requests/s; 16 connections x 16 streams: $(h2rate -c16 -m16 -n 400000) requests/s"
else
    WRK_RATE=$(wrk -t1 -c16 -d5s -s "$WORK/post.lua" "$SCHEME://127.0.0.1:$HTTPPORT/" | awk '/Requests\/sec/ {print $2}')
    echo "wrk ceiling: $WRK_RATE requests/s"
fi

$PSQL <<SQL
SELECT webhook_outbox.create_endpoint('$SCHEME://127.0.0.1:$HTTPPORT/hook', 'bench', rate_limit_rps => 0) \gset
INSERT INTO webhook_outbox.deliveries (endpoint_id, event_id, event_type, payload, max_attempts)
SELECT 1, 'evt-' || i, 'order.paid', '$PAYLOAD'::jsonb, 5 FROM generate_series(1, $N) i;
${DEAD_BACKLOG:+
SELECT webhook_outbox.create_endpoint('http://127.0.0.1:9/dead', 'dead', rate_limit_rps => 0) AS dead \gset
INSERT INTO webhook_outbox.deliveries (endpoint_id, event_id, event_type, payload, max_attempts, next_attempt_at)
SELECT :dead, 'old-' || i, 'order.paid', '{}', 5, now() - interval '1 hour' FROM generate_series(1, $DEAD_BACKLOG) i;
UPDATE webhook_outbox.health_metrics SET circuit_state = 'open', circuit_opened_at = now() + interval '1 day' WHERE webhook_id = :dead;
}
${EXTRA_SQL:-}
CHECKPOINT;
SQL
# The kernel writes the checkpoint's pages out in the background; flush them
# now so that the setup's writes do not share the drain's CPU.
sync
WORKER_PID=$($PSQL -Atc "SELECT pid FROM webhook_outbox.v_worker_status WHERE worker = 0")
# Private memory only: VmRSS also counts the shared buffers the worker touches.
rss() { awk '/RssAnon/ {print $2}' /proc/$WORKER_PID/status; }
# The worker's CPU time (user + system, all threads) in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' /proc/$WORKER_PID/stat; }
CPU_BEFORE=$(cpu_ticks)
echo "queued: $N; worker pid $WORKER_PID, private RSS before: $(rss) kB"

$PSQL -c "ALTER SYSTEM SET webhook_outbox.mode = 'on'" >/dev/null
START=$($PSQL -Atc "SELECT extract(epoch FROM clock_timestamp()), pg_reload_conf()" | cut -d'|' -f1)
# The clock is the database's: from the reload that switches sending on to the
# last attempt written. Polling only detects the end, rarely, so that the
# harness (a psql and a backend per poll) takes no CPU from the worker.
MAXRSS=0
while :; do
    # The worker's own counter (shared memory): polling it costs nothing.
    DONE=$($PSQL -Atc "SELECT sum(sent + failed) FROM webhook_outbox.v_worker_status")
    R=$(rss); [ "$R" -gt "$MAXRSS" ] && MAXRSS=$R
    [ "$DONE" -ge "$N" ] && break
    sleep 0.5
done
END=$($PSQL -Atc "SELECT extract(epoch FROM max(attempted_at)) FROM webhook_outbox.attempts")
SECS=$(echo "$END - $START" | bc -l)
RATE=$(echo "$N / $SECS" | bc -l)
CPU_US=$(echo "($(cpu_ticks) - $CPU_BEFORE) * 1000000 / $(getconf CLK_TCK) / $N" | bc -l)
printf 'drained %d deliveries in %.2f s: %.0f deliveries/s (ceiling %s/s); worker CPU %.1f us per delivery; worker private RSS max %s kB, after %s kB\n' \
    "$N" "$SECS" "$RATE" "$WRK_RATE" "$CPU_US" "$MAXRSS" "$(rss)"
$PSQL -c "SELECT status, count(*) FROM webhook_outbox.deliveries GROUP BY status" \
      -c "SELECT count(*) AS attempts, count(DISTINCT delivery_id) AS deliveries FROM webhook_outbox.attempts"
